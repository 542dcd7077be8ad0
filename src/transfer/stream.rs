//! Unpacking a layer while it downloads. On the first attempt at a layer, each batch
//! of bytes written to the partial is also handed to a thread that unpacks the layer
//! ([`Store::stage_layer_from`]: files staged, diff id and size checked), so a large
//! layer's unpacking overlaps its download instead of following it. The download
//! checks the blob digest (it hashes the same bytes); only then is the staged layer
//! committed.
//!
//! The stream is a shortcut, never the only path: when the download is interrupted
//! (and resumed later), or the unpacking fails for any reason, what it staged is
//! dropped and the layer is unpacked from the committed blob as before.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use bytes::{Buf, Bytes};

use crate::catalog::CatalogLayer;
use crate::store::{self, Scratch, StagedLayer, Store};

/// Batches waiting for the unpacking thread (each up to the download's write batch).
const QUEUE: usize = 8;

/// A layer being unpacked from its download.
pub(super) struct Unpacking {
    handle: tokio::task::JoinHandle<Result<StagedLayer, store::Error>>,
}

/// The download's end of the stream. Dropped without [`Feed::complete`], it tells the
/// unpacking thread the download was cut, so it fails instead of reading a short blob.
pub(super) struct Feed {
    sender: Option<SyncSender<Bytes>>,
    cut: Arc<AtomicBool>,
}

impl Unpacking {
    /// Starts unpacking `layer` from a stream; the download feeds it through the
    /// returned [`Feed`].
    pub(super) fn start(
        store: &Store,
        scratch: &Arc<Scratch>,
        layer: &CatalogLayer,
        media: &str,
    ) -> (Self, Feed) {
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        let cut = Arc::new(AtomicBool::new(false));
        let reader = FeedReader {
            receiver,
            current: Bytes::new(),
            cut: Arc::clone(&cut),
        };
        let (store, scratch) = (store.clone(), Arc::clone(scratch));
        let (layer, media) = (layer.clone(), media.to_string());
        let handle = tokio::task::spawn_blocking(move || {
            store.stage_layer_from(&scratch, reader, &layer, &media)
        });
        let feed = Feed {
            sender: Some(sender),
            cut,
        };
        (Unpacking { handle }, feed)
    }

    /// The staged layer if the unpacking finished and its checks passed; `None`
    /// otherwise (the reason is logged): the caller unpacks the committed blob.
    pub(super) async fn finish(self) -> Option<StagedLayer> {
        let failure = match self.handle.await {
            Ok(Ok(staged)) => return Some(staged),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::debug!(error = %failure, "unpacking while downloading failed: unpacking the blob");
        None
    }
}

impl Feed {
    /// Hands the unpacking thread the next bytes of the blob (waits while it is
    /// behind). Once it has stopped, the rest is not sent.
    pub(super) fn send(&mut self, chunk: &Bytes) {
        let stopped = self
            .sender
            .as_ref()
            .is_some_and(|s| s.send(chunk.clone()).is_err());
        if stopped {
            self.sender = None;
        }
    }

    /// The whole blob was sent: the stream ends here.
    pub(super) fn complete(mut self) {
        self.sender = None;
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.cut.store(true, Ordering::SeqCst);
        }
    }
}

/// The unpacking thread's end: the blob's bytes in order, then the end — or an error
/// if the download was cut.
struct FeedReader {
    receiver: Receiver<Bytes>,
    current: Bytes,
    cut: Arc<AtomicBool>,
}

impl Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.recv() {
                Ok(chunk) => self.current = chunk,
                // The sender is gone: set `cut` first if the download did not finish.
                Err(_) if self.cut.load(Ordering::SeqCst) => {
                    return Err(io::Error::other("the download was interrupted"));
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}
