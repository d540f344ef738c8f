//! Bulk pacing per link ([`crate::pace`]): hop delay probes, their echoes,
//! and the timers that let paced bulk go.

use super::{Event, Router};
use crate::Class;
use crate::pace::PaceConfig;
use crate::store::MessageStore;
use crate::wire::{Address, Frame};

/// How bulk is paced on one link, for metrics and the status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaceStatus {
    /// Whether bulk is held to the pace (the neighbour echoes probes).
    pub pacing: bool,
    /// The pace, in bytes per second.
    pub rate_bytes_per_s: u64,
    /// The latest queueing delay measured on the hop, in ms.
    pub delay_ms: Option<u64>,
}

impl<S: MessageStore> Router<S> {
    pub(super) fn pace_config(&self) -> PaceConfig {
        PaceConfig {
            target_ms: self.config.pace_target_ms,
            probe_interval_ms: self.config.pace_probe_ms,
            burst_bytes: 2 * self.config.bulk_mtu.max(1),
        }
    }

    /// How bulk is paced on the link to `neighbour`.
    pub fn pace(&self, neighbour: &Address) -> Option<PaceStatus> {
        let p = &self.neighbours.get(neighbour)?.pacer;
        Some(PaceStatus {
            pacing: p.pacing(),
            rate_bytes_per_s: p.rate_bytes_per_s(),
            delay_ms: p.delay_ms(),
        })
    }

    /// Whether everything waiting for `neighbour` is bulk held back by its
    /// pace (a timer lets it go: see [`Router::poll_timeout`]).
    pub fn only_paced_bulk_waits(&self, neighbour: &Address) -> bool {
        self.neighbours.get(neighbour).is_some_and(|n| {
            !n.scheduler.urgent_waiting() && n.scheduler.bulk_waiting() && n.pacer.blocked()
        })
    }

    /// A probe or an echo from `from`. A probe is echoed at once, as P0, so
    /// that its round trip measures the queues of the hop and nothing else.
    pub(super) fn handle_timing(
        &mut self,
        now: u64,
        from: Address,
        probe_ms: Option<u64>,
        echo: Option<(u64, Option<u64>)>,
    ) {
        if let Some((sent, received)) = echo
            && let Some(n) = self.neighbours.get_mut(&from)
        {
            n.pacer.handle_echo(now, sent, received);
            // The pace may have changed: bulk may go sooner, or now.
            if n.scheduler.bulk_waiting() {
                self.events.push_back(Event::LinkReady(from));
            }
        }
        if let Some(probe) = probe_ms {
            let echo = Frame::Timing {
                probe_ms: None,
                echo_ms: Some(probe),
                received_ms: Some(now),
            };
            self.queue_timing(from, echo);
        }
    }

    fn queue_timing(&mut self, to: Address, frame: Frame) {
        let bytes = frame.encode();
        let len = bytes.len() as u64;
        if self.queue_bytes(to, Class::P0, None, bytes).is_some() {
            self.stats.control_frames += 1;
            self.stats.control_bytes += len;
        }
    }

    /// Sends the probes that are due, and tells the driver about links
    /// whose bulk may go again.
    pub(super) fn pace_timeout(&mut self, now: u64) {
        let mut probes = Vec::new();
        for (address, n) in &mut self.neighbours {
            let bulk = n.scheduler.bulk_waiting();
            if let Some(sent) = n.pacer.poll_probe(now, bulk) {
                probes.push((*address, sent));
            }
            if n.pacer.take_wake(now) && bulk {
                self.events.push_back(Event::LinkReady(*address));
            }
        }
        // Sorted: the order must not depend on hashing (simulations replay).
        probes.sort_unstable();
        for (to, sent) in probes {
            let probe = Frame::Timing {
                probe_ms: Some(sent),
                echo_ms: None,
                received_ms: None,
            };
            self.queue_timing(to, probe);
        }
    }

    /// The next probe due, or the next time paced bulk may go.
    pub(super) fn pace_poll_timeout(&self) -> Option<u64> {
        self.neighbours
            .values()
            .filter_map(|n| {
                let bulk = n.scheduler.bulk_waiting();
                [n.pacer.probe_due(self.now, bulk), n.pacer.wake_at()]
                    .into_iter()
                    .flatten()
                    .min()
            })
            .min()
    }
}
