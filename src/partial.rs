//! A file or directory written beside its target under a hidden name, renamed into place
//! only when complete: nothing that looks complete is ever half-written.
//!
//! Guarantees: the name is `.NAME.qvault-partial-XXXXXXXX` in the target's directory (so the
//! rename is atomic); unless [`Partial::placed`] is called, it is removed when the `Partial`
//! is dropped (a failed restore, a command future dropped by a signal) and, should the
//! owner sit in a thread that never runs again, by [`crate::held::release_all`] when a
//! signal stops the process.

use std::path::{Path, PathBuf};

#[derive(Debug)]
pub(crate) struct Partial {
    path: PathBuf,
    /// `None` once placed.
    held: Option<crate::held::Token>,
}

impl Partial {
    /// A fresh hidden name beside `target` (nothing is created yet).
    pub(crate) fn beside(target: &Path) -> Partial {
        let name = target
            .file_name()
            .map_or_else(|| "restore".into(), |n| n.to_string_lossy().to_string());
        let nonce: u32 = rand::random();
        let path = target.with_file_name(format!(".{name}.qvault-partial-{nonce:08x}"));
        let undo = path.clone();
        let held = crate::held::hold(
            format!("partial output {}", path.display()),
            Box::new(move || {
                Box::pin(async move {
                    remove(&undo);
                    Ok(())
                })
            }),
        );
        Partial { path, held: Some(held) }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// It was renamed into place: nothing to remove any more.
    pub(crate) fn placed(&mut self) {
        if let Some(held) = self.held.take() {
            crate::held::let_go(held);
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            remove(&self.path);
            crate::held::let_go(held);
        }
    }
}

/// Removes a partial file or directory tree (symlinks inside are removed, not followed).
fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = crate::dirtar::remove_tree(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}
