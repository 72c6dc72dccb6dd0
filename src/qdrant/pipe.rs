//! A bounded in-memory pipe from a blocking `Write` (restore's writer thread) to an async
//! byte stream (an HTTP body), whose stream ends in an error unless the writer finished.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// Bytes per piece handed to the body, and pieces in flight: bounds memory at ~1 MiB.
const PIECE: usize = 256 * 1024;
const PIECES_IN_FLIGHT: usize = 4;

/// The two ends: give the writer to `restore_stream`, the stream to the HTTP body.
pub(crate) fn pipe(
) -> (UploadWriter, impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(PIECES_IN_FLIGHT);
    let finished = Arc::new(AtomicBool::new(false));
    let writer =
        UploadWriter { tx, buf: BytesMut::with_capacity(PIECE), finished: Arc::clone(&finished) };
    (writer, upload_body(rx, finished))
}

/// The `Write` end of the upload: pieces go through a bounded channel to the HTTP body.
/// Unless [`finish`](Self::finish) is called, the body ends in an error, so a restore that
/// fails (or panics) half-way can never look like a complete snapshot to Qdrant.
pub(crate) struct UploadWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: BytesMut,
    finished: Arc<AtomicBool>,
}

impl UploadWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = self.buf.split().freeze();
        // Runs on restore's blocking writer thread, where blocking on the channel is right.
        self.tx.blocking_send(piece).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload to Qdrant stopped")
        })
    }

    /// Marks the stream complete (after every check passed) and closes the body.
    pub(crate) fn finish(self) {
        self.finished.store(true, Ordering::SeqCst);
    }
}

impl Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

fn upload_body(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    finished: Arc<AtomicBool>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(Some(rx), move |rx| {
        let finished = finished.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(piece) => Some((Ok(piece), Some(rx))),
                None if finished.load(Ordering::SeqCst) => None,
                None => Some((
                    Err(std::io::Error::other(
                        "qvault aborted the upload: the restored stream failed a check",
                    )),
                    None,
                )),
            }
        }
    })
}
