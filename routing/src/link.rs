//! Reassembly of fragments received from one neighbour.
//!
//! Fragments of one frame arrive in order (links are FIFO), but fragments of
//! different frames interleave: the sender's scheduler switches class and
//! upstream between fragments. A gap means a fragment was lost; the partial
//! frame is dropped (custody retransmission recovers messages). Bounded: at
//! most `max_frames` partial frames and `max_bytes` partial bytes; when full,
//! the oldest partial frame is dropped.

use std::collections::{BTreeMap, HashMap};

use crate::Class;
use crate::wire::{MAX_FRAME, Packet};

/// Why a fragment could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    /// The frame would be larger than any valid frame.
    #[error("fragments add up to more than the largest frame")]
    TooLarge,
    /// The fragment does not belong where it claims to (count or class
    /// changed mid-frame).
    #[error("fragment does not match the frame it continues")]
    Inconsistent,
}

#[derive(Debug)]
struct Partial {
    class: Class,
    count: u32,
    next: u32,
    bytes: Vec<u8>,
    started: u64,
}

/// Reassembles the frames of one neighbour.
#[derive(Debug)]
pub struct Reassembler {
    partial: HashMap<u64, Partial>,
    /// Partial frames by arrival, for dropping the oldest.
    order: BTreeMap<u64, u64>,
    arrivals: u64,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
    /// Partial frames dropped because of a gap or the bounds.
    pub dropped: u64,
}

impl Reassembler {
    /// A reassembler holding at most `max_frames` partial frames and
    /// `max_bytes` partial bytes.
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            partial: HashMap::new(),
            order: BTreeMap::new(),
            arrivals: 0,
            bytes: 0,
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(MAX_FRAME),
            dropped: 0,
        }
    }

    /// Bytes held in partial frames.
    pub fn partial_bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a fragment; returns the whole frame when it is complete.
    pub fn push(&mut self, packet: Packet) -> Result<Option<(Class, Vec<u8>)>, ReassemblyError> {
        if packet.count == 1 {
            if packet.data.len() > MAX_FRAME {
                return Err(ReassemblyError::TooLarge);
            }
            return Ok(Some((packet.class, packet.data)));
        }
        match self.partial.get(&packet.frame) {
            None if packet.index != 0 => {
                // The start was lost (or dropped): nothing to continue.
                self.dropped += 1;
                return Ok(None);
            }
            Some(p) if p.next != packet.index => {
                // A gap: a fragment was lost.
                self.remove(packet.frame);
                self.dropped += 1;
                return Ok(None);
            }
            Some(p) if p.count != packet.count || p.class != packet.class => {
                self.remove(packet.frame);
                return Err(ReassemblyError::Inconsistent);
            }
            _ => {}
        }
        let len = packet.data.len();
        let total = self.partial.get(&packet.frame).map_or(0, |p| p.bytes.len()) + len;
        if total > MAX_FRAME {
            self.remove(packet.frame);
            return Err(ReassemblyError::TooLarge);
        }
        if packet.index == 0 {
            while self.partial.len() >= self.max_frames || self.bytes + len > self.max_bytes {
                if !self.drop_oldest() {
                    break;
                }
            }
            self.arrivals += 1;
            self.order.insert(self.arrivals, packet.frame);
            self.partial.insert(
                packet.frame,
                Partial {
                    class: packet.class,
                    count: packet.count,
                    next: 0,
                    bytes: Vec::new(),
                    started: self.arrivals,
                },
            );
        } else {
            while self.bytes + len > self.max_bytes {
                if !self.drop_oldest_except(packet.frame) {
                    break;
                }
            }
        }
        let Some(p) = self.partial.get_mut(&packet.frame) else {
            return Ok(None);
        };
        p.bytes.extend_from_slice(&packet.data);
        p.next += 1;
        self.bytes += len;
        if p.next < p.count {
            return Ok(None);
        }
        let class = p.class;
        Ok(self.remove(packet.frame).map(|bytes| (class, bytes)))
    }

    fn remove(&mut self, frame: u64) -> Option<Vec<u8>> {
        let p = self.partial.remove(&frame)?;
        self.order.remove(&p.started);
        self.bytes -= p.bytes.len();
        Some(p.bytes)
    }

    fn drop_oldest(&mut self) -> bool {
        let Some((_, frame)) = self.order.iter().next().map(|(a, f)| (*a, *f)) else {
            return false;
        };
        self.remove(frame);
        self.dropped += 1;
        true
    }

    fn drop_oldest_except(&mut self, keep: u64) -> bool {
        let Some(frame) = self.order.values().copied().find(|f| *f != keep) else {
            return false;
        };
        self.remove(frame);
        self.dropped += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(frame: u64, index: u32, count: u32, data: &[u8]) -> Packet {
        Packet {
            frame,
            index,
            count,
            class: Class::P2,
            data: data.to_vec(),
        }
    }

    #[test]
    fn interleaved_frames_reassemble() {
        let mut r = Reassembler::new(8, 1 << 20);
        assert_eq!(r.push(packet(1, 0, 2, b"ab")), Ok(None));
        assert_eq!(r.push(packet(2, 0, 2, b"xy")), Ok(None));
        assert_eq!(
            r.push(packet(2, 1, 2, b"z")),
            Ok(Some((Class::P2, b"xyz".to_vec())))
        );
        assert_eq!(
            r.push(packet(1, 1, 2, b"c")),
            Ok(Some((Class::P2, b"abc".to_vec())))
        );
        assert_eq!(r.partial_bytes(), 0);
    }

    #[test]
    fn a_gap_drops_the_frame() {
        let mut r = Reassembler::new(8, 1 << 20);
        assert_eq!(r.push(packet(1, 0, 3, b"a")), Ok(None));
        assert_eq!(r.push(packet(1, 2, 3, b"c")), Ok(None));
        assert_eq!(r.push(packet(1, 1, 3, b"b")), Ok(None));
        assert_eq!(r.dropped, 2);
        assert_eq!(r.partial_bytes(), 0);
    }

    #[test]
    fn partial_frames_are_bounded() {
        let mut r = Reassembler::new(3, MAX_FRAME);
        for frame in 0..100 {
            assert_eq!(r.push(packet(frame, 0, 2, b"abc")), Ok(None));
        }
        assert!(r.partial.len() <= 3);
        // The newest frames are the ones kept.
        assert_eq!(
            r.push(packet(99, 1, 2, b"d")),
            Ok(Some((Class::P2, b"abcd".to_vec())))
        );
    }
}
