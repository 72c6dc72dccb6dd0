//! Recording many index files at once (a fresh machine's sync): staged, then moved into the
//! local index sorted.

use super::{LocalIndex, Rows, SCHEMA};
use crate::error::Result;
use crate::format::index::IndexFile;
use crate::id::IndexId;

/// Temporary tables (this connection only) that a [`BulkLoad`] fills, emptied at its start:
/// what a stopped load staged is never half-recorded.
const STAGING: &str = "
CREATE TEMP TABLE IF NOT EXISTS staged_files (id BLOB NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS staged_packs (id BLOB NOT NULL, plaintext_len INTEGER NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS staged_listings (index_file BLOB NOT NULL, pack BLOB NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS staged_chunks (
    id BLOB NOT NULL, pack BLOB NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, raw_length INTEGER NOT NULL);
DELETE FROM temp.staged_files; DELETE FROM temp.staged_packs;
DELETE FROM temp.staged_listings; DELETE FROM temp.staged_chunks;
";

/// Records many index files in one go: each [`BulkLoad::stage`] appends their rows to
/// temporary tables (appends are cheap), and [`BulkLoad::finish`] moves them all into the
/// index in one transaction, chunks sorted by id.
///
/// Why: chunk ids are random, so recording index files one by one inserts at random places
/// of a B-tree far larger than SQLite's page cache, and every insert dirties (and soon
/// writes) a page of its own — a fresh machine's sync of 10,000 packs took two minutes
/// (docs/benchmarks.md). Sorted, each page is written about once. Into an empty index the
/// by-pack index is built after the rows, by one sort, instead of row by row.
///
/// Guarantees: nothing staged is visible until `finish` commits, and then all of it is: an
/// index file is recorded together with every chunk it lists, or not at all.
pub struct BulkLoad<'a> {
    index: &'a LocalIndex,
}

impl<'a> BulkLoad<'a> {
    pub(super) fn start(index: &'a LocalIndex) -> Result<BulkLoad<'a>> {
        index.conn()?.execute_batch(STAGING).map_err(|e| index.err(e))?;
        Ok(BulkLoad { index })
    }

    /// Stages index files (one transaction on the temporary tables).
    pub fn stage<'f>(
        &mut self,
        files: impl IntoIterator<Item = (IndexId, &'f IndexFile)>,
    ) -> Result<()> {
        let index = self.index;
        let mut conn = index.conn()?;
        let tx = conn.transaction().map_err(|e| index.err(e))?;
        {
            let mut rows = Rows::prepare(&tx, &Rows::STAGED).map_err(|e| index.err(e))?;
            for (id, file) in files {
                rows.record(id, file).map_err(|e| index.err(e))?;
            }
        }
        tx.commit().map_err(|e| index.err(e))
    }

    /// Records everything staged, in one transaction.
    pub fn finish(self) -> Result<()> {
        let index = self.index;
        let mut conn = index.conn()?;
        let tx = conn.transaction().map_err(|e| index.err(e))?;
        let empty: bool = tx
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM chunks)", [], |r| r.get(0))
            .map_err(|e| index.err(e))?;
        if empty {
            tx.execute_batch("DROP INDEX IF EXISTS chunks_by_pack").map_err(|e| index.err(e))?;
        }
        tx.execute_batch(
            "INSERT OR IGNORE INTO packs (id, plaintext_len)
                 SELECT id, plaintext_len FROM temp.staged_packs;
             INSERT OR IGNORE INTO listings (index_file, pack)
                 SELECT index_file, pack FROM temp.staged_listings;
             INSERT OR IGNORE INTO chunks (id, pack, offset, length, raw_length)
                 SELECT id, pack, offset, length, raw_length FROM temp.staged_chunks
                 ORDER BY id, pack;
             INSERT OR IGNORE INTO index_files (id) SELECT id FROM temp.staged_files;
             DELETE FROM temp.staged_files; DELETE FROM temp.staged_packs;
             DELETE FROM temp.staged_listings; DELETE FROM temp.staged_chunks;",
        )
        .map_err(|e| index.err(e))?;
        // Recreated from SCHEMA (a no-op when it was kept).
        tx.execute_batch(SCHEMA).map_err(|e| index.err(e))?;
        tx.commit().map_err(|e| index.err(e))?;
        // The write-ahead log of one big transaction is as large as what it wrote and
        // stays that size on disk (1.5 GB at 10M chunks) unless truncated now.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(|e| index.err(e))
    }
}

#[cfg(test)]
mod tests {
    use crate::format::index::{IndexFile, IndexedPack};
    use crate::format::pack::PackEntry;
    use crate::id::{ChunkId, IndexId, PackId};
    use crate::index::LocalIndex;

    fn file(pack: u8, chunks: std::ops::Range<u8>) -> IndexFile {
        let entries = chunks
            .map(|c| PackEntry { chunk: ChunkId([c; 32]), offset: 0, length: 1, raw_length: 1 })
            .collect();
        IndexFile { packs: vec![IndexedPack { pack: PackId([pack; 32]), entries }] }
    }

    #[test]
    fn staged_files_are_recorded_at_finish_only_and_a_new_load_drops_a_stopped_one() {
        let idx = LocalIndex::in_memory().unwrap();
        let (a, b) = (file(1, 0..3), file(2, 3..5));
        // A load stopped before it finished.
        idx.bulk_load().unwrap().stage([(IndexId([10; 32]), &a)]).unwrap();
        assert!(idx.index_files().unwrap().is_empty());
        assert!(idx.locate(&ChunkId([0; 32])).unwrap().is_none());

        let mut load = idx.bulk_load().unwrap();
        load.stage([(IndexId([11; 32]), &b)]).unwrap();
        load.finish().unwrap();
        assert_eq!(idx.index_files().unwrap(), [IndexId([11; 32])].into());
        assert!(idx.locate(&ChunkId([0; 32])).unwrap().is_none(), "the stopped load's rows");
        assert_eq!(idx.locate(&ChunkId([4; 32])).unwrap().unwrap().pack, PackId([2; 32]));

        // Into a non-empty index, and removable again (the by-pack index is back).
        let mut load = idx.bulk_load().unwrap();
        load.stage([(IndexId([10; 32]), &a)]).unwrap();
        load.finish().unwrap();
        assert_eq!(idx.chunk_count().unwrap(), 5);
        idx.remove_index_file(IndexId([11; 32])).unwrap();
        assert_eq!(idx.chunk_count().unwrap(), 3);
        assert_eq!(idx.pack_ids().unwrap(), [PackId([1; 32])].into());
    }
}
