//! The whole-stream digests a manifest records for every stream: size, SHA-256 (what Qdrant's
//! snapshot checksums use) and BLAKE3. Backup computes them from what it reads, restore from
//! what it writes, on a thread of their own so the hashing overlaps the rest of the pipeline.

use bytes::Bytes;
use sha2::Digest;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamDigest {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// Lowercase hex.
    pub blake3: String,
}

/// Spawns the hashing thread: send the stream's bytes in order, drop the sender, and the
/// handle yields the digest.
pub fn spawn(
    capacity: usize,
) -> (crossbeam_channel::Sender<Bytes>, tokio::task::JoinHandle<StreamDigest>) {
    let (tx, rx) = crossbeam_channel::bounded::<Bytes>(capacity);
    let handle = tokio::task::spawn_blocking(move || {
        let mut sha = sha2::Sha256::new();
        let mut b3 = blake3::Hasher::new();
        let mut size = 0u64;
        for bytes in rx {
            sha.update(&bytes);
            b3.update(&bytes);
            size += bytes.len() as u64;
        }
        StreamDigest {
            size,
            sha256: hex::encode(sha.finalize()),
            blake3: b3.finalize().to_hex().to_string(),
        }
    });
    (tx, handle)
}
