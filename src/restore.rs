//! Restore: a stream of a backup back to bytes, every chunk and the whole stream checked.
//!
//! ```text
//! plan (chunks → runs of consecutive chunks in one pack) → fetch packs (concurrent, in
//! order) → writer thread: decrypt → decompress → check chunk id → write → whole-stream hashes
//! ```
//!
//! The writer is a plain thread: decryption and decompression are CPU work. Output is
//! written in stream order; the caller decides what "complete" means (a file is renamed into
//! place only after this returns Ok).

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::StreamRecord;
use crate::format::pack::{decode_trailer, PackData, PackEntry, TRAILER_LEN};
use crate::id::{BackupId, PackId};
use crate::repo::Repository;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use sha2::Digest;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Packs fetched ahead of the writer.
    pub prefetch: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions { prefetch: 3 }
    }
}

#[derive(Clone, Debug)]
pub struct RestoreSummary {
    pub bytes: u64,
    pub chunks: u64,
    pub packs_read: u64,
    pub duration: Duration,
}

/// Consecutive chunks of the stream that live in one pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub pack: PackId,
    pub entries: Vec<PackEntry>,
}

/// The pure plan: where every chunk of `stream` is, grouped into runs. Fails (naming the
/// backup, stream and chunk) when a chunk is in no index file.
pub fn plan(repo: &Repository, backup: BackupId, stream: &StreamRecord) -> Result<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    for chunk in &stream.chunks {
        let location = repo.index().locate(chunk)?.ok_or_else(|| {
            Error::not_found(format!(
                "chunk {chunk} of stream {:?} in backup {backup} is in no index file of {}: \
                 run `qvault index rebuild`, then `qvault verify`",
                stream.name,
                repo.storage().location()
            ))
        })?;
        match runs.last_mut() {
            Some(run) if run.pack == location.pack => run.entries.push(location.entry),
            _ => runs.push(Run { pack: location.pack, entries: vec![location.entry] }),
        }
    }
    Ok(runs)
}

/// Restores `stream` of `backup` into `out` and returns `out` when every check passed.
pub async fn restore_stream<W: Write + Send + 'static>(
    repo: &Repository,
    backup: BackupId,
    stream: &StreamRecord,
    out: W,
    options: &RestoreOptions,
) -> Result<(W, RestoreSummary)> {
    let started = Instant::now();
    let identities = repo.data_identities("restoring a backup")?.to_vec();
    let runs = plan(repo, backup, stream)?;
    let packs_read = runs.len() as u64;
    // A pack that fails as a whole is reported with the first chunk the stream needs from it.
    let context = move |run: &Run| {
        let chunk = run.entries.first().map(|e| e.chunk.to_hex()).unwrap_or_default();
        format!("backup {backup}, stream {:?}, chunk {chunk} in pack {}", stream.name, run.pack)
    };
    let (tx, rx) = crossbeam_channel::bounded::<(Run, Bytes)>(1);
    let key = repo.key().clone();
    let expected = stream.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<(W, u64)> {
        let mut out = out;
        let mut sha = sha2::Sha256::new();
        let mut b3 = blake3::Hasher::new();
        let mut size = 0u64;
        let refs: Vec<&dyn age::Identity> =
            identities.iter().map(|i| i as &dyn age::Identity).collect();
        let where_ =
            |pack: &PackId| format!("backup {backup}, stream {:?}, pack {pack}", expected.name);
        for (run, pack) in rx {
            let data = data_section(&pack).map_err(|e| e.context(where_(&run.pack)))?;
            let what = format!("pack {}", run.pack);
            let mut reader = PackData::open(std::io::Cursor::new(data), &refs, &what)
                .map_err(|e| e.context(where_(&run.pack)))?;
            for entry in &run.entries {
                let chunk_error =
                    |e: Error| e.context(format!("{}, chunk {}", where_(&run.pack), entry.chunk));
                let blob = reader.read_blob(entry).map_err(chunk_error)?;
                let chunk = codec::decode(&blob, entry.raw_length as usize).map_err(chunk_error)?;
                if key.chunk_id(&chunk) != entry.chunk {
                    return Err(chunk_error(Error::corrupt(
                        "the chunk's content does not match its id: the pack is damaged",
                    )));
                }
                sha.update(&chunk);
                b3.update(&chunk);
                size += chunk.len() as u64;
                out.write_all(&chunk)
                    .map_err(|e| Error::io(format!("writing stream {:?}", expected.name), e))?;
            }
        }
        out.flush().map_err(|e| Error::io(format!("writing stream {:?}", expected.name), e))?;
        let sha256 = hex::encode(sha.finalize());
        let blake3 = b3.finalize().to_hex().to_string();
        if size != expected.size || sha256 != expected.sha256 || blake3 != expected.blake3 {
            return Err(Error::corrupt(format!(
                "stream {:?} of backup {backup} restored to {size} bytes with SHA-256 {sha256}, \
                 but was backed up as {} bytes with SHA-256 {}: the restored data is wrong",
                expected.name, expected.size, expected.sha256
            )));
        }
        Ok((out, size))
    });

    let fetch = async {
        let mut fetched = stream::iter(runs)
            .map(|run| async move {
                let pack = repo.read_pack(run.pack).await.map_err(|e| e.context(context(&run)))?;
                Ok::<_, Error>((run, pack))
            })
            .buffered(options.prefetch.max(1));
        while let Some(item) = fetched.next().await {
            let item = item?;
            // A closed channel means the writer failed; its error is the one to report.
            let tx = tx.clone();
            let sent =
                tokio::task::spawn_blocking(move || tx.send(item).is_ok()).await.unwrap_or(false);
            if !sent {
                break;
            }
        }
        drop(tx);
        Ok::<_, Error>(())
    };
    let (fetched, written) = tokio::join!(fetch, writer);
    let written =
        written.map_err(|e| Error::new(ErrorKind::Io, format!("restore writer failed: {e}")))?;
    let (out, bytes) = match (fetched, written) {
        // A failed fetch ends the writer's input early: the fetch error is the cause.
        (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(w)) => w,
    };
    let summary = RestoreSummary {
        bytes,
        chunks: stream.chunks.len() as u64,
        packs_read,
        duration: started.elapsed(),
    };
    Ok((out, summary))
}

/// The data section of a whole pack: everything before the encrypted header and trailer.
fn data_section(pack: &Bytes) -> Result<Bytes> {
    let cut = pack.len().checked_sub(TRAILER_LEN).ok_or_else(|| {
        Error::corrupt(format!("pack is {} bytes, too short to be a pack", pack.len()))
    })?;
    let header_len = decode_trailer(&pack[cut..], "pack trailer")?;
    let data_len = (cut as u64)
        .checked_sub(header_len)
        .ok_or_else(|| Error::corrupt("pack is shorter than the header its trailer announces"))?;
    Ok(pack.slice(..data_len as usize))
}
