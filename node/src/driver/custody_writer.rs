//! The custody writer: the router's custody batches, written on a thread of
//! their own ([`lifeline_routing::Router::defer_writes`]). A synced write
//! takes a millisecond or more (tens of them on a busy SD card); on the
//! driver's task every packet that arrived meanwhile, an SOS too, waited
//! for it. Now the driver goes on routing, and what must wait for the disk
//! (custody acknowledgements) waits in the router until the thread reports
//! the write. Deliveries do not wait: the driver keeps each in its inbox
//! with its seen record, and the router writes that record after. A batch that does not sync (it takes nothing
//! into custody) is a log append: it is written at once, on the driver,
//! which costs less than the two wake-ups of a hand-over.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use lifeline_routing::{MessageStore, StoreBatch};
use lifeline_storage::RocksMessageStore;
use tokio::sync::Notify;

/// Why a batch could not be handed to the thread or its outcome not read.
const STOPPED: &str = "the custody writer thread stopped; restart the node";

/// The thread, and the two channels to it.
pub(super) struct CustodyWriter {
    /// Batches to write, one at a time (the router hands out no second one
    /// before the first is reported): `None` once closing.
    batches: Option<mpsc::Sender<StoreBatch>>,
    results: mpsc::Receiver<Result<(), String>>,
    /// The driver's own handle, for batches written at once.
    store: RocksMessageStore,
    /// Woken after each result is sent.
    done: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl CustodyWriter {
    /// Starts the thread, which writes with its own handle on the database.
    pub(super) fn start(store: RocksMessageStore) -> std::io::Result<Self> {
        let mut thread_store = store.clone();
        let (batches, to_write) = mpsc::channel::<StoreBatch>();
        let (report, results) = mpsc::channel();
        let done = Arc::new(Notify::new());
        let wake = done.clone();
        let thread = std::thread::Builder::new()
            .name("custody-writer".into())
            .spawn(move || {
                while let Ok(batch) = to_write.recv() {
                    let result = thread_store.write(&batch).map_err(|e| e.to_string());
                    if report.send(result).is_err() {
                        break;
                    }
                    wake.notify_one();
                }
            })?;
        Ok(Self {
            batches: Some(batches),
            results,
            store,
            done,
            thread: Some(thread),
        })
    }

    /// What wakes the driver when a write is done (a wake-up may find
    /// nothing: [`CustodyWriter::wait`] may have taken the result).
    pub(super) fn done(&self) -> Arc<Notify> {
        self.done.clone()
    }

    /// Writes `batch` at once if it does not sync, and says how that went;
    /// else hands it to the thread (`None`), or fails if the thread is gone.
    pub(super) fn write(&mut self, batch: StoreBatch) -> Option<Result<(), String>> {
        if !batch.needs_sync() {
            return Some(self.store.write(&batch).map_err(|e| e.to_string()));
        }
        match self.batches.as_ref().map(|b| b.send(batch)) {
            Some(Ok(())) => None,
            _ => Some(Err(STOPPED.into())),
        }
    }

    /// The outcome of the batch handed over last, if it is done.
    pub(super) fn finished(&self) -> Option<Result<(), String>> {
        match self.results.try_recv() {
            Ok(result) => Some(result),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(STOPPED.into())),
        }
    }

    /// Waits for the outcome of the batch handed over last (before a write
    /// that must not overtake it).
    pub(super) fn wait(&self) -> Result<(), String> {
        self.results.recv().unwrap_or_else(|_| Err(STOPPED.into()))
    }
}

impl Drop for CustodyWriter {
    /// Lets the thread finish what it was given, so that the database is
    /// closed after the last write.
    fn drop(&mut self) {
        self.batches = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
