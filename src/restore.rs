//! Restore: a stream of a backup back to bytes, every chunk and the whole stream checked.
//!
//! ```text
//! plan: chunks → pieces (stream-consecutive chunks of one pack lying close together)
//!   → fetch each piece's segments with a range read (concurrent, in order; the pack's age
//!     header once per pack)
//!   → decode on the blocking pool: decrypt, decompress, check each chunk id
//!   → writer thread: write in stream order, whole-stream SHA-256 and BLAKE3
//! ```
//!
//! Range reads fetch what the stream needs, not whole packs: a late backup's chunks are
//! scattered over the packs of every earlier one. Output is written in stream order; the
//! caller decides what "complete" means (a file is renamed into place only after this
//! returns Ok).

use crate::codec;
use crate::crypto::RepositoryKey;
use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::StreamRecord;
use crate::format::pack::{self, PackData, PackEntry};
use crate::id::{BackupId, ChunkId, PackId};
use crate::repo::Repository;
use age::x25519;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Pieces fetched and decoded ahead of the writer (each at most [`PIECE_SPAN`]).
    pub prefetch: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions { prefetch: 6 }
    }
}

#[derive(Clone, Debug)]
pub struct RestoreSummary {
    pub bytes: u64,
    pub chunks: u64,
    /// Distinct packs the stream's chunks live in.
    pub packs_read: u64,
    /// Range reads made (pieces plus one age header per pack).
    pub reads: u64,
    /// Bytes fetched from storage.
    pub bytes_fetched: u64,
    pub duration: Duration,
}

/// At most this much of a pack's data (plaintext) is fetched for one piece, and at most
/// this much chunk data is decoded: bounds the memory each piece in flight holds.
pub const PIECE_SPAN: u64 = 2 * 1024 * 1024;

/// How far ahead in the stream a piece may take more chunks of its pack. The writer holds
/// chunks that arrive before their turn, so this bounds its reorder buffer.
pub const LOOKAHEAD: u64 = 8 * 1024 * 1024;

/// Chunks of one pack from a stretch of the stream, fetched with one range read: when a
/// few chunks from elsewhere interrupt a run (an edit, a new segment), the run goes on in
/// the same piece rather than costing another read and re-decrypting the segments at its
/// ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub pack: PackId,
    /// Plaintext length of the pack's data section.
    pub pack_plaintext_len: u64,
    /// In stream order; offsets may go back and forth (and repeat) within the piece.
    pub entries: Vec<PackEntry>,
    /// Each entry's position in the stream's chunk list.
    pub seqs: Vec<u64>,
    /// Stream byte offset of the first chunk.
    pub stream_start: u64,
}

impl Piece {
    /// The plaintext range of the pack holding every blob of the piece.
    fn span(&self) -> std::ops::Range<u64> {
        let start = self.entries.iter().map(|e| e.offset).min().unwrap_or(0);
        let end = self.entries.iter().map(|e| e.offset + u64::from(e.length)).max().unwrap_or(0);
        start..end
    }

    fn raw_len(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.raw_length)).sum()
    }

    /// Whether `entry` of the same pack can join without the piece outgrowing its limits.
    fn admits(&self, entry: &PackEntry) -> bool {
        let span = self.span();
        let start = span.start.min(entry.offset);
        let end = span.end.max(entry.offset + u64::from(entry.length));
        end - start <= PIECE_SPAN && self.raw_len() + u64::from(entry.raw_length) <= PIECE_SPAN
    }
}

/// The pure plan: where every chunk of `stream` is, grouped into pieces. Fails (naming the
/// backup, stream and chunk) when a chunk is in no index file.
pub fn plan(repo: &Repository, backup: BackupId, stream: &StreamRecord) -> Result<Vec<Piece>> {
    let mut pieces: Vec<Piece> = Vec::new();
    // The piece each pack's chunks currently go to.
    let mut open: HashMap<PackId, usize> = HashMap::new();
    let mut position = 0u64;
    for (seq, chunk) in stream.chunks.iter().enumerate() {
        let location = repo.index().locate(chunk)?.ok_or_else(|| {
            Error::not_found(format!(
                "chunk {chunk} of stream {:?} in backup {backup} is in no index file of {}: \
                 run `qvault index rebuild`, then `qvault verify`",
                stream.name,
                repo.storage().location()
            ))
        })?;
        let end = position + u64::from(location.entry.raw_length);
        let joins = open.get(&location.pack).copied().filter(|&i| {
            let piece = &pieces[i];
            end - piece.stream_start <= LOOKAHEAD && piece.admits(&location.entry)
        });
        match joins {
            Some(i) => {
                pieces[i].entries.push(location.entry);
                pieces[i].seqs.push(seq as u64);
            }
            None => {
                open.insert(location.pack, pieces.len());
                pieces.push(Piece {
                    pack: location.pack,
                    pack_plaintext_len: location.pack_plaintext_len,
                    entries: vec![location.entry],
                    seqs: vec![seq as u64],
                    stream_start: position,
                });
            }
        }
        position = end;
    }
    Ok(pieces)
}

/// Names where in the backup a failure happened, for every error restore reports.
#[derive(Clone)]
struct Place {
    backup: BackupId,
    stream: String,
}

impl Place {
    fn at(&self, pack: &PackId, chunk: &ChunkId) -> String {
        format!("backup {}, stream {:?}, chunk {chunk} in pack {pack}", self.backup, self.stream)
    }

    /// A pack that fails as a whole is reported with the first chunk the piece needs.
    fn piece(&self, piece: &Piece) -> String {
        match piece.entries.first() {
            Some(e) => self.at(&piece.pack, &e.chunk),
            None => {
                format!("backup {}, stream {:?}, pack {}", self.backup, self.stream, piece.pack)
            }
        }
    }
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
    let decode_context = Arc::new(DecodeContext {
        identities: repo.data_identities("restoring a backup")?.to_vec(),
        key: repo.key().clone(),
        place: Place { backup, stream: stream.name.clone() },
    });
    let pieces = plan(repo, backup, stream)?;
    let packs_read = pieces.iter().map(|p| p.pack).collect::<HashSet<_>>().len() as u64;
    let fetcher = Fetcher::new(repo);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u64>, Vec<Bytes>)>(2);
    let total_chunks = stream.chunks.len() as u64;
    let place = decode_context.place.clone();
    let (digest_tx, digest) = crate::digest::spawn(64);
    let writer = tokio::task::spawn_blocking(move || -> Result<W> {
        let mut out = out;
        let write_error = |e| Error::io(format!("writing stream {:?}", place.stream), e);
        // Pieces arrive in the order of their first chunk but may carry chunks up to
        // LOOKAHEAD further on: those wait here for their turn.
        let mut next = 0u64;
        let mut waiting: BTreeMap<u64, Bytes> = BTreeMap::new();
        while let Some((seqs, chunks)) = rx.blocking_recv() {
            waiting.extend(seqs.into_iter().zip(chunks));
            while let Some(chunk) = waiting.remove(&next) {
                out.write_all(&chunk).map_err(write_error)?;
                digest_tx
                    .send(chunk)
                    .map_err(|_| Error::new(ErrorKind::Io, "restore: the stream hasher stopped"))?;
                next += 1;
            }
        }
        if next != total_chunks {
            // Only after a failed fetch (whose error is the one reported) or a wrong plan.
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "restore wrote {next} of {total_chunks} chunks of stream {:?}",
                    place.stream
                ),
            ));
        }
        out.flush().map_err(write_error)?;
        Ok(out)
    });

    let fetch = async {
        let mut decoded = stream::iter(pieces)
            .map(|piece| {
                let context = decode_context.clone();
                let fetcher = &fetcher;
                async move {
                    let fetched = fetcher
                        .fetch(&piece)
                        .await
                        .map_err(|e| e.context(context.place.piece(&piece)))?;
                    tokio::task::spawn_blocking(move || {
                        let chunks = context.decode(&piece, fetched)?;
                        Ok((piece.seqs, chunks))
                    })
                    .await
                    .map_err(|e| {
                        Error::new(ErrorKind::Io, format!("restore decoder failed: {e}"))
                    })?
                }
            })
            .buffered(options.prefetch.max(1));
        while let Some(chunks) = decoded.next().await {
            // A closed channel means the writer failed; its error is the one to report.
            if tx.send(chunks?).await.is_err() {
                break;
            }
        }
        drop(tx);
        Ok::<_, Error>(())
    };
    let (fetched, written) = tokio::join!(fetch, writer);
    let written =
        written.map_err(|e| Error::new(ErrorKind::Io, format!("restore writer failed: {e}")))?;
    let out = match (fetched, written) {
        // A failed fetch ends the writer's input early: the fetch error is the cause.
        (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(out)) => out,
    };
    let got = digest
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("restore hasher failed: {e}")))?;
    if got.size != stream.size || got.sha256 != stream.sha256 || got.blake3 != stream.blake3 {
        return Err(Error::corrupt(format!(
            "stream {:?} of backup {backup} restored to {} bytes with SHA-256 {}, but was \
             backed up as {} bytes with SHA-256 {}: the restored data is wrong",
            stream.name, got.size, got.sha256, stream.size, stream.sha256
        )));
    }
    let summary = RestoreSummary {
        bytes: got.size,
        chunks: stream.chunks.len() as u64,
        packs_read,
        reads: fetcher.reads.load(Ordering::Relaxed),
        bytes_fetched: fetcher.bytes.load(Ordering::Relaxed),
        duration: started.elapsed(),
    };
    Ok((out, summary))
}

/// What a piece's range read brought back: enough of the pack's data section to open the
/// age stream (its header) and read the piece's blobs.
struct Fetched {
    header: Bytes,
    window_start: u64,
    window: Bytes,
    data_len: u64,
}

/// Range reads of packs, with each pack's age header fetched once and shared.
struct Fetcher<'a> {
    repo: &'a Repository,
    headers: Mutex<HashMap<PackId, Arc<OnceCell<Bytes>>>>,
    reads: AtomicU64,
    bytes: AtomicU64,
}

/// First guess at the age header's size: one X25519 stanza is about 130 bytes.
const HEADER_GUESS: u64 = 4096;

impl<'a> Fetcher<'a> {
    fn new(repo: &'a Repository) -> Self {
        Fetcher {
            repo,
            headers: Mutex::default(),
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    async fn read(&self, pack: &PackId, range: std::ops::Range<u64>) -> Result<Bytes> {
        let bytes = self.repo.read_pack_range(*pack, range).await?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    async fn fetch(&self, piece: &Piece) -> Result<Fetched> {
        let cell = {
            let mut headers = self
                .headers
                .lock()
                .map_err(|_| Error::new(ErrorKind::Io, "restore header cache poisoned"))?;
            headers.entry(piece.pack).or_default().clone()
        };
        let header =
            cell.get_or_try_init(|| self.header(&piece.pack, piece.pack_plaintext_len)).await?;
        let payload_start = header.len() as u64;
        let range = pack::data_range(payload_start, piece.pack_plaintext_len, piece.span());
        let window_start = range.start;
        let window = self.read(&piece.pack, range).await?;
        Ok(Fetched {
            header: header.clone(),
            window_start,
            window,
            data_len: pack::data_len(payload_start, piece.pack_plaintext_len),
        })
    }

    /// The pack's bytes before the age payload (header and nonce).
    async fn header(&self, pack: &PackId, plaintext_len: u64) -> Result<Bytes> {
        // Never ask past the object's end: a pack holds at least its payload (plaintext plus
        // one tag) and the 16-byte trailer after the header.
        let floor = plaintext_len + pack::AGE_TAG + pack::TRAILER_LEN as u64;
        let mut want = HEADER_GUESS.min(floor);
        loop {
            let prefix = self.read(pack, 0..want).await?;
            // Copied out: a slice would keep the storage layer's whole read buffer (MiBs
            // per pack, measured) alive for as long as the header is cached.
            if let Some(start) = pack::payload_start(&prefix) {
                return Ok(Bytes::copy_from_slice(&prefix[..start as usize]));
            }
            if want == floor {
                // A header larger than the smallest possible pack: read the whole object.
                let whole = self.repo.read_pack(*pack).await?;
                let start = pack::payload_start(&whole).ok_or_else(|| {
                    Error::corrupt(format!("pack {pack} does not start with an age header"))
                })?;
                return Ok(Bytes::copy_from_slice(&whole[..start as usize]));
            }
            want = (want * 4).min(floor);
        }
    }
}

/// What decoding needs, shared by every piece of one restore.
struct DecodeContext {
    identities: Vec<x25519::Identity>,
    key: RepositoryKey,
    place: Place,
}

impl DecodeContext {
    /// Decrypts, decompresses and checks the piece's chunks; returns them in stream order.
    fn decode(&self, piece: &Piece, fetched: Fetched) -> Result<Vec<Bytes>> {
        let refs: Vec<&dyn age::Identity> =
            self.identities.iter().map(|i| i as &dyn age::Identity).collect();
        let what = format!("pack {}", piece.pack);
        let mut data = PackData::open(Window::new(fetched), &refs, &what)
            .map_err(|e| e.context(self.place.piece(piece)))?;
        let mut decoder = codec::Decoder::new()?;
        // Forward through the pack, each blob once: age reads segment by segment, and
        // offset 0 must come first (see `PackData::read_blob`).
        let mut order: Vec<usize> = (0..piece.entries.len()).collect();
        order.sort_by_key(|&i| piece.entries[i].offset);
        let mut chunks: Vec<Bytes> = vec![Bytes::new(); piece.entries.len()];
        let mut previous: Option<(u64, Bytes)> = None;
        for i in order {
            let entry = &piece.entries[i];
            if let Some((offset, chunk)) = &previous {
                if *offset == entry.offset {
                    chunks[i] = chunk.clone();
                    continue;
                }
            }
            let chunk_error = |e: Error| e.context(self.place.at(&piece.pack, &entry.chunk));
            let blob = data.read_blob(entry).map_err(chunk_error)?;
            let chunk = decoder.decode(&blob, entry.raw_length as usize).map_err(chunk_error)?;
            if self.key.chunk_id(&chunk) != entry.chunk {
                return Err(chunk_error(Error::corrupt(
                    "the chunk's content does not match its id: the pack is damaged",
                )));
            }
            let chunk = Bytes::from(chunk);
            chunks[i] = chunk.clone();
            previous = Some((entry.offset, chunk));
        }
        Ok(chunks)
    }
}

/// A sparse, seekable view of a pack's data section: the age header, one fetched window,
/// and the total length (age needs it to know which segment is last). Reading bytes that
/// were not fetched is an error, never silent zeros.
struct Window {
    fetched: Fetched,
    position: u64,
}

impl Window {
    fn new(fetched: Fetched) -> Self {
        Window { fetched, position: 0 }
    }
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let f = &self.fetched;
        let pos = self.position;
        let header_len = f.header.len() as u64;
        let window_end = f.window_start + f.window.len() as u64;
        let available: &[u8] = if pos < header_len {
            &f.header[pos as usize..]
        } else if pos >= f.window_start && pos < window_end {
            &f.window[(pos - f.window_start) as usize..]
        } else if pos >= f.data_len {
            &[]
        } else {
            return Err(std::io::Error::other(format!(
                "byte {pos} of the pack data was not fetched (fetched {}..{window_end})",
                f.window_start
            )));
        };
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.fetched.data_len.checked_add_signed(d),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
        };
        self.position = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the pack's start")
        })?;
        Ok(self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{PackWriter, AGE_SEGMENT};

    /// A pack whose blobs start at 0, exactly on segment boundaries and in between, and a
    /// piece-decoder that sees only what `data_range` says to fetch.
    #[test]
    fn pieces_decode_from_their_range_alone_in_any_order() {
        let key = RepositoryKey::generate();
        let data_id = x25519::Identity::generate();
        let segment = AGE_SEGMENT as usize;
        // Raw blobs are one codec byte longer than their chunk: these land blobs at 0,
        // 65_536, 131_072, 132_073, 197_610 and 300_011.
        let sizes = [segment - 1, segment - 1, 1000, segment - 1 + 1, 102_400, 5];
        let chunks: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| crate::synth::pseudo_random(n, i as u64))
            .collect();
        let mut writer = PackWriter::new(&[data_id.to_public()], 1 << 20).unwrap();
        for chunk in &chunks {
            let blob = [&[codec::CODEC_RAW][..], chunk].concat();
            writer.add(key.chunk_id(chunk), &blob, chunk.len() as u32).unwrap();
        }
        let sealed = writer.finish(&key.metadata_recipient()).unwrap();
        let entries = sealed.header.entries.clone();
        assert_eq!(entries[1].offset, AGE_SEGMENT);
        assert_eq!(entries[2].offset, 2 * AGE_SEGMENT);
        let plaintext_len = entries.iter().map(|e| e.offset + u64::from(e.length)).max().unwrap();
        let context = DecodeContext {
            identities: vec![data_id],
            key,
            place: Place { backup: BackupId([7; 32]), stream: "s".into() },
        };
        let payload_start = pack::payload_start(&sealed.bytes).unwrap();
        for order in [
            vec![0],
            vec![1],
            vec![2],
            vec![2, 1],
            vec![3, 3, 0, 3],
            vec![5],
            vec![4, 5],
            vec![5, 0, 2],
            vec![1, 2, 3, 4, 5],
        ] {
            let piece = Piece {
                pack: sealed.id,
                pack_plaintext_len: plaintext_len,
                entries: order.iter().map(|&i| entries[i]).collect(),
                seqs: (0..order.len() as u64).collect(),
                stream_start: 0,
            };
            let range = pack::data_range(payload_start, plaintext_len, piece.span());
            let fetched = Fetched {
                header: Bytes::copy_from_slice(&sealed.bytes[..payload_start as usize]),
                window_start: range.start,
                window: Bytes::copy_from_slice(
                    &sealed.bytes[range.start as usize..range.end as usize],
                ),
                data_len: sealed.header.data_len,
            };
            let decoded =
                context.decode(&piece, fetched).unwrap_or_else(|e| panic!("{order:?}: {e}"));
            let expected: Vec<&[u8]> = order.iter().map(|&i| chunks[i].as_slice()).collect();
            let decoded: Vec<&[u8]> = decoded.iter().map(|b| b.as_ref()).collect();
            assert_eq!(decoded, expected, "{order:?}");
        }
    }

    #[test]
    fn a_window_refuses_bytes_it_does_not_hold() {
        let fetched = Fetched {
            header: Bytes::from_static(b"head"),
            window_start: 10,
            window: Bytes::from_static(b"0123"),
            data_len: 20,
        };
        let mut window = Window::new(fetched);
        let mut buf = [0u8; 8];
        assert_eq!(window.read(&mut buf).unwrap(), 4);
        assert!(window.read(&mut buf).is_err());
        window.seek(SeekFrom::Start(12)).unwrap();
        assert_eq!(window.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"23");
        window.seek(SeekFrom::End(0)).unwrap();
        assert_eq!(window.read(&mut buf).unwrap(), 0);
    }
}
