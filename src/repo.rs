//! A repository: its storage, config, keys and local index, and the objects in it.
//!
//! Layout (normative in docs/design.md):
//! `config`, `keys/<recipient>`, `data/<xx>/<pack id>`, `index/<id>`, `backups/<id>`.

use crate::codec::CodecParams;
use crate::crypto::{self, RepositoryKey, Secret};
use crate::error::{Error, ErrorKind, Result};
use crate::format::config::{ChunkerConfig, Config};
use crate::format::index::IndexFile;
use crate::format::keyfile;
use crate::format::manifest::Manifest;
use crate::id::{BackupId, IndexId, PackId, RepositoryId};
use crate::index::sync::{DamagedObject, SyncReport};
use crate::index::{BackupListing, LocalIndex};
use crate::storage::Storage;
use age::x25519;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

mod damage;

pub const CONFIG_PATH: &str = "config";

pub fn pack_path(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("data/{}/{hex}", &hex[..2])
}
pub fn index_path(id: &IndexId) -> String {
    format!("index/{id}")
}
pub fn backup_path(id: &BackupId) -> String {
    format!("backups/{id}")
}
pub fn key_path(recipient: &x25519::Recipient) -> String {
    format!("keys/{recipient}")
}

/// Where the local index lives.
#[derive(Clone, Debug)]
pub enum Cache {
    /// `<dir>/<repository id>/index.sqlite`.
    Dir(PathBuf),
    /// Nothing on disk: rebuilt from the repository every time.
    InMemory,
}

impl Cache {
    /// `$QVAULT_CACHE_DIR`, else `$XDG_CACHE_HOME/qvault`, else `~/.cache/qvault`.
    pub fn default_dir() -> Cache {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        match env("QVAULT_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("qvault")))
            .or_else(|| env("HOME").map(|h| h.join(".cache").join("qvault")))
        {
            Some(dir) => Cache::Dir(dir),
            None => Cache::InMemory,
        }
    }

    fn open(&self, id: RepositoryId) -> Result<LocalIndex> {
        match self {
            Cache::Dir(dir) => {
                let path = dir.join(id.to_hex()).join("index.sqlite");
                match LocalIndex::open(&path) {
                    // restic does the same: a cache is an optimisation, and a backup must not
                    // fail because a cron job runs as a user who cannot write it.
                    Err(e) if LocalIndex::is_unwritable(&e) => {
                        tracing::warn!(
                            "this user cannot write the local index cache {}: {}; this run \
                             keeps the index in memory and reads every index file from the \
                             repository. Give --cache-dir (QVAULT_CACHE_DIR) a directory this \
                             user can write",
                            path.display(),
                            std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string())
                        );
                        LocalIndex::in_memory()
                    }
                    opened => opened,
                }
            }
            Cache::InMemory => LocalIndex::in_memory(),
        }
    }
}

/// What opens a repository: data identities (admins, restore hosts) and/or the repository
/// key (backup hosts).
#[derive(Clone, Default)]
pub struct Credentials {
    pub identities: Vec<x25519::Identity>,
    pub key: Option<(RepositoryId, RepositoryKey)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identities", &self.identities.len())
            .field("key", &self.key.as_ref().map(|(id, _)| id.short()))
            .finish()
    }
}

/// Parameters for a new repository.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// Data recipients; at least one.
    pub recipients: Vec<x25519::Recipient>,
    pub chunker: Option<ChunkerConfig>,
    pub compression: Option<CodecParams>,
    pub pack_size: Option<u64>,
}

pub struct Repository {
    storage: Storage,
    config: Config,
    key: RepositoryKey,
    data_identities: Vec<x25519::Identity>,
    data_recipients: Vec<x25519::Recipient>,
    index: Arc<LocalIndex>,
    /// Objects the sync at open skipped because they failed their checks.
    damaged: Vec<DamagedObject>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.storage.location())
            .field("id", &self.config.id)
            .finish()
    }
}

pub fn now_rfc3339() -> String {
    format_rfc3339_millis(time::OffsetDateTime::now_utc())
}

/// RFC 3339 UTC with exactly three fraction digits. Milliseconds: two backups in one second
/// must still sort, and `latest` must be right. Fixed width: the well-known RFC 3339 format
/// drops trailing zeros ("…:56.9Z"), which sorts *after* "…:56.95Z" as text.
pub fn format_rfc3339_millis(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

impl Repository {
    /// Creates a repository. Refuses a location that already holds one.
    pub async fn init(storage: Storage, options: InitOptions, cache: &Cache) -> Result<Repository> {
        Self::init_with_key(storage, options, RepositoryKey::generate(), cache).await
    }

    /// Creates a repository that shares `source`'s master secret (chunk-id key, chunker seed,
    /// config MAC key), so chunk ids and cut points match: a copy target (`qvault init
    /// --copy-from`). It still gets its own id, metadata identity and data recipients.
    pub async fn init_sharing_secret(
        storage: Storage,
        options: InitOptions,
        source: &RepositoryKey,
        cache: &Cache,
    ) -> Result<Repository> {
        let key = RepositoryKey::from_parts(*source.master(), x25519::Identity::generate());
        Self::init_with_key(storage, options, key, cache).await
    }

    async fn init_with_key(
        storage: Storage,
        options: InitOptions,
        key: RepositoryKey,
        cache: &Cache,
    ) -> Result<Repository> {
        if options.recipients.is_empty() {
            return Err(Error::invalid_input(
                "a repository needs at least one data recipient (age1…)",
            ));
        }
        if storage.exists(CONFIG_PATH).await? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} already holds a qvault repository: refusing to overwrite it",
                    storage.location()
                ),
            ));
        }
        Self::refuse_orphaned_data(&storage).await?;
        let mut id = [0u8; 32];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut id);
        let id = RepositoryId(id);
        let mut config = Config::new(
            id,
            now_rfc3339(),
            options.recipients.iter().map(|r| r.to_string()).collect(),
        );
        if let Some(chunker) = options.chunker {
            config.chunker = chunker;
        }
        if let Some(compression) = options.compression {
            config.compression = compression;
        }
        if let Some(pack_size) = options.pack_size {
            config.pack_size = pack_size;
        }
        config.chunker.params(key.chunker_seed()).validate()?;
        config.seal(&key)?;
        let key_bytes = keyfile::encode(&key, id)?;
        let mut written = Vec::new();
        let stored = async {
            for recipient in &options.recipients {
                let sealed = crypto::encrypt(std::slice::from_ref(recipient), key_bytes.expose())?;
                let path = key_path(recipient);
                storage.write(&path, Bytes::from(sealed)).await?;
                written.push(path);
            }
            // The config goes last: until it exists, the location is not a repository.
            storage.write_new(CONFIG_PATH, Bytes::from(config.encode()?)).await
        }
        .await;
        if let Err(e) = stored {
            return Err(damage::remove_partial_init(&storage, &written, e).await);
        }
        let index = Arc::new(cache.open(id)?);
        let data_recipients = options.recipients;
        Ok(Repository {
            storage,
            config,
            key,
            data_identities: Vec::new(),
            data_recipients,
            index,
            damaged: Vec::new(),
        })
    }

    /// Reads and version-gates the config of the repository at `storage`. A `config` that
    /// is missing or unreadable where backups are stored is a damaged repository
    /// ([`damage`]), not "no repository".
    pub async fn read_config(storage: &Storage) -> Result<Config> {
        let bytes = match storage.read(CONFIG_PATH).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(damage::no_config(storage).await)
            }
            Err(e) => return Err(e),
        };
        match Config::decode(&bytes, storage.location()) {
            Ok(config) => Ok(config),
            Err(e) => Err(damage::unreadable_config(storage, e).await),
        }
    }

    /// `init` never goes where a repository's objects are stored without its `config`: a new
    /// key would leave every stored backup unreadable, and its objects mixed with the old.
    pub async fn refuse_orphaned_data(storage: &Storage) -> Result<()> {
        damage::refuse_orphaned_data(storage).await
    }

    /// Opens a repository with the given credentials and syncs the local index.
    pub async fn open(
        storage: Storage,
        credentials: Credentials,
        cache: &Cache,
    ) -> Result<Repository> {
        let config = Self::read_config(&storage).await?;
        let key = match credentials.key {
            Some((id, key)) => {
                if id != config.id {
                    return Err(Error::new(
                        ErrorKind::KeyRejected,
                        format!(
                            "the repository key is for repository {}, but {} is repository {}: check --key",
                            id.short(),
                            storage.location(),
                            config.id.short()
                        ),
                    ));
                }
                key
            }
            None => Self::unlock_key(&storage, &config, &credentials.identities).await?,
        };
        config.verify(&key, storage.location())?;
        let data_recipients = config
            .data_recipients
            .iter()
            .map(|r| crypto::parse_recipient(r))
            .collect::<Result<Vec<_>>>()?;
        let index = Arc::new(cache.open(config.id)?);
        let mut repo = Repository {
            storage,
            config,
            key,
            data_identities: credentials.identities,
            data_recipients,
            index,
            damaged: Vec::new(),
        };
        repo.damaged = repo.sync().await?.damaged;
        Ok(repo)
    }

    async fn unlock_key(
        storage: &Storage,
        config: &Config,
        identities: &[x25519::Identity],
    ) -> Result<RepositoryKey> {
        if identities.is_empty() {
            return Err(Error::new(
                ErrorKind::KeyRejected,
                format!(
                    "opening {} needs a data identity (--identity / QVAULT_IDENTITY) or the repository key (--key / QVAULT_KEY)",
                    storage.location()
                ),
            ));
        }
        // A key object missing for a recipient the config lists was deleted or lost: that,
        // not "wrong identity", is what the operator must hear (if no identity opens a key).
        let mut missing = None;
        for identity in identities {
            let recipient = identity.to_public();
            let path = key_path(&recipient);
            let sealed = match storage.read(&path).await {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    if config.data_recipients.contains(&recipient.to_string()) {
                        missing.get_or_insert(path);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (id, key) = crypto::decrypt(identity, &sealed, &path)
                .and_then(|plain| keyfile::decode(&plain, &path))
                .map_err(|e| damage::damaged_key(storage.location(), &path, e))?;
            if id != config.id {
                return Err(Error::corrupt(format!(
                    "{path} in {} holds the key of another repository ({})",
                    storage.location(),
                    id.short()
                )));
            }
            return Ok(key);
        }
        if let Some(path) = missing {
            return Err(damage::missing_key(storage.location(), &path));
        }
        Err(Error::new(
            ErrorKind::KeyRejected,
            format!(
                "the identity given is not a recipient of the repository at {} (its recipients: {}): \
                 check --identity / QVAULT_IDENTITY",
                storage.location(),
                config.data_recipients.join(", ")
            ),
        ))
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn key(&self) -> &RepositoryKey {
        &self.key
    }
    pub fn index(&self) -> &LocalIndex {
        &self.index
    }
    /// Index files and manifests the sync at open skipped because they failed their checks
    /// (each was warned about once): `verify` reports them, `repair` moves them away.
    pub fn damaged_objects(&self) -> &[DamagedObject] {
        &self.damaged
    }

    pub(crate) fn index_arc(&self) -> Arc<LocalIndex> {
        Arc::clone(&self.index)
    }
    pub fn data_recipients(&self) -> &[x25519::Recipient] {
        &self.data_recipients
    }

    /// The data identities, or the error that says a data identity is needed for `what`.
    pub fn data_identities(&self, what: &str) -> Result<&[x25519::Identity]> {
        if self.data_identities.is_empty() {
            return Err(Error::new(
                ErrorKind::NeedsDataIdentity,
                format!(
                    "{what} needs a data identity (--identity / QVAULT_IDENTITY): the repository key \
                     alone can back up and list, but not read backup data"
                ),
            ));
        }
        Ok(&self.data_identities)
    }

    /// Brings the local index up to date with the repository's index files and backups,
    /// skipping (with a warning) objects that fail their checks; see [`crate::index::sync`].
    pub async fn sync(&self) -> Result<SyncReport> {
        crate::index::sync::sync(self).await
    }

    /// Empties the local index and fills it again from the repository.
    pub async fn rebuild_index(&self) -> Result<SyncReport> {
        crate::index::sync::rebuild(self).await
    }

    /// The objects named by hex id under `dir` (at any depth), with their sizes; other names
    /// are ignored with a warning.
    pub async fn list_objects(&self, dir: &str) -> Result<HashMap<[u8; 32], u64>> {
        let mut out = HashMap::new();
        for object in self.storage.list(dir).await? {
            let name = object.path.rsplit('/').next().unwrap_or_default();
            let mut id = [0u8; 32];
            if hex::decode_to_slice(name, &mut id).is_ok() {
                out.insert(id, object.size);
            } else {
                tracing::warn!(path = %object.path, "ignoring an object that is not named by an id");
            }
        }
        Ok(out)
    }

    async fn read_object(&self, path: &str, what: &str) -> Result<Bytes> {
        self.storage.read(path).await.map_err(|e| self.missing(e, what))
    }

    /// A missing object says what it was and what to do about it.
    fn missing(&self, e: Error, what: &str) -> Error {
        if e.kind() == ErrorKind::NotFound {
            Error::not_found(format!(
                "{what} is missing from {}: run `qvault index rebuild`, and `qvault verify` if it persists",
                self.storage.location()
            ))
        } else {
            e
        }
    }

    /// Reads, checks the id of, and decrypts a metadata object.
    async fn read_metadata(&self, path: &str, id: &[u8; 32], what: &str) -> Result<Vec<u8>> {
        let sealed = self.read_object(path, what).await?;
        if blake3::hash(&sealed).as_bytes() != id {
            return Err(Error::corrupt(format!(
                "{what} in {} does not match its id: the object is damaged",
                self.storage.location()
            )));
        }
        self.key.open_metadata(&sealed, what)
    }

    pub async fn read_index_file(&self, id: IndexId) -> Result<IndexFile> {
        let what = format!("index file {id}");
        let plain = self.read_metadata(&index_path(&id), &id.0, &what).await?;
        IndexFile::decode(&plain, &what)
    }

    pub async fn read_manifest(&self, id: BackupId) -> Result<Manifest> {
        let what = format!("backup {id}");
        let plain = self.read_metadata(&backup_path(&id), &id.0, &what).await?;
        Manifest::decode(&plain, &what)
    }

    /// Reads a whole pack object, checking it against its id.
    pub async fn read_pack(&self, id: PackId) -> Result<Bytes> {
        let what = format!("pack {id}");
        let bytes = self.read_object(&pack_path(&id), &what).await?;
        if blake3::hash(&bytes).as_bytes() != &id.0 {
            return Err(Error::corrupt(format!(
                "pack {id} in {} does not match its id: the object is damaged",
                self.storage.location()
            )));
        }
        Ok(bytes)
    }

    /// Reads `range` of a pack object. No id check is possible on a part: what it holds is
    /// authenticated by age and by the chunk ids when decoded.
    pub async fn read_pack_range(&self, id: PackId, range: std::ops::Range<u64>) -> Result<Bytes> {
        let what = format!("pack {id}");
        self.storage.read_range(&pack_path(&id), range).await.map_err(|e| self.missing(e, &what))
    }

    pub async fn write_pack(&self, id: PackId, bytes: Bytes) -> Result<()> {
        self.storage.write(&pack_path(&id), bytes).await
    }

    /// Seals and stores an index file, then records it in the local index. Returns its
    /// id and stored size.
    pub async fn write_index_file(&self, file: &IndexFile) -> Result<(IndexId, u64)> {
        let sealed = self.key.seal_metadata(&file.encode())?;
        let id = IndexId(*blake3::hash(&sealed).as_bytes());
        let size = sealed.len() as u64;
        self.storage.write(&index_path(&id), Bytes::from(sealed)).await?;
        self.index.add_index_file(id, file)?;
        Ok((id, size))
    }

    /// Seals and stores a manifest (the last write of a backup).
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<BackupId> {
        let sealed = self.key.seal_metadata(&manifest.encode()?)?;
        let id = BackupId(*blake3::hash(&sealed).as_bytes());
        self.storage.write(&backup_path(&id), Bytes::from(sealed)).await?;
        self.index.add_backup(id, manifest)?;
        Ok(id)
    }

    /// Forgets a backup: removes its manifest, then its row in the local index. Chunks stay
    /// (other backups may share them) until prune.
    pub async fn delete_manifest(&self, id: BackupId) -> Result<()> {
        self.storage.delete(&backup_path(&id)).await?;
        self.index.remove_backup(id)
    }

    pub fn backups(&self) -> Result<Vec<BackupListing>> {
        self.index.backups()
    }

    /// Resolves `latest`, a full id or a unique prefix of at least 4 hex digits.
    pub fn resolve_backup(&self, spec: &str) -> Result<BackupId> {
        let backups = self.index.backups()?;
        if spec == "latest" {
            return backups.last().map(|b| b.id).ok_or_else(|| {
                Error::not_found(format!("{} holds no backups yet", self.storage.location()))
            });
        }
        let spec_lower = spec.to_ascii_lowercase();
        if spec.len() < 4 || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid_input(format!(
                "{spec:?} is not a backup id: give `latest`, or 4 or more hex digits of an id from `qvault backups`"
            )));
        }
        let matches: Vec<_> =
            backups.iter().filter(|b| b.id.to_hex().starts_with(&spec_lower)).collect();
        match matches.as_slice() {
            [one] => Ok(one.id),
            [] => Err(Error::not_found(format!(
                "no backup {spec} in {}: list them with `qvault backups`",
                self.storage.location()
            ))),
            many => Err(Error::invalid_input(format!(
                "backup id prefix {spec} matches {} backups: give more digits",
                many.len()
            ))),
        }
    }

    /// The repository key file, for `qvault key export`.
    pub fn export_key(&self) -> Result<Secret<Vec<u8>>> {
        keyfile::encode(&self.key, self.config.id)
    }

    /// Adds a data recipient: stores the repository key for it and re-seals the config.
    /// New packs are readable by it; existing packs stay readable only by the old ones.
    pub async fn add_recipient(&mut self, recipient: x25519::Recipient) -> Result<()> {
        let text = recipient.to_string();
        if self.config.data_recipients.contains(&text) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{text} is already a recipient of {}", self.storage.location()),
            ));
        }
        let key_bytes = self.export_key()?;
        let sealed = crypto::encrypt(std::slice::from_ref(&recipient), key_bytes.expose())?;
        self.storage.write(&key_path(&recipient), Bytes::from(sealed)).await?;
        let mut config = self.config.clone();
        config.data_recipients.push(text);
        config.seal(&self.key)?;
        self.storage.write(CONFIG_PATH, Bytes::from(config.encode()?)).await?;
        self.config = config;
        self.data_recipients.push(recipient);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_times_have_a_fixed_width_so_they_sort_as_text() {
        let at = |ms: u16| {
            time::macros::datetime!(2026-11-24 21:43:56 UTC).replace_millisecond(ms).unwrap()
        };
        assert_eq!(format_rfc3339_millis(at(900)), "2026-11-24T21:43:56.900Z");
        assert_eq!(format_rfc3339_millis(at(0)), "2026-11-24T21:43:56.000Z");
        assert_eq!(format_rfc3339_millis(at(95)), "2026-11-24T21:43:56.095Z");
        assert!(format_rfc3339_millis(at(900)) > format_rfc3339_millis(at(95)));
        let parsed = time::OffsetDateTime::parse(
            &format_rfc3339_millis(at(7)),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(parsed, at(7));
    }
}
