//! What every verb needs: storage, credentials, the repository, output helpers.

use super::GlobalArgs;
use anyhow::{Context, Result};
use qvault::crypto::{self, Secret};
use qvault::format::keyfile;
use qvault::repo::{Cache, Credentials, Repository};
use qvault::storage::{Storage, StorageOptions};
use qvault::trust;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub fn repo_location(global: &GlobalArgs) -> Result<&str> {
    global.repo.as_deref().ok_or_else(|| {
        qvault::Error::invalid_input("no repository given: use --repo or set QVAULT_REPOSITORY")
            .into()
    })
}

pub fn storage(global: &GlobalArgs) -> Result<Storage> {
    let options = StorageOptions {
        s3_endpoint: global.s3_endpoint.clone(),
        s3_region: global.s3_region.clone(),
        access_key_id: global.s3_access_key_id.clone(),
        secret_access_key: global.s3_secret_access_key.clone(),
        azure_endpoint: global.azure_endpoint.clone(),
        azure_account: global.azure_account.clone(),
        azure_key: global.azure_key.clone(),
        gcs_credential_file: global.gcs_credential_file.as_ref().map(|p| p.display().to_string()),
        webdav_password: webdav_password(global)?,
        ..StorageOptions::default()
    };
    Ok(Storage::open(repo_location(global)?, &options)?)
}

/// The WebDAV password: the setting (environment or config file), else the first line of
/// the password file. Registered with the log scrubber before anything can print it.
fn webdav_password(global: &GlobalArgs) -> Result<Option<String>> {
    if let Some(p) = global.webdav_password.clone().filter(|p| !p.is_empty()) {
        super::logging::register_secret(&p);
        return Ok(Some(p));
    }
    let Some(path) = &global.webdav_password_file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| {
        qvault::Error::io(format!("reading the WebDAV password file {}", path.display()), e)
    })?;
    let password = text.lines().next().unwrap_or_default().trim_end_matches('\r').to_string();
    if password.is_empty() {
        return Err(qvault::Error::invalid_input(format!(
            "the WebDAV password file {} is empty: its first line is the password",
            path.display()
        ))
        .into());
    }
    super::logging::register_secret(&password);
    Ok(Some(password))
}

pub fn cache(global: &GlobalArgs) -> Cache {
    if global.no_cache {
        Cache::InMemory
    } else if let Some(dir) = &global.cache_dir {
        Cache::Dir(dir.clone())
    } else {
        Cache::default_dir()
    }
}

/// The passphrase from QVAULT_PASSPHRASE, else a prompt on the terminal.
pub fn passphrase(prompt: &str) -> Result<Secret<String>> {
    if let Ok(p) = std::env::var("QVAULT_PASSPHRASE") {
        return Ok(Secret::new(p));
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        return Err(qvault::Error::invalid_input(
            "a passphrase is needed: set QVAULT_PASSPHRASE (no terminal to prompt on)",
        )
        .into());
    }
    let p = rpassword::prompt_password(prompt).context("reading the passphrase")?;
    super::logging::register_secret(&p);
    Ok(Secret::new(p))
}

/// Reads a key or identity file, unwrapping it with a passphrase when it is protected.
fn read_protected(path: &Path, what: &str, flag: &str) -> Result<Secret<Vec<u8>>> {
    let bytes = read_named_file(path, what, flag)?;
    if crypto::is_age_file(&bytes) {
        let pass = passphrase(&format!("Passphrase for {}: ", path.display()))?;
        let label = format!("{what} {}", path.display());
        let plain = crypto::passphrase_unwrap(&bytes, &pass, &label)?;
        super::logging::register_key_material(&plain);
        return Ok(Secret::new(plain));
    }
    super::logging::register_key_material(&bytes);
    Ok(Secret::new(bytes))
}

/// Reads a file the operator named: a missing one is their input to fix (exit 2), not an
/// I/O failure, and the error says which flag or variable named it.
pub fn read_named_file(path: &Path, what: &str, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            qvault::Error::invalid_input(format!(
                "{what} {} does not exist: fix {flag}",
                path.display()
            ))
        } else {
            qvault::Error::io(format!("reading {what} {}", path.display()), e)
        }
        .into()
    })
}

/// A key file that is not even JSON was given by mistake (an identity, a key id, anything):
/// that is the operator's input (exit 2), not damage (exit 5), which a key file that is JSON
/// but fails its checks still is.
fn not_a_key_file(bytes: &[u8], path: &Path) -> Option<qvault::Error> {
    if serde_json::from_slice::<serde_json::Value>(bytes).is_ok() {
        return None;
    }
    let looks_like_identity = String::from_utf8_lossy(bytes).contains("AGE-SECRET-KEY-");
    Some(qvault::Error::invalid_input(format!(
        "key file {} is not a qvault repository key file{}",
        path.display(),
        if looks_like_identity {
            ": it holds an age identity, which goes to --identity (QVAULT_IDENTITY)"
        } else {
            ": give --key (QVAULT_KEY) the file `qvault key export` wrote"
        }
    )))
}

/// `--expect-key` must be a repository key fingerprint: anything else would be compared,
/// differ, and read as "the repository's key was replaced".
fn expected_key(global: &GlobalArgs) -> Result<Option<&str>> {
    let Some(expected) = global.expect_key.as_deref() else { return Ok(None) };
    if age::x25519::Recipient::from_str(expected.trim()).is_err() {
        return Err(qvault::Error::invalid_input(format!(
            "--expect-key (QVAULT_EXPECT_KEY) {expected:?} is not a repository key fingerprint: \
             give the age1… that `qvault init` or `qvault key list` prints"
        ))
        .into());
    }
    Ok(Some(expected))
}

pub fn credentials(global: &GlobalArgs) -> Result<Credentials> {
    let mut credentials = Credentials::default();
    if let Some(path) = &global.identity {
        let text = read_protected(path, "identity file", "--identity or QVAULT_IDENTITY")?;
        let text = String::from_utf8_lossy(text.expose()).to_string();
        credentials.identities =
            crypto::parse_identities(&text, &format!("identity file {}", path.display()))?;
    }
    if let Some(path) = &global.key {
        let bytes = read_protected(path, "key file", "--key or QVAULT_KEY")?;
        if let Some(e) = not_a_key_file(bytes.expose(), path) {
            return Err(e.into());
        }
        credentials.key =
            Some(keyfile::decode(bytes.expose(), &format!("key file {}", path.display()))?);
    }
    Ok(credentials)
}

pub async fn open(global: &GlobalArgs) -> Result<Repository> {
    let expected = expected_key(global)?;
    let storage = storage(global)?;
    let credentials = credentials(global)?;
    // A key file *is* the repository key; an identity only unwraps whatever `keys/` holds,
    // which anyone with write access to the storage can replace (see qvault::trust).
    let identity_only = credentials.key.is_none();
    let repo = Repository::open(storage, credentials, &cache(global)).await?;
    super::log::opened(&repo);
    if identity_only {
        let location = repo.storage().location().to_string();
        let fingerprint = repo.key().metadata_recipient().to_string();
        match expected {
            Some(expected) => trust::check_expected(&location, expected, &fingerprint)?,
            None => remember(global, &repo)?,
        }
    }
    Ok(repo)
}

/// Trust on first use: records the repository at this location, or refuses one that differs
/// from what was recorded. Skipped (with a note in the log) when there is no config directory.
pub fn remember(global: &GlobalArgs, repo: &Repository) -> Result<()> {
    let Some(dir) = config_dir() else {
        tracing::info!("no config directory: not remembering the repository key");
        return Ok(());
    };
    let known = trust::KnownRepositories::at(dir.join("known-repositories.json"));
    let fingerprint = repo.key().metadata_recipient().to_string();
    let verdict = match known.check(repo.storage().location(), &repo.config().id, &fingerprint) {
        Ok(verdict) => verdict,
        // A read-only home (a container) must not stop backups; say what is not checked.
        Err(e) if e.kind() == qvault::ErrorKind::Io => {
            eprintln!(
                "qvault: warning: cannot remember the repository key ({e}); pass --expect-key \
                 {fingerprint} to have it checked"
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if verdict == trust::Verdict::FirstUse && chatty(global) {
        eprintln!(
            "remembered repository key {fingerprint} for {} in {}",
            repo.storage().location(),
            known.path().display()
        );
    }
    Ok(())
}

/// `$XDG_CONFIG_HOME/qvault`, else `~/.config/qvault`: identities, config file, known
/// repositories.
pub fn config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("qvault"))
}

/// Writes a secret file that only its owner can read, refusing to overwrite.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| qvault::Error::io(format!("creating {}", dir.display()), e))?;
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            qvault::Error::new(
                qvault::ErrorKind::AlreadyExists,
                format!("{} already exists: refusing to overwrite a key file", path.display()),
            )
        } else {
            qvault::Error::io(format!("creating {}", path.display()), e)
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| qvault::Error::io(format!("writing {}", path.display()), e))?;
    Ok(())
}

/// Human-readable bytes (binary units).
pub use qvault::report::human_bytes;

/// Set once a command printed its JSON result, so that a failure after it does not add a
/// second document to stdout.
static PRINTED_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    PRINTED_JSON.store(true, std::sync::atomic::Ordering::Relaxed);
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Whether [`print_json`] printed anything in this process.
pub fn printed_json() -> bool {
    PRINTED_JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether informational lines go to stderr.
pub fn chatty(global: &GlobalArgs) -> bool {
    !global.quiet && !global.json
}
