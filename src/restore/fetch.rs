//! Range reads of packs, and the sparse view of a pack's data section that age reads from.

use super::Piece;
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack;
use crate::id::PackId;
use crate::repo::Repository;
use bytes::Bytes;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// What a piece's range read brought back: enough of the pack's data section to open the
/// age stream (its header) and read the piece's blobs.
pub(crate) struct Fetched {
    pub(crate) header: Bytes,
    pub(crate) window_start: u64,
    pub(crate) window: Bytes,
    pub(crate) data_len: u64,
}

/// Range reads of packs, with each pack's age header fetched once and shared.
pub(crate) struct Fetcher<'a> {
    repo: &'a Repository,
    headers: Mutex<Headers>,
    pub(crate) reads: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

/// Pack headers kept for later pieces of the same pack. A stream's pieces come pack by pack
/// (a late backup's from many packs, interleaved), so the packs still being read are the
/// recent ones; keeping every header grew with the stream (~60,000 packs per TB).
const HEADERS_KEPT: usize = 1024;

/// The age headers of the last [`HEADERS_KEPT`] packs asked for; an older one is read
/// again if a piece needs it.
#[derive(Default)]
struct Headers {
    cells: HashMap<PackId, Arc<OnceCell<Bytes>>>,
    order: std::collections::VecDeque<PackId>,
}

impl Headers {
    fn get(&mut self, pack: PackId) -> Arc<OnceCell<Bytes>> {
        if let Some(cell) = self.cells.get(&pack) {
            return cell.clone();
        }
        if self.order.len() >= HEADERS_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.cells.remove(&oldest);
            }
        }
        self.order.push_back(pack);
        self.cells.entry(pack).or_default().clone()
    }
}

/// First guess at the age header's size: one X25519 stanza is about 130 bytes.
const HEADER_GUESS: u64 = 4096;

impl<'a> Fetcher<'a> {
    pub(crate) fn new(repo: &'a Repository) -> Self {
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

    pub(crate) async fn fetch(&self, piece: &Piece) -> Result<Fetched> {
        let cell = {
            let mut headers = self
                .headers
                .lock()
                .map_err(|_| Error::new(ErrorKind::Io, "restore header cache poisoned"))?;
            headers.get(piece.pack)
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

/// A sparse, seekable view of a pack's data section: the age header, one fetched window,
/// and the total length (age needs it to know which segment is last). Reading bytes that
/// were not fetched is an error, never silent zeros.
pub(crate) struct Window {
    fetched: Fetched,
    position: u64,
}

impl Window {
    pub(crate) fn new(fetched: Fetched) -> Self {
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

    #[test]
    fn headers_keep_the_most_recent_packs_only() {
        let mut headers = Headers::default();
        let pack = |i: u32| PackId(*blake3::hash(&i.to_le_bytes()).as_bytes());
        let first = headers.get(pack(0));
        assert!(first.set(Bytes::from_static(b"h0")).is_ok());
        assert!(Arc::ptr_eq(&first, &headers.get(pack(0))), "kept while recent");
        for i in 1..=HEADERS_KEPT as u32 {
            headers.get(pack(i));
        }
        assert_eq!(headers.cells.len(), HEADERS_KEPT);
        assert_eq!(headers.order.len(), HEADERS_KEPT);
        assert!(headers.get(pack(0)).get().is_none(), "the oldest was let go, read again");
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
