//! New blobs into sealed packs: one thread fills a pack writer until it reaches the
//! repository's pack size, seals it (one age stream over the blobs, then the encrypted
//! header) and hands it to the uploads.
//!
//! Guarantees: blobs keep their arrival order inside a pack; the last, partly filled pack is
//! sealed too; an empty pack is never produced; a pack being filled holds at most its size
//! limit plus one blob (list-block packs: [`list_pack_size`]).

use super::chunks::NewBlob;
use super::pipeline_stopped;
use crate::error::Result;
use crate::format::pack::{PackWriter, SealedPack};

/// List-block packs are sealed at this size (or the repository's pack size, if smaller).
/// The list packer lives as long as the backup and its blocks trickle in (~32 bytes per
/// 64 KiB of stream), so a pack of the full 16 MiB held every id of a backup up to ~35 GiB
/// in memory: 7 MiB at 16 GiB, growing with the stream (docs/benchmarks.md "Scale"). At
/// 4 MiB a 1 TB backup writes ~110 list packs next to its ~60,000 data packs.
pub const LIST_PACK_SIZE: u64 = 4 * 1024 * 1024;

/// The size at which a list-block packer seals its pack, for a repository's `pack_size`.
pub(crate) fn list_pack_size(pack_size: u64) -> u64 {
    pack_size.min(LIST_PACK_SIZE)
}

/// Fills packs with new blobs and hands sealed packs to the uploader.
pub(crate) fn run_packer(
    blobs: crossbeam_channel::Receiver<NewBlob>,
    packs: tokio::sync::mpsc::Sender<SealedPack>,
    recipients: &[age::x25519::Recipient],
    metadata_recipient: &age::x25519::Recipient,
    pack_size: u64,
) -> Result<()> {
    let capacity = usize::try_from(pack_size).unwrap_or(usize::MAX).saturating_add(1 << 20);
    let mut writer: Option<PackWriter> = None;
    for blob in blobs {
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(PackWriter::new(recipients, capacity)?),
        };
        w.add(blob.id, &blob.blob, blob.raw_length)?;
        if w.len() >= pack_size {
            if let Some(full) = writer.take() {
                packs
                    .blocking_send(full.finish(metadata_recipient)?)
                    .map_err(|_| pipeline_stopped())?;
            }
        }
    }
    if let Some(last) = writer.take().filter(|w| !w.is_empty()) {
        packs.blocking_send(last.finish(metadata_recipient)?).map_err(|_| pipeline_stopped())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;

    #[test]
    fn list_packs_are_sealed_at_the_list_pack_size_not_the_repository_pack_size() {
        assert_eq!(list_pack_size(16 << 20), LIST_PACK_SIZE);
        assert_eq!(list_pack_size(1 << 20), 1 << 20);
    }

    #[test]
    fn a_pack_is_sealed_once_it_reaches_its_size_so_a_filling_pack_stays_bounded() {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let (blob_tx, blob_rx) = crossbeam_channel::unbounded();
        let (pack_tx, mut pack_rx) = tokio::sync::mpsc::channel(64);
        let blob = vec![7u8; 40 * 1024];
        for n in 0u32..100 {
            let id = ChunkId(*blake3::hash(&n.to_le_bytes()).as_bytes());
            let raw_length = blob.len() as u32;
            blob_tx.send(NewBlob { id, blob: blob.clone(), raw_length }).unwrap();
        }
        drop(blob_tx);
        let limit = 256 * 1024;
        run_packer(blob_rx, pack_tx, std::slice::from_ref(&recipient), &recipient, limit).unwrap();
        let mut counts = Vec::new();
        while let Ok(pack) = pack_rx.try_recv() {
            let plaintext: u64 = pack.header.entries.iter().map(|e| u64::from(e.length)).sum();
            assert!(plaintext < limit + blob.len() as u64, "{plaintext} bytes in one pack");
            counts.push(pack.header.entries.len());
        }
        // 7 blobs reach 256 KiB: 14 full packs and the last 2 blobs.
        assert_eq!(counts.iter().sum::<usize>(), 100);
        assert_eq!(counts.len(), 15, "{counts:?}");
    }
}
