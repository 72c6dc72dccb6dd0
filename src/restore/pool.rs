//! Piece-sized buffers, kept and reused, for what restore holds between decode and write.
//!
//! A piece's decoded chunks live from the decoder until the ordered writer and the stream
//! hasher are done with them, while reads, blobs and age segments come and go around them.
//! Allocated per chunk, in as many sizes as there are chunks, those long-lived blocks
//! fragmented glibc's heaps: restore's peak RSS rose from 75 to 96 MiB between 1 and 16 GiB
//! while the bytes in use did not (heaptrack and `mallinfo2`, docs/benchmarks.md "Scale").
//! One buffer per piece, always of [`PIECE_SPAN`](super::PIECE_SPAN) bytes and handed back
//! here when its last chunk is dropped, leaves nothing to fragment; and a buffer reused is
//! one not zeroed again.

use bytes::Bytes;
use std::sync::{Arc, Mutex};

/// Buffers of one size; at most `keep` of them wait for reuse (the rest go back to the
/// allocator), so what the pool holds is bounded by what the pipeline had in flight.
pub(crate) struct BufferPool {
    size: usize,
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    pub(crate) fn new(size: usize, keep: usize) -> Arc<Self> {
        Arc::new(BufferPool { size, keep, free: Mutex::new(Vec::new()) })
    }

    /// A buffer whose first `len` bytes are the caller's to fill (their contents are left
    /// over from an earlier use). `len` above the pool's size gets a buffer of its own,
    /// not kept: one chunk larger than a piece, from a non-default chunker.
    pub(crate) fn take(self: &Arc<Self>, len: usize) -> PoolBuf {
        if len > self.size {
            return PoolBuf { buf: vec![0; len], len, pool: None };
        }
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        let buf = reused.unwrap_or_else(|| vec![0; self.size]);
        PoolBuf { buf, len, pool: Some(self.clone()) }
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.len() != self.size {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.keep {
                free.push(buf);
            }
        }
    }
}

/// A pool buffer (or an oversized one of its own), seen as its first `len` bytes.
pub(crate) struct PoolBuf {
    buf: Vec<u8>,
    len: usize,
    pool: Option<Arc<BufferPool>>,
}

impl PoolBuf {
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// Shares the buffer as [`Bytes`]: slices of it go their own ways, and the buffer
    /// returns to its pool when the last of them is dropped.
    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_returns_when_its_last_slice_is_dropped_and_is_reused() {
        let pool = BufferPool::new(16, 1);
        let mut first = pool.take(10);
        first.as_mut_slice().copy_from_slice(b"0123456789");
        let bytes = first.freeze();
        let tail = bytes.slice(6..);
        drop(bytes);
        assert_eq!(pool.free.lock().unwrap().len(), 0, "a slice still holds it");
        assert_eq!(&tail[..], b"6789");
        drop(tail);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        let again = pool.take(4);
        assert_eq!(again.as_ref(), b"0123", "the same buffer, not zeroed again");
        assert_eq!(pool.free.lock().unwrap().len(), 0);
    }

    #[test]
    fn oversized_buffers_and_more_than_keep_go_back_to_the_allocator() {
        let pool = BufferPool::new(8, 1);
        let big = pool.take(20);
        assert_eq!(big.as_ref().len(), 20);
        drop(big);
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        let (a, b) = (pool.take(8), pool.take(8));
        drop(a);
        drop(b);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
    }
}
