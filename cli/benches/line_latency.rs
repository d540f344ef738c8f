//! P0 latency across five real daemons in network namespaces, A-B-C-D-E,
//! with every link limited like a radio hop (tbf: 20 Mbit/s each way; these
//! kernels have no netem, so no added delay), first on idle links, then while
//! A sends P3 bulk data to E at 80% of the links' capacity; then how much
//! bulk A gets through to E when it offers more than the links carry and no
//! P0 flows. Over TCP, then over QUIC.
//!
//! Latency is one way, A to E, as the nodes themselves record it: E's inbox
//! entry holds when A sealed the message and when E received it (one clock:
//! one machine). The bench follows E's inbox with one `lifeline inbox
//! --watch`. The baseline, measured in the same run, is the same P0 traffic
//! on idle links; the figure that matters is loaded against idle. After the
//! loaded samples, under the same load, it samples for 15 s (1 s under
//! `cargo test`), in each namespace every 100 ms, what waits below the
//! routers: TCP bytes not sent (`ss -tmi`) and the links' queues (`tc -s
//! qdisc` backlog); and it reads A's bulk pace from `lifeline peers`. Not
//! during the samples: that is two processes per namespace every 100 ms,
//! CPU that the idle phase does not pay (loaded p99 7 and 7 ms with it,
//! 5 and 6 without, in two pairs of runs: see the note on issue 24).
//!
//! The daemons log every P0 packet's way through them (`lifeline::hop`;
//! docs/operators.md), and for the idle and loaded phases and the host
//! floor the bench follows each sample through those lines: how long it
//! spent in the relays' drivers, in the writers, and below the routers
//! (from one node's write to the next node's read), with the slowest three
//! samples hop by hop. The rest of the latency measured is at the two
//! ends, to within the whole ms both stamps are in: A's driver from
//! sealing a sample (its sent time) to handing it to B's writer, and E's
//! driver from reading it to stamping its arrival (before its inbox
//! write). The daemons log two points there too (`stored`: A has the
//! sample on disk, with the time since it handed it to its router;
//! `delivered`: E's router delivered it), and the bench splits the ends
//! by them, with the sample slowest at the ends. From `stored` and
//! `delivered` it also gives each sample's time from A's router to E's to
//! the µs, and compares loaded with idle on those: with the whole-ms
//! stamps, an idle p99 of 4 ms makes the ratio of p99s move in steps of
//! 25%, the whole margin of the target.
//!
//! Two floors follow, in the same run, to tell what of the loaded figure
//! buffers cause and what they cannot: the *link floor*, P0 with the links
//! as busy as bulk made them (A's link's `tc` counters) but with a load
//! that is not lifeline's, UDP datagrams evenly spaced from each node to
//! the next (this bench, run again in each namespace with `--udp-load`):
//! a perfect pacer, so nothing waits in any queue; and the *host floor*,
//! P0 with lifeline's bulk at the same rate but the links' limits taken
//! off, so nothing queues on a link and only the work of carrying bulk
//! (five daemons, the senders, the disk, on one machine) is left.
//!
//! Bulk goes over one control connection to A, not a `lifeline send`
//! process per message (15 a second, CPU the idle phase did not pay).
//!
//! P0 is limited per origin (a burst of 3, then one per 20 s); the daemons
//! here run with `--sos-burst` raised so that one origin can give 100
//! samples per phase, sent one at a time. `cargo bench -p lifeline --bench
//! line_latency` takes 100 samples per phase (about 4 minutes per
//! transport); under `cargo test` (no `--bench`) three of each, to keep
//! it working. Needs root (network namespaces); `LIFELINE_SKIP_NETNS=1` skips
//! it. `LINE_LATENCY_ARGS` adds daemon flags, to compare settings in the
//! same way (for example `--bulk-pace-target-ms 1`), and
//! `LINE_LATENCY_TRANSPORTS` picks one transport (`TCP` or `QUIC`), and
//! `LINE_LATENCY_SAMPLES` sets the P0 samples per phase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, Line, lifeline};
use lifeline_crypto::armor::{self, Kind};
use lifeline_crypto::prekey::MAX_SIGNED_PREKEY_LEN;
use lifeline_node::mesh::HOP_TRACE;
use lifeline_node::pb::control as api;

const NODES: usize = 5;
const RATE_MBIT: u32 = 20;
/// Bulk message size; at 80% of 20 Mbit/s, one every 66 ms.
const BULK_BYTES: usize = 128 * 1024;
const LOAD: f64 = 0.8;
/// What the throughput phase offers, against the links' capacity.
const OVERLOAD: f64 = 1.2;
/// How long the throughput phase offers it; delivery is counted after the
/// first `WARMUP`.
const THROUGHPUT_SECS: u64 = 25;
const WARMUP: Duration = Duration::from_secs(5);
/// How long the loaded phase's buffers are watched, after its samples
/// (under `cargo test`, 1 s).
const BUFFER_WATCH: Duration = Duration::from_secs(15);

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Where the true p99 of what `sorted` samples lies, with 95% confidence:
/// between two of the samples, whatever the distribution, since the
/// number of samples below the true p99 is Binomial(n, 0.99). `None` for
/// an end beyond the samples: with 100 samples the true p99 is above the
/// largest one with probability 0.99^100 = 0.37, so no upper end exists,
/// and a loaded / idle ratio of p99s moves with a single sample.
fn p99_interval(sorted: &[u64]) -> (Option<u64>, Option<u64>) {
    let n = sorted.len();
    let ln_fact: Vec<f64> = (0..=n)
        .scan(0.0, |acc, k| {
            if k > 0 {
                *acc += (k as f64).ln();
            }
            Some(*acc)
        })
        .collect();
    let pmf = |k: usize| {
        (ln_fact[n] - ln_fact[k] - ln_fact[n - k]
            + k as f64 * 0.99f64.ln()
            + (n - k) as f64 * 0.01f64.ln())
        .exp()
    };
    // The r-th smallest sample is below the true p99 unless fewer than r
    // samples are: at most 2.5%.
    let (mut r, mut below) = (0, 0.0);
    for k in 0..=n {
        below += pmf(k);
        if below > 0.025 {
            break;
        }
        r = k + 1;
    }
    // The s-th smallest is above it unless s or more samples are below it.
    let (mut s, mut above) = (n + 1, 0.0);
    for k in (0..=n).rev() {
        above += pmf(k);
        if above > 0.025 {
            break;
        }
        s = k;
    }
    let lower = (r >= 1).then(|| sorted[r - 1]);
    let upper = (1..=n).contains(&s).then(|| sorted[s - 1]);
    (lower, upper)
}

/// "4 to 9 ms" of [`p99_interval`], each value shown by `ms` (whole ms,
/// or µs as ms).
fn p99_range(sorted: &[u64], ms: fn(u64) -> String) -> String {
    match p99_interval(sorted) {
        (Some(a), Some(b)) => format!("{} to {} ms", ms(a), ms(b)),
        (Some(a), None) => format!(
            "{} ms to above the largest sample ({} ms)",
            ms(a),
            ms(sorted.last().copied().unwrap_or(0))
        ),
        (None, Some(b)) => format!("below the smallest sample to {} ms", ms(b)),
        (None, None) => "anywhere (too few samples)".into(),
    }
}

/// "p50 4 ms, p90 5 ms, p99 6 ms, mean 4.3 ms" of sorted latencies. The
/// nodes record whole ms, so each latency is off by up to 1 ms either way
/// and the percentiles move in whole steps; the mean of such errors is
/// zero, so the mean shows a change smaller than 1 ms.
fn spread(sorted: &[u64]) -> String {
    let [p50, p90, p99] = [0.5, 0.9, 0.99].map(|p| percentile(sorted, p));
    let mean = sorted.iter().sum::<u64>() as f64 / sorted.len().max(1) as f64;
    format!("p50 {p50} ms, p90 {p90} ms, p99 {p99} ms, mean {mean:.1} ms")
}

/// What the daemons log here: the usual, and every P0 packet's way
/// through each node (`lifeline_node::mesh::HOP_TRACE`), from which
/// [`where_p0_waited`] tells where the samples spent their time.
fn hop_log() -> String {
    format!("{},{HOP_TRACE}=trace", common::LOG_FILTER)
}
/// A P0 packet this long or longer is a sample's. Delay probes, their
/// echoes and custody acknowledgements are tens of bytes; a sample, sealed
/// and signed, is several hundred.
const SAMPLE_PACKET: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The reader has read it from the neighbour.
    Read,
    /// The driver gave it to the neighbour's writer.
    Queued,
    /// The writer wrote it to the stream (the muxer, Noise, the kernel).
    Written,
    /// A originated the message and has it on disk (`took_us` after
    /// handing it to its router).
    Stored,
    /// E's router delivered it.
    Delivered,
}

/// One line of a node's hop trace.
struct HopEvent {
    at_us: u64,
    stage: Stage,
    /// The neighbour and the frame number on that link, of a packet's
    /// stage (empty and 0 at the ends).
    peer: String,
    frame: u64,
    /// How long the stage took, of `Stored`.
    took_us: u64,
}

/// The sample-sized P0 packets in a node's log, in the order logged.
fn hop_events(log: &str) -> Vec<HopEvent> {
    log.lines()
        .filter(|l| l.contains(HOP_TRACE))
        .filter_map(|line| {
            // The log is coloured: drop the escape sequences first.
            let mut plain = String::with_capacity(line.len());
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\x1b' {
                    chars.by_ref().find(char::is_ascii_alphabetic);
                } else {
                    plain.push(c);
                }
            }
            let mut words = plain.split_whitespace();
            let at = humantime::parse_rfc3339(words.next()?).ok()?;
            let at_us =
                u64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros()).ok()?;
            let mut words = words.skip_while(|w| !w.starts_with(HOP_TRACE)).skip(1);
            let stage = match words.next()? {
                "read" => Stage::Read,
                "queued" => Stage::Queued,
                "written" => Stage::Written,
                "stored" => Stage::Stored,
                "delivered" => Stage::Delivered,
                _ => return None,
            };
            let fields: HashMap<&str, &str> = words.filter_map(|w| w.split_once('=')).collect();
            if let Some(took) = fields.get("took_us") {
                return Some(HopEvent {
                    at_us,
                    stage,
                    peer: String::new(),
                    frame: 0,
                    took_us: took.parse().ok()?,
                });
            }
            let len: usize = fields.get("len")?.parse().ok()?;
            (len >= SAMPLE_PACKET).then_some(HopEvent {
                at_us,
                stage,
                peer: (*fields.get("peer")?).to_string(),
                frame: fields.get("frame")?.parse().ok()?,
                took_us: 0,
            })
        })
        .collect()
}

/// One sample's time (µs) in each place, summed over the hops, and per hop.
struct Waits {
    drivers: u64,
    writers: u64,
    below: u64,
    /// What the hop lines do not cover: the measured latency minus the
    /// three: A's driver from sealing the sample to queueing it, and E's
    /// from reading it to stamping its arrival.
    ends: u64,
    /// Of the ends, where the daemons log them: A from handing the sample
    /// to its router until it had it on disk, A from the same start until
    /// it queued the sample for B, and E from reading it to its router
    /// delivering it.
    end_parts: Option<[u64; 3]>,
    /// From A handing the sample to its router to E's router delivering
    /// it, to the µs: the latency without A's sealing and E's stamping,
    /// and without the whole ms the nodes' own stamps are rounded to.
    through: Option<u64>,
    /// Per hop: the sending node's driver (0 at A, where the sample starts
    /// when it is queued), its writer, then below both routers.
    hops: Vec<[u64; 3]>,
}

/// Follows the sample sent within `window` (wall µs, and its latency in
/// ms) from A to E through the nodes' hop events; `None` if a line is
/// missing.
fn follow(events: &[Vec<HopEvent>], ids: &[String], window: (u64, u64, u64)) -> Option<Waits> {
    let within = |e: &HopEvent, from: u64| e.at_us >= from && e.at_us <= window.1;
    let mut read_at: Option<u64> = None;
    let mut from = window.0;
    let mut hops = Vec::new();
    let mut first_queued = 0;
    for k in 0..ids.len() - 1 {
        let (to, here) = (&ids[k + 1], &ids[k]);
        let queued = events[k]
            .iter()
            .find(|e| e.stage == Stage::Queued && &e.peer == to && within(e, from))?;
        let written = events[k]
            .iter()
            .find(|e| e.stage == Stage::Written && &e.peer == to && e.frame == queued.frame)?;
        let read = events[k + 1].iter().find(|e| {
            e.stage == Stage::Read && &e.peer == here && e.frame == queued.frame && within(e, from)
        })?;
        hops.push([
            read_at.map_or(0, |r| queued.at_us.saturating_sub(r)),
            written.at_us.saturating_sub(queued.at_us),
            read.at_us.saturating_sub(written.at_us),
        ]);
        if k == 0 {
            first_queued = queued.at_us;
        }
        read_at = Some(read.at_us);
        from = read.at_us;
    }
    let stored = events[0]
        .iter()
        .find(|e| e.stage == Stage::Stored && within(e, window.0));
    let delivered = events[ids.len() - 1]
        .iter()
        .find(|e| e.stage == Stage::Delivered && within(e, from));
    let end_parts = stored.zip(delivered).map(|(s, d)| {
        [
            s.took_us,
            first_queued.saturating_sub(s.at_us.saturating_sub(s.took_us)),
            d.at_us.saturating_sub(from),
        ]
    });
    let through = stored
        .zip(delivered)
        .map(|(s, d)| d.at_us.saturating_sub(s.at_us.saturating_sub(s.took_us)));
    let sum = |i: usize| hops.iter().map(|h: &[u64; 3]| h[i]).sum::<u64>();
    Some(Waits {
        drivers: sum(0),
        writers: sum(1),
        below: sum(2),
        ends: (window.2 * 1000).saturating_sub(sum(0) + sum(1) + sum(2)),
        end_parts,
        through,
        hops,
    })
}

/// "p50 / p90 / p99 / max" in ms of µs values.
fn spread_us(mut values: Vec<u64>) -> String {
    values.sort_unstable();
    let [p50, p90, p99, max] =
        [0.5, 0.9, 0.99, 1.0].map(|p| percentile(&values, p) as f64 / 1000.0);
    format!("{p50:.1} / {p90:.1} / {p99:.1} / {max:.1}")
}

/// Prints where the samples sent within `windows` waited, from the
/// nodes' hop traces: in the drivers (a relay's time from reading a
/// sample to handing it to the next writer), in the writers, and below the
/// routers (from one node's write to the next node's read: the muxer,
/// Noise, both kernels and the link's queue), each summed over the hops;
/// and what is left of the latency measured (the two ends, to within the
/// whole ms the latency is measured in). Returns how many samples it
/// found in the traces, and of those it could follow from A's router to
/// E's, that time (µs, sorted).
fn where_p0_waited(
    nodes: &[Daemon],
    phase: &str,
    windows: &[(u64, u64, u64)],
) -> (usize, Vec<u64>) {
    let events: Vec<Vec<HopEvent>> = nodes.iter().map(|d| hop_events(&d.log())).collect();
    let ids: Vec<String> = nodes.iter().map(|d| d.id.clone()).collect();
    let mut followed: Vec<Waits> = windows
        .iter()
        .filter_map(|w| follow(&events, &ids, *w))
        .collect();
    if followed.is_empty() {
        println!("  {phase}: no sample found in the hop traces");
        return (0, Vec::new());
    }
    let of = |f: fn(&Waits) -> u64| spread_us(followed.iter().map(f).collect());
    println!(
        "  {phase}, where P0 waited (ms, p50 / p90 / p99 / max over {} of {} samples, each \
         summed over the hops): drivers {}, writers {}, below the routers {}; the ends, \
         outside the hop lines: {}",
        followed.len(),
        windows.len(),
        of(|w| w.drivers),
        of(|w| w.writers),
        of(|w| w.below),
        of(|w| w.ends),
    );
    let parts: Vec<[u64; 3]> = followed.iter().filter_map(|w| w.end_parts).collect();
    if !parts.is_empty() {
        let part = |i: usize| spread_us(parts.iter().map(|p| p[i]).collect());
        println!(
            "    of the ends, over {} samples: A from sending it to having it on disk {}, A \
             from sending it to queueing it for B {}, E from reading it to delivering it {}",
            parts.len(),
            part(0),
            part(1),
            part(2),
        );
    }
    let show = |what: &str, w: &Waits| {
        let hops: Vec<String> = w
            .hops
            .iter()
            .map(|[d, wr, b]| {
                format!(
                    "{:.1}+{:.1}+{:.1}",
                    *d as f64 / 1e3,
                    *wr as f64 / 1e3,
                    *b as f64 / 1e3
                )
            })
            .collect();
        let parts = w.end_parts.map_or(String::new(), |[s, q, d]| {
            format!(
                ": A {:.1} to disk and {:.1} to queueing, E {:.1}",
                s as f64 / 1e3,
                q as f64 / 1e3,
                d as f64 / 1e3
            )
        });
        println!(
            "    {what}: {:.1} ms on the hops, {:.1} ms at the ends{parts}; per hop A-B .. D-E, \
             driver+writer+below: {}",
            (w.drivers + w.writers + w.below) as f64 / 1e3,
            w.ends as f64 / 1e3,
            hops.join(", ")
        );
    };
    followed.sort_by_key(|w| std::cmp::Reverse(w.drivers + w.writers + w.below));
    for w in followed.iter().take(3) {
        show("a slowest on the hops", w);
    }
    if let Some(w) = followed.iter().max_by_key(|w| w.ends) {
        show("the slowest at the ends", w);
    }
    let mut through: Vec<u64> = followed.iter().filter_map(|w| w.through).collect();
    through.sort_unstable();
    (followed.len(), through)
}

/// "p50 / p90 / p99 ms" of sorted µs values.
fn spread_fine(sorted: &[u64]) -> String {
    let [p50, p90, p99] = [0.5, 0.9, 0.99].map(|p| percentile(sorted, p) as f64 / 1000.0);
    format!("{p50:.2} / {p90:.2} / {p99:.2} ms")
}

/// Compares `phase` with `idle`, the same P0 on the same links without
/// bulk, from A's router to E's to the µs ([`Waits::through`]).
fn compare_fine(phase: &str, idle: &[u64], other: &[u64]) {
    if idle.is_empty() || other.is_empty() {
        return;
    }
    let ratio = |p: f64| percentile(other, p) as f64 / percentile(idle, p).max(1) as f64;
    let range = p99_range(other, |us| format!("{:.2}", us as f64 / 1e3));
    println!(
        "  A's router to E's router, to the µs (hop lines; {} and {} samples): idle p50 / p90 / \
         p99 {}, {phase} {}; {phase} / idle p50 {:.2}x, p99 {:.2}x; {phase} p99 (95%) {range}",
        idle.len(),
        other.len(),
        spread_fine(idle),
        spread_fine(other),
        ratio(0.5),
        ratio(0.99),
    );
}

/// What arrived in E's inbox, as `lifeline --json inbox --watch` shows it.
#[derive(Default)]
struct Arrivals {
    /// One-way latency (ms) of each message with a short text, by text.
    latency: HashMap<String, u64>,
    /// Receive time (ms since the epoch) of each bulk message, by id.
    bulk: HashMap<String, u64>,
}

/// Follows a node's inbox until dropped. The daemon ends a watcher that
/// falls 256 messages behind (bulk of 128 KiB, 15 a second, printed as
/// JSON); then another one starts, which shows the inbox's latest first,
/// so nothing is missed.
struct Watch {
    dir: std::path::PathBuf,
    child: Mutex<Child>,
    arrivals: Arc<Mutex<Arrivals>>,
    /// What the watcher wrote to stderr, once its output ended.
    ended: Arc<Mutex<Option<String>>>,
    /// Watchers that ended and were started again.
    restarts: AtomicU64,
}

impl Watch {
    fn new(node: &Daemon) -> Self {
        let arrivals = Arc::new(Mutex::new(Arrivals::default()));
        let ended = Arc::new(Mutex::new(None));
        let child = Self::spawn(&node.dir, &arrivals, &ended);
        Self {
            dir: node.dir.clone(),
            child: Mutex::new(child),
            arrivals,
            ended,
            restarts: AtomicU64::new(0),
        }
    }

    fn spawn(
        dir: &std::path::Path,
        arrivals: &Arc<Mutex<Arrivals>>,
        ended: &Arc<Mutex<Option<String>>>,
    ) -> Child {
        let mut child = lifeline(dir)
            .args(["--json", "inbox", "--watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut err = child.stderr.take().unwrap();
        let shared = arrivals.clone();
        let end = ended.clone();
        std::thread::spawn(move || {
            let mut why = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut why);
            *end.lock().unwrap() = Some(why);
        });
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                let Ok(m) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let (Some(id), Some(text), Some(sent), Some(received)) = (
                    m["id"].as_str(),
                    m["text"].as_str(),
                    m["sent_ms"].as_u64(),
                    m["received_ms"].as_u64(),
                ) else {
                    continue;
                };
                let mut a = shared.lock().unwrap();
                if text.len() >= BULK_BYTES {
                    a.bulk.insert(id.to_string(), received);
                } else {
                    a.latency
                        .insert(text.to_string(), received.saturating_sub(sent));
                }
            }
        });
        child
    }

    /// Starts the watcher again if it ended.
    fn keep_watching(&self) {
        if self.ended.lock().unwrap().take().is_none() {
            return;
        }
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        *child = Self::spawn(&self.dir, &self.arrivals, &self.ended);
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// The one-way latency of the message `text`, once it has arrived
    /// (`None`: not within 60 s).
    fn latency(&self, text: &str) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.arrivals.lock().unwrap().latency.get(text) {
                return Some(*l);
            }
            if Instant::now() > deadline {
                return None;
            }
            self.keep_watching();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Why a message may not have been seen.
    fn state(&self) -> String {
        let restarts = self.restarts.load(Ordering::Relaxed);
        match &*self.ended.lock().unwrap() {
            Some(why) => format!("the inbox watcher had ended ({restarts} before): {why:?}"),
            None => format!("the inbox watcher was running ({restarts} ended before)"),
        }
    }

    /// Waits until no bulk has arrived for 3 s (what A still held has
    /// drained), or `limit` passed.
    fn wait_for_quiet(&self, limit: Duration) {
        let until = Instant::now() + limit;
        let count = || self.arrivals.lock().unwrap().bulk.len();
        let mut seen = count();
        while Instant::now() < until {
            std::thread::sleep(Duration::from_secs(3));
            self.keep_watching();
            let now = count();
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    /// Bulk messages received between `from_ms` and `to_ms`.
    fn bulk_between(&self, from_ms: u64, to_ms: u64) -> usize {
        self.keep_watching();
        let a = self.arrivals.lock().unwrap();
        a.bulk
            .values()
            .filter(|t| (from_ms..to_ms).contains(*t))
            .count()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Every node's last lines but the per-message ones, which crowd out what
/// tells where the line stopped (a lost connection, a ban, a warning).
fn tails(nodes: &[Daemon]) -> String {
    nodes
        .iter()
        .zip('A'..)
        .map(|(d, name)| {
            let log = d.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("message status") && !l.contains(HOP_TRACE))
                .collect();
            // A panic's backtrace would fill the tail: show what led to
            // the panic and its message instead.
            let end = lines
                .iter()
                .position(|l| l.contains(" panicked at "))
                .map_or(lines.len(), |p| (p + 3).min(lines.len()));
            let tail = lines[end.saturating_sub(20)..end].join("\n");
            format!("{name}'s log:\n{tail}\n")
        })
        .collect()
}

/// Sends `count` P0 messages A to E, one at a time, each once the one
/// before has arrived (and at least 300 ms apart: the per-neighbour P0
/// limit refills four a second); returns their one-way latencies in ms,
/// sorted, and for each in order when it was sent and seen to arrive
/// (wall µs) with its latency (ms).
fn p0_samples(
    nodes: &[Daemon],
    watch: &Watch,
    card: &std::path::Path,
    tag: &str,
    count: usize,
) -> (Vec<u64>, Vec<(u64, u64, u64)>) {
    let (a, e) = (&nodes[0], &nodes[nodes.len() - 1]);
    let mut latencies = Vec::new();
    let mut windows = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        let sent_us = wall_us();
        let text = format!("{tag} P0 sample {i}");
        let sent = a
            .send_to(e, card, &["--priority", "urgent", &text])
            .output()
            .unwrap();
        if !sent.status.success() {
            panic!(
                "sending {text:?} failed: {}\n{}",
                String::from_utf8_lossy(&sent.stderr),
                tails(nodes)
            );
        }
        let Some(latency) = watch.latency(&text) else {
            let inbox = lifeline(&e.dir)
                .args(["--json", "inbox"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(&text));
            panic!(
                "{text:?} did not arrive within 60 s; {}; in E's inbox: {inbox:?}\n{}",
                watch.state(),
                tails(nodes)
            );
        };
        latencies.push(latency);
        windows.push((sent_us, wall_us(), latency));
        if let Some(wait) = Duration::from_millis(300).checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    latencies.sort_unstable();
    (latencies, windows)
}

/// A sender of bulk messages A to E at `load` of the links' capacity, from
/// another thread, until dropped; counts what it sent. It holds one
/// control connection to A, as a program that sends files would, and does
/// not start a `lifeline send` per message: at 80% of the links that was 15
/// processes a second, CPU on this machine's two cores that the idle phase
/// did not pay (see the note on issue 24).
struct Bulk {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Bulk {
    fn start(
        a: &Daemon,
        e: &Daemon,
        card: &std::path::Path,
        file: &std::path::Path,
        load: f64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let card = std::fs::read_to_string(card).unwrap();
        let prekey = armor::decode(Kind::Card, &card, MAX_SIGNED_PREKEY_LEN).unwrap();
        let text = std::fs::read(file).unwrap();
        let socket = lifeline_node::control::default_socket(&a.dir);
        let to = e.id.clone();
        // A send is answered once A has the message on disk (a synced
        // write, which can take tens of ms): the load is spread over
        // several senders, each waiting for its answer.
        let senders = (load / 0.6).ceil().max(1.0) as u32;
        let interval = Duration::from_secs_f64(
            f64::from(senders) * (BULK_BYTES * 8) as f64 / (f64::from(RATE_MBIT) * 1e6 * load),
        );
        let (stopping, counted) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = lifeline_node::client::connect(&socket).await.unwrap();
                let tasks: Vec<_> = (0..senders)
                    .map(|k| {
                        let mut client = client.clone();
                        let (stop, sent) = (stopping.clone(), counted.clone());
                        let request = api::SendRequest {
                            to: to.clone(),
                            text: text.clone(),
                            priority: api::Priority::Bulk.into(),
                            prekey: prekey.clone(),
                            ttl_secs: 0,
                        };
                        tokio::spawn(async move {
                            let mut next = tokio::time::Instant::now() + interval * k / senders;
                            while !stop.load(Ordering::Relaxed) {
                                tokio::time::sleep_until(next).await;
                                if client.send(request.clone()).await.is_ok() {
                                    sent.fetch_add(1, Ordering::Relaxed);
                                }
                                next += interval;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
        });
        Self { stop, sent, thread }
    }

    /// Stops; returns how many messages it sent.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.sent.load(Ordering::Relaxed)
    }
}

/// The word after each `name` in `tc -s` output.
fn tc_values<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    let words = text.split_whitespace();
    words
        .clone()
        .zip(words.skip(1))
        .filter(move |(w, _)| *w == name)
        .map(|(_, value)| value)
}

/// A size as `tc -s` prints it ("15140b", "105Kb", "2Mb"), in bytes.
fn tc_bytes(text: &str) -> Option<u64> {
    let number = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let scale = match &text[number.len()..] {
        "b" | "" => 1,
        "Kb" => 1024,
        "Mb" => 1024 * 1024,
        _ => return None,
    };
    number.parse::<u64>().ok().map(|n| n * scale)
}

/// What waits below the routers in namespace `ns` now: bytes TCP has not
/// sent (`ss -tmi`, "notsent") and bytes in its links' queues (`tc -s
/// qdisc`, "backlog"), each summed over the namespace.
fn below_routers(ns: &str) -> (u64, u64) {
    let run = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let notsent = run(&["ss", "-tmiH"])
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("notsent:"))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    let qdisc = run(&["tc", "-s", "qdisc", "show"]);
    let backlog = tc_values(&qdisc, "backlog").filter_map(tc_bytes).sum();
    (notsent, backlog)
}

/// Samples [`below_routers`] in every namespace every 100 ms until
/// stopped; keeps the largest of each per namespace.
struct BufferWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u64, u64)>>,
}

impl BufferWatch {
    fn start(names: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let names = names.to_vec();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut most = vec![(0, 0); names.len()];
                while !stop.load(Ordering::Relaxed) {
                    for (ns, m) in names.iter().zip(&mut most) {
                        let (notsent, backlog) = below_routers(ns);
                        *m = (m.0.max(notsent), m.1.max(backlog));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                most
            }
        });
        Self { stop, thread }
    }

    fn stop(self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A load that is not lifeline's, for the link floor: in every namespace
/// this bench runs again (`--udp-load`), sending UDP datagrams to the next
/// node at `load` of the link's rate, evenly spaced (a perfect pacer: no
/// bursts, no queue of its own), and discarding what the node before sends.
struct UdpLoad {
    children: Vec<Child>,
}

/// The UDP port the load goes to.
const UDP_PORT: u16 = 9999;
/// Bytes per load datagram (payload; 28 more of UDP and IP).
const UDP_BYTES: usize = 1400;

impl UdpLoad {
    fn start(names: &[String], load: f64) -> Self {
        let me = std::env::current_exe().unwrap();
        let rate = f64::from(RATE_MBIT) * 1e6 * load;
        let children = names
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let to = if i + 1 < names.len() {
                    format!("10.77.{i}.2:{UDP_PORT}")
                } else {
                    "-".to_string()
                };
                std::process::Command::new("ip")
                    .args(["netns", "exec", ns])
                    .arg(&me)
                    .args(["--udp-load", &to, &format!("{rate}")])
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        Self { children }
    }
}

impl Drop for UdpLoad {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `--udp-load` process: discards what arrives on [`UDP_PORT`] and,
/// unless `to` is `-`, sends datagrams there at `rate` bits per second
/// (counting UDP and IP headers) until killed.
fn udp_load(to: &str, rate: f64) {
    let sink = std::net::UdpSocket::bind(("0.0.0.0", UDP_PORT)).unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while sink.recv(&mut buf).is_ok() {}
    });
    if to == "-" {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect(to).unwrap();
    let datagram = vec![0u8; UDP_BYTES];
    let interval = Duration::from_secs_f64((UDP_BYTES + 28) as f64 * 8.0 / rate);
    let mut next = Instant::now();
    loop {
        next += interval;
        let now = Instant::now();
        if let Some(wait) = next.checked_duration_since(now) {
            std::thread::sleep(wait);
        } else if now.duration_since(next) > interval * 4 {
            // Woken late: start again from now rather than burst.
            next = now;
        }
        // A full queue (ENOBUFS) only means the link is busier than aimed.
        let _ = socket.send(&datagram);
    }
}

/// How busy the link from A to B is over a span: what it sent, headers
/// too (`tc -s qdisc`, "Sent"), against what it can carry.
struct WireLoad {
    sent: u64,
    started: Instant,
}

impl WireLoad {
    fn start(names: &[String]) -> Self {
        Self {
            sent: Self::sent(names),
            started: Instant::now(),
        }
    }

    fn sent(names: &[String]) -> u64 {
        let out = std::process::Command::new("tc")
            .args(["-n", &names[0], "-s", "qdisc", "show", "dev", "v0l"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        tc_values(&text, "Sent")
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The share of the link's capacity it carried since the start.
    fn load(&self, names: &[String]) -> f64 {
        Self::sent(names).saturating_sub(self.sent) as f64 * 8.0
            / (self.started.elapsed().as_secs_f64() * f64::from(RATE_MBIT) * 1e6)
    }
}

fn wall_ms() -> u64 {
    wall_us() / 1000
}

fn wall_us() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

fn run(transport: &str, listen: &str, prefix: &str, samples: usize, throughput: bool) {
    let Some(line) = Line::for_test(prefix, NODES) else {
        return;
    };
    line.shape(RATE_MBIT).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--listen".to_string(),
        listen.to_string(),
        "--sos-burst".to_string(),
        "100000".to_string(),
        "--sos-interval-secs".to_string(),
        "1".to_string(),
    ];
    // More daemon flags to compare settings, e.g.
    // LINE_LATENCY_ARGS="--bulk-pace-target-ms 1".
    if let Ok(more) = std::env::var("LINE_LATENCY_ARGS") {
        args.extend(more.split_whitespace().map(str::to_string));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let nodes = line.start_daemons_logging(root.path(), &args, &hop_log());
    let (a, e) = (&nodes[0], &nodes[NODES - 1]);
    a.wait_for_route(e, Duration::from_secs(90));
    let card = e.card_file(root.path());
    let watch = Watch::new(e);

    let (idle, idle_windows) = p0_samples(&nodes, &watch, &card, "idle", samples);

    let file = root.path().join("bulk.txt");
    std::fs::write(&file, "x".repeat(BULK_BYTES)).unwrap();
    let bulk = Bulk::start(a, e, &card, &file, LOAD);
    // Let the load build queues along the line, then measure under it.
    std::thread::sleep(Duration::from_secs(10));
    let started = Instant::now();
    let meter = WireLoad::start(&line.names);
    let (loaded, loaded_windows) = p0_samples(&nodes, &watch, &card, "loaded", samples);
    let wire = meter.load(&line.names);
    // What waits below the routers, under the same load but after the
    // samples: the watch starts two processes per namespace every 100 ms,
    // CPU that the idle phase and the floors do not pay.
    let watched = if throughput {
        BUFFER_WATCH
    } else {
        Duration::from_secs(1)
    };
    let buffers = BufferWatch::start(&line.names);
    std::thread::sleep(watched);
    let below = buffers.stop();
    // A paces its bulk to B: the neighbour echoes its delay probes.
    let peers = common::json(&a.dir, &["peers"]);
    let paces: Vec<(u64, Option<f64>)> = peers
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["mesh"] == true)
        .map(|p| {
            (
                p["bulk_pace_bytes_per_s"].as_u64().unwrap_or(0),
                p["hop_queue_ms"].as_f64(),
            )
        })
        .collect();
    let load_secs = started.elapsed().as_secs_f64() + 10.0;
    let offered = bulk.stop();
    let fraction =
        (offered as f64 * (BULK_BYTES * 8) as f64) / (load_secs * f64::from(RATE_MBIT) * 1e6);
    println!(
        "line_latency over {transport}: {NODES} daemons in a line, links limited to {RATE_MBIT} \
         Mbit/s, A to E (4 hops)"
    );
    println!("  P0 idle:   {} ({} samples)", spread(&idle), idle.len());
    println!(
        "  P0 loaded: {} ({} samples) while A offered P3 at {:.0}% of link capacity (aimed at \
         {:.0}%: {offered} bulk messages of {} KiB in {load_secs:.1}s)",
        spread(&loaded),
        loaded.len(),
        fraction * 100.0,
        LOAD * 100.0,
        BULK_BYTES / 1024,
    );
    println!(
        "  loaded / idle: p50 {:.2}x, p99 {:.2}x",
        percentile(&loaded, 0.5) as f64 / percentile(&idle, 0.5).max(1) as f64,
        percentile(&loaded, 0.99) as f64 / percentile(&idle, 0.99).max(1) as f64
    );
    println!(
        "  where the true P0 p99 lies (95%, from the samples' order): idle {}, loaded {}",
        p99_range(&idle, |v| v.to_string()),
        p99_range(&loaded, |v| v.to_string())
    );
    println!(
        "  below the routers, most seen per node A..E in {} s after the loaded samples, same \
         load: TCP not sent {:?} B, link queues (tc backlog) {:?} B",
        watched.as_secs(),
        below.iter().map(|b| b.0).collect::<Vec<_>>(),
        below.iter().map(|b| b.1).collect::<Vec<_>>(),
    );
    let (idle_traced, idle_fine) = where_p0_waited(&nodes, "idle", &idle_windows);
    let (loaded_traced, loaded_fine) = where_p0_waited(&nodes, "loaded", &loaded_windows);
    compare_fine("loaded", &idle_fine, &loaded_fine);
    let traced = idle_traced + loaded_traced;
    assert!(
        throughput || !(idle_fine.is_empty() || loaded_fine.is_empty()),
        "no P0 sample followed from A's router to E's in the hop traces (stored, delivered)"
    );
    // Under `cargo test` the daemons are this code, so their traces must
    // be there (a bench run may compare daemons built before them).
    assert!(
        throughput || traced > 0,
        "no P0 sample found in the daemons' hop traces (lifeline::hop)"
    );
    println!("  A's bulk pace and hop queue per neighbour (B/s, ms): {paces:?}");
    assert!(
        paces.iter().any(|p| p.0 > 0),
        "A paces nothing while bulk flows: {peers}"
    );
    println!(
        "  A to B's link carried {:.0}% of its capacity while loaded (everything, headers too)",
        wire * 100.0
    );
    if throughput {
        // Let what the load phase left in the queues drain first.
        std::thread::sleep(Duration::from_secs(15));
        let bulk = Bulk::start(a, e, &card, &file, OVERLOAD);
        let from = wall_ms() + u64::try_from(WARMUP.as_millis()).unwrap();
        let until = Instant::now() + Duration::from_secs(THROUGHPUT_SECS);
        while Instant::now() < until {
            watch.keep_watching();
            std::thread::sleep(Duration::from_millis(100));
        }
        let to = wall_ms();
        let offered = bulk.stop();
        let delivered = watch.bulk_between(from, to);
        let secs = (to - from) as f64 / 1000.0;
        let share = (delivered * BULK_BYTES * 8) as f64 / (secs * f64::from(RATE_MBIT) * 1e6);
        println!(
            "  P3 alone: {delivered} bulk messages of {} KiB reached E in {secs:.1}s, {:.0}% of \
             link capacity in payload (A offered {offered} in {THROUGHPUT_SECS}s, {:.0}% aimed)",
            BULK_BYTES / 1024,
            share * 100.0,
            OVERLOAD * 100.0
        );
    }
    // The two floors under the loaded figure, last: after a spell without
    // limits, bulk over TCP got a third of the link for at least 35 s once
    // they were back (cause not found; see the note on issue 24), so
    // nothing measured after them would be comparable. The link floor: the same links
    // as busy, but with a load that is not lifeline's and perfectly paced,
    // so nothing of it waits anywhere. The host floor: lifeline's bulk at
    // the same rate through the same daemons, over links without limits,
    // so that only the work of carrying it is left.
    watch.wait_for_quiet(Duration::from_secs(90));
    let udp = UdpLoad::start(&line.names, wire);
    std::thread::sleep(Duration::from_secs(3));
    let meter = WireLoad::start(&line.names);
    let (link, _) = p0_samples(&nodes, &watch, &card, "link floor", samples);
    let udp_wire = meter.load(&line.names);
    drop(udp);
    line.unshape().unwrap();
    let (free_idle, free_windows) = p0_samples(&nodes, &watch, &card, "unlimited idle", samples);
    let bulk = Bulk::start(a, e, &card, &file, LOAD);
    std::thread::sleep(Duration::from_secs(5));
    let (host, host_windows) = p0_samples(&nodes, &watch, &card, "host floor", samples);
    bulk.stop();
    line.shape(RATE_MBIT).unwrap();
    println!(
        "  link floor, the links as busy with a paced load not lifeline's ({:.0}% carried): \
         P0 {}",
        udp_wire * 100.0,
        spread(&link)
    );
    println!(
        "  host floor, links unlimited: P0 idle {}; with the same bulk {}",
        spread(&free_idle),
        spread(&host)
    );
    let (_, free_fine) = where_p0_waited(&nodes, "unlimited idle", &free_windows);
    let (_, host_fine) = where_p0_waited(&nodes, "host floor", &host_windows);
    compare_fine("host floor", &free_fine, &host_fine);
    assert!(
        udp_wire > wire / 2.0,
        "the link floor's load did not load the link: {:.0}% carried, {:.0}% aimed",
        udp_wire * 100.0,
        wire * 100.0
    );
    let restarts = watch.restarts.load(Ordering::Relaxed);
    if restarts > 0 {
        println!("  (E's inbox watcher fell behind and was started again {restarts} times)");
    }
    drop(watch);
    drop(nodes);
    drop(line);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--udp-load") {
        udp_load(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let samples = if bench { 100 } else { 3 };
    let samples = std::env::var("LINE_LATENCY_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(samples);
    // LINE_LATENCY_TRANSPORTS="TCP" runs one transport, to compare settings
    // faster.
    let only = std::env::var("LINE_LATENCY_TRANSPORTS").unwrap_or_default();
    let wanted = |t: &str| only.is_empty() || only.split(',').any(|o| o.eq_ignore_ascii_case(t));
    if wanted("TCP") {
        run("TCP", "/ip4/0.0.0.0/tcp/4100", "lt", samples, bench);
    }
    if wanted("QUIC") {
        run(
            "QUIC",
            "/ip4/0.0.0.0/udp/4100/quic-v1",
            "lq",
            samples,
            bench,
        );
    }
}
