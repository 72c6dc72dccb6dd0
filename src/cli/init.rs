//! `qvault init`: create a repository, and a data identity when none is given.

use super::common::{self, write_secret_file};
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::codec::CodecParams;
use qvault::crypto;
use qvault::repo::{InitOptions, Repository};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Data recipient (age public key, age1…); repeatable. Without one, an identity is
    /// generated and written to --identity (or the default path).
    #[arg(long = "recipient")]
    pub recipients: Vec<String>,
    /// Protect the generated identity file with a passphrase (QVAULT_PASSPHRASE or prompt).
    #[arg(long)]
    pub passphrase: bool,
    /// Target pack size in bytes.
    #[arg(long)]
    pub pack_size: Option<u64>,
    /// zstd level for new blobs.
    #[arg(long)]
    pub compression_level: Option<i32>,
    /// Make a copy target of this repository (a path or s3://…): same chunk-id key,
    /// chunker seed and chunker parameters, so `qvault copy` moves only missing chunks. The
    /// new repository has its own id, metadata identity and data recipients.
    #[arg(long, value_name = "SOURCE")]
    pub copy_from: Option<String>,
    /// The source's repository key file (for --copy-from).
    #[arg(long, value_name = "FILE", requires = "copy_from")]
    pub from_key: Option<PathBuf>,
    /// A data identity of the source (for --copy-from, instead of --from-key).
    #[arg(long, value_name = "FILE", requires = "copy_from")]
    pub from_identity: Option<PathBuf>,
}

/// With --copy-from: the source repository, opened with the --from-* credentials.
async fn copy_source(global: &GlobalArgs, args: &InitArgs) -> Result<Option<Repository>> {
    let Some(source) = &args.copy_from else { return Ok(None) };
    if args.from_key.is_none() && args.from_identity.is_none() {
        return Err(qvault::Error::invalid_input(
            "--copy-from needs the source's repository key (--from-key) or a data identity of \
             it (--from-identity)",
        )
        .into());
    }
    let mut g = global.clone();
    g.repo = Some(source.clone());
    g.key = args.from_key.clone();
    g.identity = args.from_identity.clone();
    Ok(Some(common::open(&g).await?))
}

fn default_identity_path(recipient: &str) -> PathBuf {
    common::config_dir()
        .unwrap_or_else(|| PathBuf::from("qvault"))
        .join(format!("identity-{}.txt", &recipient[4..16]))
}

/// A local repository goes into a new or empty directory: a file there would fail later
/// as a storage error, and a directory of other data would get qvault's objects mixed in.
/// `lost+found` (a fresh volume's) and qvault's own temporary directory do not count.
/// True when it holds `data`, `index` or `backups` but no `config`: a repository that lost
/// its config, which [`Repository::refuse_orphaned_data`] refuses as such.
fn refuse_unfit_directory(root: &Path) -> Result<bool> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(_) if root.exists() && !root.is_dir() => {
            return Err(qvault::Error::invalid_input(format!(
                "{} is a file, not a directory: give --repo a new or empty directory",
                root.display()
            ))
            .into())
        }
        Err(e) => return Err(qvault::Error::io(format!("reading {}", root.display()), e).into()),
    };
    let names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    // A repository (refused next, as one) or what a failed init left.
    if names.iter().any(|n| n == "config") {
        return Ok(false);
    }
    if names.iter().any(|n| n == "data" || n == "index" || n == "backups") {
        return Ok(true);
    }
    if let Some(name) = names.iter().find(|n| *n != "lost+found" && *n != ".qvault-tmp") {
        return Err(qvault::Error::new(
            qvault::ErrorKind::Refused,
            format!(
                "{} is not empty ({} and maybe more) and holds no qvault repository: init into a \
                 new or empty directory, or move its contents away",
                root.display(),
                name.to_string_lossy()
            ),
        )
        .into());
    }
    Ok(false)
}

/// init writes a new identity to --identity (or QVAULT_IDENTITY): when that file is already
/// there, the operator most likely meant to reuse it, which is what --recipient is for.
fn existing_identity_hint(error: anyhow::Error, path: &Path) -> anyhow::Error {
    let exists = error
        .downcast_ref::<qvault::Error>()
        .is_some_and(|e| e.kind() == qvault::ErrorKind::AlreadyExists);
    if !exists {
        return error;
    }
    let public = std::fs::read_to_string(path).ok().and_then(|text| {
        let ids = crypto::parse_identities(&text, "identity file").ok()?;
        Some(ids.first()?.to_public().to_string())
    });
    let recipient = public.unwrap_or_else(|| "age1…".to_string());
    qvault::Error::new(
        qvault::ErrorKind::AlreadyExists,
        format!(
            "the identity file {} (from --identity or QVAULT_IDENTITY) already exists, and init \
             writes a new identity there, refusing to overwrite a key file: to encrypt the new \
             repository to that identity, give its public key with --recipient {recipient}; for \
             a new identity, unset QVAULT_IDENTITY or give --identity a new path",
            path.display()
        ),
    )
    .into()
}

pub async fn run(global: &GlobalArgs, args: &InitArgs) -> Result<()> {
    // Short, and half done it is worse than not started (a key without a config, an
    // identity file without a repository: the rerun is refused), so a signal lets it finish
    // (a second one still stops it).
    let _whole = qvault::held::critical();
    let storage = common::storage(global)?;
    // Before anything opens the directory (and leaves its temporary directory there).
    let may_hold_data = match storage.local_root() {
        Some(root) => refuse_unfit_directory(root)?,
        None => true,
    };
    // A repository that lost its `config` is refused as such, not as any directory.
    if may_hold_data {
        Repository::refuse_orphaned_data(&storage).await?;
    }
    // Refuse early, before generating an identity nobody needs.
    if Repository::read_config(&storage).await.is_ok() {
        return Err(qvault::Error::new(
            qvault::ErrorKind::AlreadyExists,
            format!(
                "{} already holds a qvault repository: refusing to overwrite it",
                storage.location()
            ),
        )
        .into());
    }
    let source = copy_source(global, args).await?;
    let mut recipients = args
        .recipients
        .iter()
        .map(|r| crypto::parse_recipient(r))
        .collect::<qvault::Result<Vec<_>>>()?;
    let mut created_identity = None;
    if recipients.is_empty() {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let path = global
            .identity
            .clone()
            .unwrap_or_else(|| default_identity_path(&recipient.to_string()));
        let text = crypto::identity_file_text(&identity, &qvault::repo::now_rfc3339());
        let bytes = if args.passphrase {
            let pass = common::passphrase("Passphrase for the new identity file: ")?;
            crypto::passphrase_wrap(text.as_bytes(), &pass)?
        } else {
            text.into_bytes()
        };
        // The identity is saved before the repository exists, so no repository can be
        // created whose only key was lost.
        write_secret_file(&path, &bytes).map_err(|e| existing_identity_hint(e, &path))?;
        created_identity = Some(path);
        recipients.push(recipient);
    }
    let options = InitOptions {
        recipients,
        compression: args
            .compression_level
            .map(|level| CodecParams { level, ..CodecParams::default() }),
        pack_size: args.pack_size,
        ..InitOptions::default()
    };
    let cache = common::cache(global);
    let made = match &source {
        Some(source) => qvault::copy::init_target(storage, source, options, &cache).await,
        None => Repository::init(storage, options, &cache).await,
    };
    let repo = match made {
        Ok(repo) => repo,
        Err(e) => {
            if let Some(path) = &created_identity {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    let config = repo.config();
    let fingerprint = repo.key().metadata_recipient().to_string();
    // The creator trusts what it just made: later opens from this machine compare with it.
    common::remember(global, &repo)?;
    if global.json {
        common::print_json(&serde_json::json!({
            "id": config.id,
            "location": repo.storage().location(),
            "recipients": config.data_recipients,
            "repository_key": fingerprint,
            "identity_file": created_identity,
        }))?;
    } else {
        println!("created repository {} at {}", config.id, repo.storage().location());
        for r in &config.data_recipients {
            println!("data recipient: {r}");
        }
        println!("repository key (for --expect-key): {fingerprint}");
    }
    if let Some(path) = created_identity {
        eprintln!(
            "\nWrote the data identity to {}.\n\
             WITHOUT THIS FILE THE BACKUPS IN THIS REPOSITORY CANNOT BE RESTORED.\n\
             Copy it somewhere safe, offline, now. Use it with --identity or QVAULT_IDENTITY.",
            path.display()
        );
    }
    Ok(())
}
