//! lifeline's own protocol between direct neighbours: one long-lived stream
//! each way per neighbour (`/lifeline/mesh/1`), carrying length-prefixed
//! [`MeshFrame`](crate::pb::mesh::MeshFrame)s: routing packets and chain sync messages.
//!
//! Each frame is preceded by its length as 4 big-endian bytes. A reader
//! checks the length against [`MAX_FRAME`] before it allocates, and a frame
//! that does not decode closes the stream (the peer is counted, never
//! trusted). Writers take frames from a bounded channel, so a slow neighbour
//! pushes back on the router instead of growing a buffer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use thiserror::Error;
use tokio::sync::mpsc;

mod codec;

pub use codec::{Frame, FrameError, MAX_APP_PAYLOAD, MAX_FRAME, decode_payload, frame_len};

/// The protocol name on libp2p streams.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/lifeline/mesh/1");

/// Frames that may wait for one neighbour's writer.
pub const WRITER_QUEUE: usize = 64;
/// Bytes of routed packets that may wait for one neighbour's writer. Small:
/// the router keeps the rest in its own queues, in priority order, so an SOS
/// that arrives behind bulk data waits for at most this much, not for 64
/// frames of it. (At 20 Mbit/s, 64 KiB is 26 ms.)
pub const WRITER_BYTES: usize = 64 * 1024;

/// One neighbour's writer: its queue, and the bytes waiting in it.
#[derive(Clone, Debug)]
pub struct Writer {
    sender: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

impl Writer {
    /// Queues `frame` unless the queue is full (sync messages: they recover).
    pub fn try_send(&self, frame: Vec<u8>) -> bool {
        let len = frame.len();
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.sender.try_send(frame).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Takes frames from `next` while fewer than [`WRITER_BYTES`] wait (at
    /// least one if none does), never taking one it cannot queue.
    pub fn fill(&self, mut next: impl FnMut() -> Option<Vec<u8>>) {
        while self.queued.load(Ordering::Relaxed) < WRITER_BYTES {
            let Ok(permit) = self.sender.try_reserve() else {
                return;
            };
            let Some(frame) = next() else { return };
            self.queued.fetch_add(frame.len(), Ordering::Relaxed);
            permit.send(frame);
        }
    }
}

/// Why a mesh stream ended.
#[derive(Debug, Error)]
pub enum MeshError {
    /// The stream failed or closed.
    #[error("mesh stream: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame that is refused.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one frame, or `None` at a clean end of stream.
pub async fn read_frame<R: futures::AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Frame>, MeshError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(len)?;
    let mut bytes = vec![0u8; len];
    reader.read_exact(&mut bytes).await?;
    Ok(Some(Frame::decode(&bytes)?))
}

/// Writes one frame with its length prefix.
pub async fn write_frame<W: futures::AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), MeshError> {
    if frame.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(frame.len()).into());
    }
    let len = u32::try_from(frame.len()).map_err(|_| FrameError::TooLarge(frame.len()))?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(frame).await?;
    writer.flush().await?;
    Ok(())
}

/// What the stream tasks tell the driver.
#[derive(Debug)]
pub enum MeshEvent {
    /// Our stream to `peer` is open: frames for it go into `sender`.
    Opened {
        /// The neighbour.
        peer: PeerId,
        /// Its writer.
        writer: Writer,
    },
    /// Opening a stream to `peer` failed.
    OpenFailed {
        /// The neighbour.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// A frame arrived from `peer`.
    Frame {
        /// The neighbour.
        peer: PeerId,
        /// The frame.
        frame: Frame,
    },
    /// `peer`'s writer sent everything it had queued.
    Drained(PeerId),
    /// A stream with `peer` ended (read or write side).
    Closed {
        /// The neighbour.
        peer: PeerId,
        /// Whether it was our stream to them (else theirs to us).
        outbound: bool,
        /// Why, if it was not a clean close.
        error: Option<String>,
    },
    /// `peer` sent something that is not a mesh frame.
    Garbage {
        /// The neighbour.
        peer: PeerId,
        /// What was wrong.
        error: String,
    },
}

/// Opens our stream to `peer` and runs its writer until the stream or the
/// driver goes away.
pub async fn run_writer(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    events: mpsc::Sender<MeshEvent>,
) {
    let mut stream: Stream = match control.open_stream(peer, PROTOCOL).await {
        Ok(s) => s,
        Err(e) => {
            let _ = events
                .send(MeshEvent::OpenFailed {
                    peer,
                    reason: e.to_string(),
                })
                .await;
            return;
        }
    };
    let (sender, mut queue) = mpsc::channel::<Vec<u8>>(WRITER_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let writer = Writer {
        sender,
        queued: queued.clone(),
    };
    if events
        .send(MeshEvent::Opened { peer, writer })
        .await
        .is_err()
    {
        return;
    }
    let mut error = None;
    while let Some(frame) = queue.recv().await {
        if let Err(e) = write_frame(&mut stream, &frame).await {
            error = Some(e.to_string());
            break;
        }
        // Ask for more once half the byte budget is free, or the queue is empty.
        let before = queued.fetch_sub(frame.len(), Ordering::Relaxed);
        let after = before.saturating_sub(frame.len());
        let low = WRITER_BYTES / 2;
        let refill = queue.is_empty() || (before >= low && after < low);
        if refill && events.send(MeshEvent::Drained(peer)).await.is_err() {
            break;
        }
    }
    let _ = stream.close().await;
    let _ = events
        .send(MeshEvent::Closed {
            peer,
            outbound: true,
            error,
        })
        .await;
}

/// Reads a neighbour's stream to us until it ends. Sending into the bounded
/// `events` channel waits while the driver is busy: that is the backpressure.
pub async fn run_reader(mut stream: Stream, peer: PeerId, events: mpsc::Sender<MeshEvent>) {
    loop {
        match read_frame(&mut stream).await {
            Ok(Some(frame)) => {
                if events.send(MeshEvent::Frame { peer, frame }).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = events
                    .send(MeshEvent::Closed {
                        peer,
                        outbound: false,
                        error: None,
                    })
                    .await;
                return;
            }
            Err(e @ MeshError::Frame(_)) => {
                let _ = events
                    .send(MeshEvent::Garbage {
                        peer,
                        error: e.to_string(),
                    })
                    .await;
                return;
            }
            Err(e) => {
                let _ = events
                    .send(MeshEvent::Closed {
                        peer,
                        outbound: false,
                        error: Some(e.to_string()),
                    })
                    .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_writer_takes_packets_only_up_to_its_byte_budget() {
        let (sender, mut queue) = mpsc::channel(WRITER_QUEUE);
        let writer = Writer {
            sender,
            queued: Arc::new(AtomicUsize::new(0)),
        };
        let mut offered = 0;
        writer.fill(|| {
            offered += 1;
            Some(vec![0; 20 * 1024])
        });
        // 60 KiB is under the 64 KiB budget, so a fourth frame goes in; no fifth.
        assert_eq!(offered, 4);
        assert_eq!(writer.queued.load(Ordering::Relaxed), 80 * 1024);
        // Small frames stop at the queue's length, and none is taken and lost.
        let (sender, _queue) = mpsc::channel(WRITER_QUEUE);
        let small = Writer {
            sender,
            queued: Arc::new(AtomicUsize::new(0)),
        };
        let mut taken = 0;
        small.fill(|| {
            taken += 1;
            Some(vec![1])
        });
        assert_eq!(taken, WRITER_QUEUE);
        // A sync message beyond the queue's length is refused, not blocked on.
        assert!(!small.try_send(vec![2]));
        assert_eq!(small.queued.load(Ordering::Relaxed), WRITER_QUEUE);
        assert_eq!(queue.try_recv().unwrap().len(), 20 * 1024);
    }

    #[test]
    fn frames_round_trip_and_empty_frames_are_refused() {
        for frame in [Frame::Packet(vec![1, 2, 3]), Frame::Sync(vec![9; 100])] {
            assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
        assert!(matches!(Frame::decode(&[]), Err(FrameError::Decode { .. })));
        assert!(matches!(
            Frame::decode(&[0xff, 0xff]),
            Err(FrameError::Decode { .. })
        ));
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_allocating() {
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let mut reader = futures::io::Cursor::new(bytes);
        let result = futures::executor::block_on(read_frame(&mut reader));
        assert!(matches!(
            result,
            Err(MeshError::Frame(FrameError::TooLarge(_)))
        ));
    }

    #[test]
    fn streams_carry_frames_in_order_and_end_cleanly() {
        let mut wire = Vec::new();
        let frames = [Frame::Packet(vec![7; 5000]), Frame::Sync(vec![1])];
        futures::executor::block_on(async {
            let mut w = futures::io::Cursor::new(&mut wire);
            for f in &frames {
                write_frame(&mut w, &f.encode()).await.unwrap();
            }
        });
        let mut r = futures::io::Cursor::new(wire);
        futures::executor::block_on(async {
            for f in &frames {
                assert_eq!(read_frame(&mut r).await.unwrap().as_ref(), Some(f));
            }
            assert_eq!(read_frame(&mut r).await.unwrap(), None);
        });
    }
}
