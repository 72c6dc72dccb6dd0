//! Every `--help` page, pinned: each verb shows its own options first and the global ones
//! under their own heading, and a change to any page is a visible diff in review.
//!
//! The pages live in tests/fixtures/help/ (one file per command path, `qvault-backup.txt`);
//! after an intended change, regenerate them with `QVAULT_BLESS=1 cargo test --test it help::`.

use std::path::PathBuf;
use std::process::Command;

fn help_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/help")
}

/// `qvault <path…> --help`, with no environment that clap would show as `[env: X=value]`.
fn help(path: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_qvault"))
        .args(path)
        .arg("--help")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(out.status.success(), "{path:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommand names a help page lists under `Commands:`.
fn subcommands(page: &str) -> Vec<String> {
    page.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_help_page_matches_its_pinned_text_and_lists_global_options_last() {
    let bless = std::env::var_os("QVAULT_BLESS").is_some();
    let mut pending = vec![Vec::<String>::new()];
    let mut seen = Vec::new();
    let mut differ = Vec::new();
    while let Some(path) = pending.pop() {
        let page = help(&path);
        if !path.is_empty() {
            // The verb's own options come before the global ones.
            let own = page.find("Options:");
            let global = page.find("Global options:").expect("a Global options heading");
            assert!(own.is_none_or(|o| o < global), "{path:?}:\n{page}");
        }
        for sub in subcommands(&page) {
            let mut next = path.clone();
            next.push(sub);
            pending.push(next);
        }
        let name = format!(
            "{}.txt",
            ["qvault".to_string()].iter().chain(&path).cloned().collect::<Vec<_>>().join("-")
        );
        let file = help_dir().join(&name);
        seen.push(name.clone());
        if bless {
            std::fs::create_dir_all(help_dir()).unwrap();
            std::fs::write(&file, &page).unwrap();
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(page.as_str()) {
            differ.push(name);
        }
    }
    assert!(
        differ.is_empty(),
        "help pages differ from tests/fixtures/help (or are missing): {differ:?}; if the change \
         is intended, run QVAULT_BLESS=1 cargo test --test it help::"
    );
    let mut stale: Vec<String> = std::fs::read_dir(help_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !seen.contains(n))
        .collect();
    stale.sort();
    assert!(stale.is_empty(), "help pages of commands that no longer exist: {stale:?}");
}

#[test]
fn completions_and_man_pages_come_from_the_same_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_qvault"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("keep-last") && script.contains("from-command"), "{shell}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qvault"))
        .args(["man", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(dir.path().join("qvault-backup.1")).unwrap();
    assert!(page.contains("from\\-command"), "{page}");
    assert!(dir.path().join("qvault.1").exists());
    let out =
        Command::new(env!("CARGO_BIN_EXE_qvault")).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}
