//! The disk writer: the router's custody batches and the inbox's entries,
//! written on a thread of their own, in the order they were handed over.
//!
//! A synced write takes a millisecond or more (tens of them on a busy SD
//! card). On the driver's task, every packet that arrived meanwhile waited
//! for it, an SOS too, and so did everything this node relays: a node that
//! received bulk messages stopped routing for a sync each. Now the driver
//! goes on routing:
//!
//! - **Custody batches** ([`lifeline_routing::Router::defer_writes`]): what
//!   must wait for the disk (custody acknowledgements) waits in the router
//!   until the thread reports the write. A batch that does not sync (it
//!   takes nothing into custody) is a log append: it is written at once, on
//!   the driver, which costs less than the two wake-ups of a hand-over.
//! - **Inbox entries** ([`Keep`]): a delivery is shown to no one and
//!   acknowledged to no one until its entry, the record that refuses its
//!   envelope's replay and the router's seen record are on disk together.
//!   The driver hands the router's next batch out only once every entry
//!   handed over before it is reported ([`DiskWriter::keeping`]), so the
//!   router's copy of a seen record never reaches the disk before the entry
//!   it stands for, and an entry that could not be written can still be
//!   taken back from the router ([`lifeline_routing::Router::delivery_not_kept`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use lifeline_routing::{Address, Class, MessageId, MessageStore, SeenRecord, StoreBatch};
use lifeline_storage::{Inbox, OpenedRecord, RocksMessageStore};
use prost::Message as _;
use tokio::sync::Notify;
use tracing::warn;

use super::INBOX_KEEP;
use super::inbox::forget_old_envelopes;
use crate::pb::control as api;

/// Why a job could not be handed to the thread or its outcome not read.
const STOPPED: &str = "the disk writer thread stopped; restart the node";

/// Inbox entries that may be handed over and not yet reported. Past this,
/// the driver waits for the disk (a node delivered more than its disk
/// keeps up with); each holds at most one message.
pub(super) const KEEPING_MAX: usize = 32;

/// Inbox entries between two tidyings of the inbox ([`tidy`]).
const HOUSEKEEPING_EVERY: u64 = 256;

/// Trims the inbox to its newest [`INBOX_KEEP`] entries and forgets the
/// records of envelopes too old to be opened again. On this thread: with
/// a full inbox it reads every entry, and on the driver's it held
/// everything up (up to 161 ms for an SOS at a bulk destination in
/// line_latency's host floor).
fn tidy(inbox: &Inbox, now_ms: u64) {
    if let Err(e) = inbox.trim(INBOX_KEEP) {
        warn!("cannot trim the inbox: {e}");
    }
    forget_old_envelopes(inbox, now_ms);
}

/// An inbox entry to write, and what follows once it is on disk.
#[derive(Debug)]
pub(super) struct Keep {
    /// Its key in the inbox (arrival time, big-endian, then the id).
    pub(super) key: Vec<u8>,
    pub(super) entry: api::InboxMessage,
    /// The router's delivery.
    pub(super) id: MessageId,
    /// The envelope it came in, whose replay is refused from now on.
    pub(super) opened: Option<OpenedRecord>,
    /// The router's record that it was delivered here.
    pub(super) seen: Option<SeenRecord>,
    /// Who gets a receipt once it is on disk (a sealed message's sender).
    pub(super) receipt_to: Option<Address>,
    /// A signed unicast's class and signer, who gets the router's receipt
    /// once it is on disk ([`lifeline_routing::Config::receipt_on_delivery`]).
    pub(super) signed_by: Option<(Class, Address)>,
}

enum Job {
    Batch(StoreBatch),
    Keep(Box<Keep>),
}

/// What the thread sends back for a job.
enum Reply {
    Batch(Result<(), String>),
    Keep(Box<Keep>, Result<(), String>),
}

/// A job handed over and not yet reported: what the driver must hear about
/// it even if the thread is gone.
#[derive(Debug)]
enum Out {
    Batch,
    Keep {
        id: MessageId,
        envelope: Option<[u8; 16]>,
    },
}

/// A job the thread finished, in the order they were handed over.
#[derive(Debug)]
pub(super) enum Done {
    /// The custody batch handed over last, and how its write went.
    Batch(Result<(), String>),
    /// An inbox entry is on disk.
    Kept(Box<Keep>),
    /// An inbox entry could not be written: delivery `id`, which came in
    /// envelope `envelope`.
    NotKept {
        id: MessageId,
        envelope: Option<[u8; 16]>,
        error: String,
    },
}

/// The thread, and the two channels to it.
pub(super) struct DiskWriter {
    /// Jobs to write, in order: `None` once closing.
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<Reply>,
    /// The driver's own handle, for batches written at once.
    store: RocksMessageStore,
    /// Jobs handed over and not yet reported, oldest first.
    out: VecDeque<Out>,
    /// Of those, inbox entries.
    keeping: usize,
    /// Woken after each result is sent.
    done: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl DiskWriter {
    /// Starts the thread, which writes with its own handles on the database.
    pub(super) fn start(store: RocksMessageStore, inbox: Inbox) -> std::io::Result<Self> {
        let mut thread_store = store.clone();
        let (jobs, to_write) = mpsc::channel::<Job>();
        let (report, results) = mpsc::channel();
        let done = Arc::new(Notify::new());
        let wake = done.clone();
        let thread = std::thread::Builder::new()
            .name("disk-writer".into())
            .spawn(move || {
                let mut kept = 0u64;
                while let Ok(job) = to_write.recv() {
                    let reply = match job {
                        Job::Batch(batch) => {
                            Reply::Batch(thread_store.write(&batch).map_err(|e| e.to_string()))
                        }
                        Job::Keep(keep) => {
                            let result = inbox
                                .put(
                                    &keep.key,
                                    &keep.entry.encode_to_vec(),
                                    keep.opened.as_ref(),
                                    keep.seen.as_ref(),
                                )
                                .map_err(|e| e.to_string());
                            kept += 1;
                            if result.is_ok() && kept.is_multiple_of(HOUSEKEEPING_EVERY) {
                                tidy(&inbox, keep.entry.received_ms);
                            }
                            Reply::Keep(keep, result)
                        }
                    };
                    if report.send(reply).is_err() {
                        break;
                    }
                    wake.notify_one();
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            results,
            store,
            out: VecDeque::new(),
            keeping: 0,
            done,
            thread: Some(thread),
        })
    }

    /// What wakes the driver when a job is done (a wake-up may find
    /// nothing: [`DiskWriter::wait`] may have taken the result).
    pub(super) fn done(&self) -> Arc<Notify> {
        self.done.clone()
    }

    /// Inbox entries handed over and not yet reported: while there are
    /// any, the router's next batch waits (see the module doc).
    pub(super) fn keeping(&self) -> usize {
        self.keeping
    }

    /// Writes `batch` at once if it does not sync, and says how that went;
    /// else hands it to the thread (`None`), or fails if the thread is gone.
    pub(super) fn write(&mut self, batch: StoreBatch) -> Option<Result<(), String>> {
        if !batch.needs_sync() {
            return Some(self.store.write(&batch).map_err(|e| e.to_string()));
        }
        if self.hand_over(Job::Batch(batch), Out::Batch) {
            None
        } else {
            Some(Err(STOPPED.into()))
        }
    }

    /// Hands an inbox entry to the thread; reported later as
    /// [`Done::Kept`] or [`Done::NotKept`]. False if the thread is gone.
    pub(super) fn keep(&mut self, keep: Keep) -> bool {
        let out = Out::Keep {
            id: keep.id,
            envelope: keep.opened.map(|o| o.id),
        };
        let handed = self.hand_over(Job::Keep(Box::new(keep)), out);
        if handed {
            self.keeping += 1;
        }
        handed
    }

    fn hand_over(&mut self, job: Job, out: Out) -> bool {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if sent {
            self.out.push_back(out);
        }
        sent
    }

    /// The next job done, if one is.
    pub(super) fn finished(&mut self) -> Option<Done> {
        if self.out.is_empty() {
            return None;
        }
        match self.results.try_recv() {
            Ok(reply) => Some(self.report(Some(reply))),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(self.report(None)),
        }
    }

    /// Waits for the next job handed over to be done; `None` if none is out.
    pub(super) fn wait(&mut self) -> Option<Done> {
        if self.out.is_empty() {
            return None;
        }
        let reply = self.results.recv().ok();
        Some(self.report(reply))
    }

    /// What the oldest job out came to: `reply`, or with none (the thread
    /// is gone), a failure.
    fn report(&mut self, reply: Option<Reply>) -> Done {
        let out = self.out.pop_front();
        if matches!(out, Some(Out::Keep { .. })) {
            self.keeping -= 1;
        }
        match (reply, out) {
            (Some(Reply::Batch(result)), _) => Done::Batch(result),
            (Some(Reply::Keep(keep, Ok(()))), _) => Done::Kept(keep),
            (Some(Reply::Keep(keep, Err(error))), _) => Done::NotKept {
                id: keep.id,
                envelope: keep.opened.map(|o| o.id),
                error,
            },
            (None, Some(Out::Keep { id, envelope })) => Done::NotKept {
                id,
                envelope,
                error: STOPPED.into(),
            },
            (None, _) => Done::Batch(Err(STOPPED.into())),
        }
    }
}

impl Drop for DiskWriter {
    /// Lets the thread finish what it was given, so that the database is
    /// closed after the last write.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use lifeline_storage::Database;

    use super::*;

    fn keep(n: u8) -> Keep {
        Keep {
            key: vec![n],
            entry: api::InboxMessage {
                id: format!("m{n}"),
                ..api::InboxMessage::default()
            },
            id: MessageId([n; 16]),
            opened: None,
            seen: None,
            receipt_to: None,
            signed_by: None,
        }
    }

    /// Entries and batches are reported in the order they were handed
    /// over, each entry on disk once reported, and `keeping` counts the
    /// entries out (the driver takes no batch while it is above 0).
    #[test]
    fn jobs_are_reported_in_order_and_entries_are_on_disk_when_reported() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let mut writer = DiskWriter::start(db.message_store(), db.inbox()).unwrap();
        assert!(writer.keep(keep(1)));
        let batch = StoreBatch {
            puts: vec![(MessageId([9; 16]), vec![1, 2, 3])],
            ..StoreBatch::default()
        };
        assert!(batch.needs_sync());
        assert!(
            writer.write(batch).is_none(),
            "a synced batch is handed over"
        );
        assert!(writer.keep(keep(2)));
        assert_eq!(writer.keeping(), 2);
        let mut order = Vec::new();
        while let Some(done) = writer.wait() {
            order.push(match done {
                Done::Kept(k) => {
                    let inbox = db.inbox().newest(10).unwrap();
                    assert!(
                        inbox.iter().any(|(key, _)| *key == k.key),
                        "{} reported before it was on disk",
                        k.entry.id
                    );
                    k.entry.id
                }
                Done::Batch(result) => {
                    result.unwrap();
                    "batch".to_string()
                }
                Done::NotKept { error, .. } => panic!("{error}"),
            });
        }
        assert_eq!(order, ["m1", "batch", "m2"]);
        assert_eq!(writer.keeping(), 0);
        assert!(writer.finished().is_none());
    }
}
