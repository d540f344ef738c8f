//! Bulk pacing per link ([`crate::pace`]): hop delay probes, their echoes,
//! and the timers that let paced bulk go.

use super::{Event, Router};
use crate::Class;
use crate::pace::PaceConfig;
use crate::store::MessageStore;
use crate::wire::{Address, Frame, TimeUnit};

/// How bulk is paced on one link, for metrics and the status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaceStatus {
    /// Whether bulk is held to the pace (the neighbour echoes probes).
    pub pacing: bool,
    /// The pace, in bytes per second.
    pub rate_bytes_per_s: u64,
    /// The latest queueing delay measured on the hop, in µs.
    pub delay_us: Option<u64>,
}

impl<S: MessageStore> Router<S> {
    pub(super) fn pace_config(&self) -> PaceConfig {
        PaceConfig {
            target_us: self.config.pace_target_us,
            probe_interval_us: self.config.pace_probe_ms.saturating_mul(1000),
            burst_bytes: 2 * self.config.bulk_mtu.max(1),
        }
    }

    /// How bulk is paced on the link to `neighbour`.
    pub fn pace(&self, neighbour: &Address) -> Option<PaceStatus> {
        let p = &self.neighbours.get(neighbour)?.pacer;
        Some(PaceStatus {
            pacing: p.pacing(),
            rate_bytes_per_s: p.rate_bytes_per_s(),
            delay_us: p.delay_us(),
        })
    }

    /// Whether everything waiting for `neighbour` is bulk held back by its
    /// pace (a timer lets it go: see [`Router::poll_timeout`]).
    pub fn only_paced_bulk_waits(&self, neighbour: &Address) -> bool {
        self.neighbours.get(neighbour).is_some_and(|n| {
            !n.scheduler.urgent_waiting() && n.scheduler.bulk_waiting() && n.pacer.blocked()
        })
    }

    /// A probe or an echo from `from`, its times in `unit`. A probe is
    /// echoed at once, as P0, so that its round trip measures the queues
    /// of the hop and nothing else, in the unit it came in (a node from
    /// before µs probes sends ms). Probes from here are in µs, so only an
    /// echo in µs can be one of theirs.
    pub(super) fn handle_timing(
        &mut self,
        from: Address,
        unit: TimeUnit,
        probe: Option<u64>,
        echo: Option<(u64, Option<u64>)>,
    ) {
        let now = self.pace_now();
        if let Some((sent, received)) = echo
            && unit == TimeUnit::Us
            && let Some(n) = self.neighbours.get_mut(&from)
        {
            n.pacer.handle_echo(now, sent, received);
            // The pace may have changed: bulk may go sooner, or now.
            if n.scheduler.bulk_waiting() {
                self.events.push_back(Event::LinkReady(from));
            }
        }
        if let Some(probe) = probe {
            let received = match unit {
                TimeUnit::Us => now,
                TimeUnit::Ms => now / 1000,
            };
            let echo = Frame::Timing {
                unit,
                probe: None,
                echo: Some(probe),
                received: Some(received),
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
                unit: TimeUnit::Us,
                probe: Some(sent),
                echo: None,
                received: None,
            };
            self.queue_timing(to, probe);
        }
    }

    /// The next probe due, or the next time paced bulk may go, in ms
    /// (rounded up: at that ms, it is due).
    pub(super) fn pace_poll_timeout(&self) -> Option<u64> {
        let now = self.pace_now();
        self.neighbours
            .values()
            .filter_map(|n| {
                let bulk = n.scheduler.bulk_waiting();
                [n.pacer.probe_due(now, bulk), n.pacer.wake_at()]
                    .into_iter()
                    .flatten()
                    .min()
            })
            .min()
            .map(|us| us.div_ceil(1000))
    }
}
