//! The local index: a SQLite cache of the repository's index files and backup list.
//!
//! Never the source of truth. It is synced from the repository on each command and can be
//! deleted at any time (`qvault index rebuild` refills it); a schema this build does not
//! know is dropped and rebuilt, not migrated.

use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::manifest::Manifest;
use crate::format::pack::PackEntry;
use crate::id::{BackupId, ChunkId, IndexId, PackId};
use rusqlite::{params, Connection};

mod bulk;
pub mod sync;
pub use bulk::BulkLoad;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// SQLite's page cache per connection, in KiB (a negative `cache_size`). Pinned, not left
/// to the build's default: the cache is the local index's only memory that could follow the
/// table (53 MiB at 215,000 chunks, ~2.5 GB at 10 M), and a dedup lookup touches a handful
/// of B-tree pages, so 2 MiB holds the upper levels and the rest is the OS page cache's job.
/// Measured with heaptrack (docs/benchmarks.md "Scale"): SQLite's heap peak 1.5 MiB at
/// 1 GiB, 2.2 MiB at 4 GiB — the cache filling up to this bound, not growing past it.
pub const CACHE_KIB: i64 = 2048;

/// Bump when the tables change: an older cache is then rebuilt from the repository.
/// 3: a pack may be listed by several index files (`listings`), a chunk may be in several
/// packs, and packs known to be missing or damaged are not deduplicated
/// against (`bad_packs`).
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS index_files (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packs (id BLOB PRIMARY KEY, plaintext_len INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS listings (
    index_file BLOB NOT NULL, pack BLOB NOT NULL, PRIMARY KEY (index_file, pack)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS listings_by_pack ON listings(pack);
CREATE TABLE IF NOT EXISTS chunks (
    id BLOB NOT NULL, pack BLOB NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, raw_length INTEGER NOT NULL, PRIMARY KEY (id, pack)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack);
CREATE TABLE IF NOT EXISTS bad_packs (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS backups (
    id BLOB PRIMARY KEY, time TEXT NOT NULL, name TEXT, tags TEXT NOT NULL,
    bytes INTEGER NOT NULL, summary TEXT NOT NULL) WITHOUT ROWID;
";

/// Where a chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: PackId,
    pub entry: PackEntry,
    /// Plaintext length of the pack's whole data section (the end of its last blob): with
    /// it a reader knows where the age stream ends without fetching the pack's header.
    pub pack_plaintext_len: u64,
}

/// A backup as listed (no chunk lists).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BackupListing {
    pub id: BackupId,
    pub time: String,
    pub name: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub bytes: u64,
}

pub struct LocalIndex {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for LocalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIndex").field("path", &self.path).finish()
    }
}

fn db_err(path: &Option<PathBuf>, e: rusqlite::Error) -> Error {
    let place = path.as_ref().map_or("in memory".to_string(), |p| p.display().to_string());
    Error::new(
        ErrorKind::Io,
        format!("local index ({place}) failed: {e}; it is only a cache: delete it or run `qvault index rebuild`"),
    )
    .with_source(e)
}

fn blob32(bytes: Vec<u8>, what: &str) -> rusqlite::Result<[u8; 32]> {
    bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            format!("{what} is not 32 bytes").into(),
        )
    })
}

impl LocalIndex {
    /// Opens (creating if needed) the cache file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating cache directory {}", dir.display()), e))?;
        }
        let conn = Connection::open(path).map_err(|e| db_err(&Some(path.to_path_buf()), e))?;
        Self::init(conn, Some(path.to_path_buf()))
    }

    /// Whether `e`, from [`LocalIndex::open`], says this user cannot write the cache at all
    /// (a directory or file it does not own, a read-only filesystem) rather than that the
    /// file is damaged: the caller can then do without it.
    pub fn is_unwritable(e: &Error) -> bool {
        use rusqlite::ErrorCode::{CannotOpen, PermissionDenied, ReadOnly};
        let source = std::error::Error::source(e);
        if let Some(io) = source.and_then(|s| s.downcast_ref::<std::io::Error>()) {
            return matches!(
                io.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            );
        }
        matches!(
            source.and_then(|s| s.downcast_ref::<rusqlite::Error>()),
            Some(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, ReadOnly | CannotOpen | PermissionDenied)
        )
    }

    /// The cache file, `None` when the index lives in memory only (`--no-cache`, or a cache
    /// this user cannot write).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A cache that lives only as long as the process (tests, one-off commands).
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(|e| db_err(&None, e))?;
        Self::init(conn, None)
    }

    fn init(conn: Connection, path: Option<PathBuf>) -> Result<Self> {
        let setup = || -> rusqlite::Result<()> {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
            // No memory-mapped reads: mapped pages of a large index would count as this
            // process's resident memory, growing with the repository.
            conn.pragma_update(None, "mmap_size", 0)?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version != SCHEMA_VERSION {
                conn.execute_batch(
                    "DROP TABLE IF EXISTS chunks; DROP TABLE IF EXISTS packs;
                     DROP TABLE IF EXISTS listings; DROP TABLE IF EXISTS bad_packs;
                     DROP TABLE IF EXISTS index_files; DROP TABLE IF EXISTS backups;",
                )?;
            }
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(())
        };
        setup().map_err(|e| db_err(&path, e))?;
        Ok(LocalIndex { conn: Mutex::new(conn), path })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| {
            Error::new(ErrorKind::Io, "local index lock poisoned by an earlier failure")
        })
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        db_err(&self.path, e)
    }

    /// Empties the cache (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        self.conn()?
            .execute_batch(
                "DELETE FROM chunks; DELETE FROM packs; DELETE FROM listings;
                 DELETE FROM index_files; DELETE FROM backups;",
            )
            .map_err(|e| self.err(e))
    }

    pub fn index_files(&self) -> Result<HashSet<IndexId>> {
        self.ids("SELECT id FROM index_files", "index file id", IndexId)
    }

    /// Packs some index file lists.
    pub fn pack_ids(&self) -> Result<HashSet<PackId>> {
        self.ids("SELECT id FROM packs", "pack id", PackId)
    }

    /// The 32-byte ids `sql` selects, as `T`.
    fn ids<T: std::hash::Hash + Eq>(
        &self,
        sql: &str,
        what: &str,
        make: fn([u8; 32]) -> T,
    ) -> Result<HashSet<T>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows =
            stmt.query_map([], |r| Ok(make(blob32(r.get(0)?, what)?))).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Records an index file and every chunk it lists, in one transaction.
    pub fn add_index_file(&self, id: IndexId, file: &IndexFile) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        Rows::prepare(&tx, &Rows::LIVE)
            .and_then(|mut rows| rows.record(id, file))
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Starts recording many index files at once (a sync): see [`BulkLoad`].
    pub fn bulk_load(&self) -> Result<BulkLoad<'_>> {
        BulkLoad::start(self)
    }

    /// Forgets an index file that is gone from the repository, and the packs (with their
    /// chunks) that no other index file lists.
    pub fn remove_index_file(&self, id: IndexId) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS orphaned (id BLOB PRIMARY KEY) WITHOUT ROWID;
             DELETE FROM temp.orphaned;",
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO temp.orphaned SELECT pack FROM listings l WHERE l.index_file = ?1
             AND NOT EXISTS (SELECT 1 FROM listings o WHERE o.pack = l.pack AND o.index_file != ?1)",
            params![&id.0[..]],
        )
        .map_err(|e| self.err(e))?;
        tx.execute_batch(
            "DELETE FROM chunks WHERE pack IN (SELECT id FROM temp.orphaned);
             DELETE FROM packs WHERE id IN (SELECT id FROM temp.orphaned);",
        )
        .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM listings WHERE index_file = ?1", params![&id.0[..]])
            .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM index_files WHERE id = ?1", params![&id.0[..]])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Whether a backup can reference `id` without storing it: some index file lists it in a
    /// pack not known to be missing.
    pub fn contains_chunk(&self, id: &ChunkId) -> Result<bool> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT 1 FROM chunks WHERE id = ?1
                 AND pack NOT IN (SELECT id FROM bad_packs)",
            )
            .map_err(|e| self.err(e))?;
        stmt.exists(params![&id.0[..]]).map_err(|e| self.err(e))
    }

    /// The packs holding `id`, leaving out those known to be missing or damaged: a backup
    /// that must also leave out packs a prune marked asks this instead of
    /// [`LocalIndex::contains_chunk`].
    pub fn packs_holding(&self, id: &ChunkId) -> Result<Vec<PackId>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT pack FROM chunks WHERE id = ?1
                 AND pack NOT IN (SELECT id FROM bad_packs)",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![&id.0[..]], |r| Ok(PackId(blob32(r.get(0)?, "pack id")?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// True when a pack outside `excluded` (and not known missing or damaged) holds `id`:
    /// what a backup or a copy under a lease asks, `excluded` being the packs a prune marked.
    pub fn holds_outside(&self, id: &ChunkId, excluded: &HashSet<PackId>) -> Result<bool> {
        if excluded.is_empty() {
            return self.contains_chunk(id);
        }
        Ok(self.packs_holding(id)?.iter().any(|p| !excluded.contains(p)))
    }

    /// Records the packs known to be missing from storage or damaged (found by `verify` and
    /// by a backup's start): backups stop deduplicating against their chunks, so the next
    /// backup stores them again, and restore prefers other copies. Replaces the whole set.
    pub fn set_bad_packs(&self, missing: &HashSet<PackId>) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM bad_packs", []).map_err(|e| self.err(e))?;
        for p in missing {
            tx.execute("INSERT OR IGNORE INTO bad_packs (id) VALUES (?1)", params![&p.0[..]])
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Packs recorded as missing or damaged ([`LocalIndex::set_bad_packs`]).
    pub fn bad_packs(&self) -> Result<HashSet<PackId>> {
        self.ids("SELECT id FROM bad_packs", "pack id", PackId)
    }

    /// Index files that list `pack`.
    pub fn index_files_listing(&self, pack: &PackId) -> Result<HashSet<IndexId>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached("SELECT index_file FROM listings WHERE pack = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![&pack.0[..]], |r| Ok(IndexId(blob32(r.get(0)?, "index file id")?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Where `id` is: in a pack not known to be bad when there is one, else in a bad one.
    pub fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLocation>> {
        let conn = self.conn()?;
        // One probe of bad_packs per row (usually one row): a fifth faster than sorting
        // the rows by `pack IN (SELECT …)` at 10M chunks (examples/index_lookups.rs).
        let mut stmt = conn
            .prepare_cached(
                "SELECT c.pack, c.offset, c.length, c.raw_length, p.plaintext_len,
                 EXISTS (SELECT 1 FROM bad_packs b WHERE b.id = c.pack)
                 FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.id = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![&id.0[..]]).map_err(|e| self.err(e))?;
        let mut bad = None;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let row = || -> rusqlite::Result<(ChunkLocation, bool)> {
                let location = ChunkLocation {
                    pack: PackId(blob32(r.get(0)?, "pack id")?),
                    entry: PackEntry {
                        chunk: *id,
                        offset: r.get::<_, i64>(1)? as u64,
                        length: r.get(2)?,
                        raw_length: r.get(3)?,
                    },
                    pack_plaintext_len: r.get::<_, i64>(4)? as u64,
                };
                Ok((location, r.get(5)?))
            };
            match row().map_err(|e| self.err(e))? {
                (location, false) => return Ok(Some(location)),
                (location, true) => {
                    bad.get_or_insert(location);
                }
            }
        }
        Ok(bad)
    }

    pub fn chunk_count(&self) -> Result<u64> {
        let conn = self.conn()?;
        conn.query_row("SELECT COUNT(DISTINCT id) FROM chunks", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    pub fn backup_ids(&self) -> Result<HashSet<BackupId>> {
        self.ids("SELECT id FROM backups", "backup id", BackupId)
    }

    pub fn add_backup(&self, id: BackupId, manifest: &Manifest) -> Result<()> {
        let tags = serde_json::to_string(&manifest.tags).unwrap_or_else(|_| "{}".into());
        let summary = serde_json::to_string(&manifest.summary).unwrap_or_else(|_| "{}".into());
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO backups (id, time, name, tags, bytes, summary)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    &id.0[..],
                    manifest.time,
                    manifest.name,
                    tags,
                    manifest.total_size() as i64,
                    summary
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn remove_backup(&self, id: BackupId) -> Result<()> {
        self.conn()?
            .execute("DELETE FROM backups WHERE id = ?1", params![&id.0[..]])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// All backups, oldest first (by the time instant, then id: manifests written before
    /// times had a fixed width do not sort as text).
    pub fn backups(&self) -> Result<Vec<BackupListing>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT id, time, name, tags, bytes FROM backups ORDER BY time, id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let tags: String = r.get(3)?;
                Ok(BackupListing {
                    id: BackupId(blob32(r.get(0)?, "backup id")?),
                    time: r.get(1)?,
                    name: r.get(2)?,
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                    bytes: r.get::<_, i64>(4)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        let mut backups: Vec<BackupListing> =
            rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))?;
        let instant = |b: &BackupListing| {
            time::OffsetDateTime::parse(&b.time, &time::format_description::well_known::Rfc3339)
                .ok()
        };
        backups.sort_by_cached_key(|b| (instant(b), b.id));
        Ok(backups)
    }
}

/// Blobs are contiguous from offset 0 and an index file lists all of a pack's entries, so
/// the furthest end is the pack's data plaintext length.
pub(crate) fn plaintext_len(pack: &IndexedPack) -> u64 {
    pack.entries.iter().map(|e| e.offset + u64::from(e.length)).max().unwrap_or(0)
}

/// Where an index file's rows go: the live tables (duplicates ignored: an index file may
/// repeat what another lists) or a sync's staging tables.
pub(super) struct Tables {
    insert: &'static str,
    files: &'static str,
    packs: &'static str,
    listings: &'static str,
    chunks: &'static str,
}

/// The statements that record index files' rows, prepared once per transaction.
pub(super) struct Rows<'c> {
    file: rusqlite::Statement<'c>,
    pack: rusqlite::Statement<'c>,
    listing: rusqlite::Statement<'c>,
    chunk: rusqlite::Statement<'c>,
}

impl<'c> Rows<'c> {
    const LIVE: Tables = Tables {
        insert: "INSERT OR IGNORE INTO",
        files: "index_files",
        packs: "packs",
        listings: "listings",
        chunks: "chunks",
    };
    pub(super) const STAGED: Tables = Tables {
        insert: "INSERT INTO",
        files: "temp.staged_files",
        packs: "temp.staged_packs",
        listings: "temp.staged_listings",
        chunks: "temp.staged_chunks",
    };

    pub(super) fn prepare(
        tx: &'c rusqlite::Transaction<'_>,
        t: &Tables,
    ) -> rusqlite::Result<Rows<'c>> {
        let i = t.insert;
        Ok(Rows {
            file: tx.prepare(&format!("{i} {} (id) VALUES (?1)", t.files))?,
            pack: tx.prepare(&format!("{i} {} (id, plaintext_len) VALUES (?1, ?2)", t.packs))?,
            listing: tx
                .prepare(&format!("{i} {} (index_file, pack) VALUES (?1, ?2)", t.listings))?,
            chunk: tx.prepare(&format!(
                "{i} {} (id, pack, offset, length, raw_length) VALUES (?1, ?2, ?3, ?4, ?5)",
                t.chunks
            ))?,
        })
    }

    /// Records index file `id`: its packs, its listing of them, every chunk, then the file.
    pub(super) fn record(&mut self, id: IndexId, file: &IndexFile) -> rusqlite::Result<()> {
        for p in &file.packs {
            self.pack.execute(params![&p.pack.0[..], plaintext_len(p) as i64])?;
            self.listing.execute(params![&id.0[..], &p.pack.0[..]])?;
            for e in &p.entries {
                self.chunk.execute(params![
                    &e.chunk.0[..],
                    &p.pack.0[..],
                    e.offset as i64,
                    e.length,
                    e.raw_length
                ])?;
            }
        }
        self.file.execute(params![&id.0[..]])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexedPack;

    #[test]
    fn the_page_cache_is_pinned_and_reads_are_not_memory_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let idx = LocalIndex::open(&dir.path().join("index.sqlite")).unwrap();
        let conn = idx.conn().unwrap();
        let pragma = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
        assert_eq!(pragma("cache_size").unwrap(), -CACHE_KIB);
        assert_eq!(pragma("mmap_size").unwrap(), 0);
    }

    #[test]
    fn backups_sort_by_instant_not_text() {
        let idx = LocalIndex::in_memory().unwrap();
        // As older manifests wrote them: trailing zeros dropped, so text order is wrong.
        for (i, time) in
            ["2026-01-01T00:00:56.95Z", "2026-01-01T00:00:56.9Z", "2026-01-01T00:00:56Z"]
                .into_iter()
                .enumerate()
        {
            let manifest = Manifest {
                time: time.into(),
                name: Some(format!("b{i}")),
                tags: Default::default(),
                host: "h".into(),
                tool_version: "t".into(),
                streams: vec![],
                summary: Default::default(),
            };
            idx.add_backup(BackupId([i as u8; 32]), &manifest).unwrap();
        }
        let names: Vec<_> = idx.backups().unwrap().into_iter().filter_map(|b| b.name).collect();
        assert_eq!(names, ["b2", "b1", "b0"]);
    }

    #[test]
    fn add_locate_remove() {
        let idx = LocalIndex::in_memory().unwrap();
        let entry = PackEntry { chunk: ChunkId([1; 32]), offset: 5, length: 10, raw_length: 20 };
        let file =
            IndexFile { packs: vec![IndexedPack { pack: PackId([2; 32]), entries: vec![entry] }] };
        idx.add_index_file(IndexId([3; 32]), &file).unwrap();
        assert!(idx.contains_chunk(&ChunkId([1; 32])).unwrap());
        assert_eq!(
            idx.locate(&ChunkId([1; 32])).unwrap(),
            Some(ChunkLocation { pack: PackId([2; 32]), entry, pack_plaintext_len: 15 })
        );
        idx.remove_index_file(IndexId([3; 32])).unwrap();
        assert!(!idx.contains_chunk(&ChunkId([1; 32])).unwrap());
        assert!(idx.index_files().unwrap().is_empty());
    }
}
