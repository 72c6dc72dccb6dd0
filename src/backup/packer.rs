//! New blobs into sealed packs: one thread fills a pack writer until it reaches the
//! repository's pack size, seals it (one age stream over the blobs, then the encrypted
//! header) and hands it to the uploads.
//!
//! Guarantees: blobs keep their arrival order inside a pack; the last, partly filled pack is
//! sealed too; an empty pack is never produced.

use super::chunks::NewBlob;
use super::pipeline_stopped;
use crate::error::Result;
use crate::format::pack::{PackWriter, SealedPack};

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
