//! What a run reports: a JSON report that the same scenario and seed
//! reproduce byte for byte, and the host's measurements (wall time, memory)
//! kept apart because they differ from run to run.

use serde::Serialize;

use crate::scenario::Assertions;

/// Per class.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassReport {
    /// P0 ... P3.
    pub class: String,
    /// Whether this class was sent as broadcasts.
    pub broadcast: bool,
    /// Messages sent.
    pub sent: u64,
    /// Messages the origin's router refused (rate limit, full custody).
    pub refused_at_source: u64,
    /// Unicast: delivered. Broadcast: reached its whole component.
    pub delivered: u64,
    /// Unicast: delivered / sent. Broadcast: mean fraction of the component reached.
    pub delivery_ratio: f64,
    /// With hostile nodes: unicast messages whose endpoints were joined by
    /// a path of honest relays (what any protocol could deliver), and the
    /// share of those delivered. Without hostile nodes, equal to `sent`
    /// and `delivery_ratio`.
    pub deliverable: u64,
    /// See `deliverable`.
    pub deliverable_ratio: f64,
    /// Delivered envelopes that opened with real crypto at the recipient.
    pub opened: u64,
    /// Unicast messages not delivered by the end but still in some node's
    /// custody (waiting for a path; nothing lost).
    pub held_at_end: u64,
    /// Unicast messages neither delivered nor held anywhere at the end.
    pub lost: u64,
    /// Latency p50, p90, p99 in ms (unicast).
    pub latency_ms: [f64; 3],
    /// Latency histogram: (upper bound ms, count) buckets.
    pub latency_histogram_ms: Vec<(f64, u64)>,
    /// Messages whose origin heard them delivered (the destination's
    /// signed receipt: P0 and P1 unicasts), and how long after sending,
    /// p50, p90, p99 in ms.
    pub receipts: u64,
    /// See `receipts`.
    pub receipt_ms: [f64; 3],
    /// Stretch against the shortest-path latency: p50, p99 (a sample of up
    /// to 300 messages; Dijkstra on the simulated links).
    pub stretch: [f64; 2],
    /// Mean hops travelled.
    pub hops_mean: f64,
    /// Mean shortest-path hop count (same sample as the stretch).
    pub shortest_hops_mean: f64,
    /// Message transmissions per delivered message (unicast) or per
    /// broadcast.
    pub transmissions_per_message: f64,
    /// What pure flooding would cost per message: one transmission per
    /// directed link.
    pub flooding_transmissions_per_message: f64,
}

/// The engine's own counts (deterministic).
#[derive(Clone, Debug, Default, Serialize)]
pub struct EngineReport {
    /// Events handled.
    pub events: u64,
    /// Packets put on links.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Simulated seconds.
    pub simulated_s: f64,
}

/// The report of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: u64,
    /// Undirected links.
    pub edges: u64,
    /// Component sizes, largest first.
    pub components: Vec<u64>,
    /// Per class.
    pub classes: Vec<ClassReport>,
    /// Routing control bytes per node per second after the warm-up.
    pub control_bytes_per_node_s: f64,
    /// Routing control bytes per node during the warm-up: what building
    /// the routing tables cost.
    pub warmup_control_bytes_per_node: f64,
    /// Destinations a node has a route to at the end, on average: the size
    /// of its routing table.
    pub routes_per_node: f64,
    /// Scoped meshes: lookups sources sent for their messages'
    /// destinations, and answers they learned (docs/routing.md).
    pub lookups_sent: u64,
    /// See `lookups_sent`.
    pub lookups_answered: u64,
    /// Most messages one node held in custody (sampled every 10 s).
    pub custody_peak: u64,
    /// Custody evictions.
    pub custody_evictions: u64,
    /// Messages that expired in custody.
    pub custody_expired: u64,
    /// Messages the router delivered more than once to one node (a unicast
    /// at its destination, a broadcast anywhere): a replay or a retry that
    /// got through its duplicate check.
    pub duplicates_delivered: u64,
    /// Node restarts from their stores (after `crash` faults).
    pub restarts: u64,
    /// Delivered envelopes that did not open.
    pub open_failures: u64,
    /// Per 10 s after the warm-up: [sent, delivered].
    pub timeline: Vec<[u64; 2]>,
    /// The chain, if the scenario runs one.
    pub chain: Option<crate::chain::ChainReport>,
    /// SOS flooders, if the scenario has any.
    pub flood: Option<FloodReport>,
    /// Sybil attackers, if the scenario has any.
    pub sybil: Option<SybilReport>,
    /// Times an honest node reported an honest neighbour as misbehaving
    /// (the daemon bans a neighbour on such reports): what a relay only
    /// passed on must never count.
    pub honest_reported: u64,
    /// Pullers, if the scenario has any: messages they asked for from
    /// custody summaries, and copies of those they got and dropped.
    pub pull: Option<[u64; 2]>,
    /// Replayers, if the scenario has any.
    pub replay: Option<ReplayReport>,
    /// Background bulk load, if the scenario has any.
    pub background: Option<BackgroundReport>,
    /// Walkers, if the scenario has any.
    pub mobility: Option<MobilityReport>,
    /// Engine counts.
    pub engine: EngineReport,
    /// Assertions that failed (empty: the run passed).
    pub failures: Vec<String>,
    /// What the HTML report draws on its map (not in the JSON).
    #[serde(skip)]
    pub map: crate::html::MapData,
}

/// What Sybil attackers sent (each broadcast from a fresh key), and what
/// reached honest nodes.
#[derive(Clone, Debug, Serialize)]
pub struct SybilReport {
    /// Attacking nodes.
    pub sybils: u64,
    /// Broadcasts they sent.
    pub sent: u64,
    /// Deliveries of those at honest nodes.
    pub delivered_to_honest: u64,
    /// `delivered_to_honest` per honest node.
    pub per_honest_node: f64,
}

/// What SOS flooders sent, and what honest nodes let through.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FloodReport {
    /// Flooding nodes.
    pub flooders: u64,
    /// SOS broadcasts they sent.
    pub sent: u64,
    /// Deliveries of those at honest nodes.
    pub delivered_to_honest: u64,
    /// What the per-origin SOS limit lets through to honest nodes: its burst
    /// plus one per interval, per flooder and honest node.
    pub allowed_to_honest: u64,
    /// `delivered_to_honest` over `allowed_to_honest` (at most 1 if the
    /// limit holds).
    pub admitted_ratio: f64,
}

/// The bulk load beside the measured traffic.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackgroundReport {
    /// The share of link capacity asked for.
    pub load: f64,
    /// Bulk messages sent (one hop each).
    pub sent: u64,
    /// Refused by the sending router (its link queue full).
    pub refused: u64,
    /// Delivered to the neighbour.
    pub delivered: u64,
    /// Everything on the links while traffic ran (bulk, measured traffic,
    /// routing, acknowledgements) over their capacity.
    pub link_utilisation: f64,
}

/// What walking did to the links.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MobilityReport {
    /// Nodes that walked.
    pub walkers: u64,
    /// Node pairs that met for the first time (new links).
    pub links_made: u64,
    /// Links that came up again.
    pub links_up: u64,
    /// Links that went down.
    pub links_down: u64,
}

/// What replayers sent again.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayReport {
    /// Replaying nodes.
    pub replayers: u64,
    /// Frames they sent again (each recorded frame to each neighbour).
    pub frames_replayed: u64,
}

/// Measurements of the machine, not of the protocol.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostReport {
    /// Wall time, seconds.
    pub wall_s: f64,
    /// Events per wall second.
    pub events_per_s: f64,
    /// Peak resident memory, MiB.
    pub peak_memory_mib: f64,
}

/// The `q` quantile of sorted values (0 if none).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Log-spaced buckets from 1 ms: (upper bound, count).
pub fn histogram(values: &[f64]) -> Vec<(f64, u64)> {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let mut bound = 1.0;
    while bound < 1e8 {
        buckets.push((bound, 0));
        bound *= 2.0;
    }
    for v in values {
        if let Some(b) = buckets.iter_mut().find(|(bound, _)| v <= bound) {
            b.1 += 1;
        }
    }
    while buckets.last().is_some_and(|(_, c)| *c == 0) {
        buckets.pop();
    }
    buckets
}

/// Writes the summary `lifeline sim run` prints: the graph, a line per
/// class, then engine, chain, flood, background, mobility and replay
/// figures where the scenario has them.
pub fn write_summary(
    report: &Report,
    host: &HostReport,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} nodes, {} links, components {:?}",
        report.nodes,
        report.edges,
        &report.components[..report.components.len().min(5)]
    )?;
    writeln!(
        out,
        "class  sent  delivered  ratio    p50 ms   p90 ms   p99 ms  stretch p99  tx/msg  shortest hops"
    )?;
    for c in &report.classes {
        let shortest = if c.broadcast {
            "  (broadcast)".to_string()
        } else {
            format!(" {:>14.2}", c.shortest_hops_mean)
        };
        writeln!(
            out,
            "{:<5} {:>5} {:>10}  {:.4} {:>8.1} {:>8.1} {:>8.1} {:>12.2} {:>7.2}{}",
            c.class,
            c.sent,
            c.delivered,
            c.delivery_ratio,
            c.latency_ms[0],
            c.latency_ms[1],
            c.latency_ms[2],
            c.stretch[1],
            c.transmissions_per_message,
            shortest
        )?;
    }
    let receipts: Vec<String> = report
        .classes
        .iter()
        .filter(|c| c.receipts > 0)
        .map(|c| {
            let [p50, p90, p99] = c.receipt_ms;
            format!("{} {p50:.1} / {p90:.1} / {p99:.1}", c.class)
        })
        .collect();
    if !receipts.is_empty() {
        writeln!(
            out,
            "receipts, from sending to the origin hearing it delivered, p50 / p90 / p99 ms: {}",
            receipts.join("; ")
        )?;
    }
    let waiting: Vec<String> = report
        .classes
        .iter()
        .filter(|c| c.held_at_end + c.lost > 0)
        .map(|c| format!("{} {} held, {} lost", c.class, c.held_at_end, c.lost))
        .collect();
    if !waiting.is_empty() {
        writeln!(
            out,
            "undelivered at the end: {} (held: still in a node's custody, waiting for a path)",
            waiting.join("; ")
        )?;
    }
    writeln!(
        out,
        "control {:.1} B/s per node ({:.0} B per node to build {:.0} routes each); custody peak {} (evicted {}); {} events in {:.1} s wall ({:.0}/s), peak memory {:.0} MiB",
        report.control_bytes_per_node_s,
        report.warmup_control_bytes_per_node,
        report.routes_per_node,
        report.custody_peak,
        report.custody_evictions,
        report.engine.events,
        host.wall_s,
        host.events_per_s,
        host.peak_memory_mib
    )?;
    if report.lookups_sent > 0 {
        writeln!(
            out,
            "lookups: {} sent by sources, {} answered by the destinations' homes",
            report.lookups_sent, report.lookups_answered
        )?;
    }
    if let Some(c) = &report.chain {
        writeln!(
            out,
            "chain: {} authorities, {} blocks, head {}, finalized >= {} everywhere; finality lag p50 {:.2} p99 {:.2} periods (votes {:.0} B/s per node); {} reorgs; {} finalized conflicts; {} equivocations caught by {} nodes; vote evidence at {} nodes; registrations {}/{}",
            c.authorities,
            c.blocks_sealed,
            c.head_max,
            c.finalized_min,
            c.finality_lag_periods[0],
            c.finality_lag_periods[1],
            c.vote_bytes_per_node_s,
            c.reorgs,
            c.finalized_conflicts,
            c.equivocations_sealed,
            c.equivocation_detected_nodes,
            c.vote_evidence_nodes,
            c.txs_registered,
            c.txs_submitted
        )?;
    }
    if let Some(f) = &report.flood {
        writeln!(
            out,
            "flood: {} flooders sent {} SOS; honest nodes received {}, {:.3} of what the per-origin limit allows",
            f.flooders, f.sent, f.delivered_to_honest, f.admitted_ratio
        )?;
    }
    if let Some(b) = &report.background {
        writeln!(
            out,
            "background: {} bulk messages at {:.0}% of link capacity ({} refused, {} delivered); links {:.0}% busy while traffic ran",
            b.sent,
            b.load * 100.0,
            b.refused,
            b.delivered,
            b.link_utilisation * 100.0
        )?;
    }
    if let Some(m) = &report.mobility {
        writeln!(
            out,
            "mobility: {} walkers made {} new links; links came up {} times again and went down {} times",
            m.walkers, m.links_made, m.links_up, m.links_down
        )?;
    }
    if let Some(y) = &report.sybil {
        writeln!(
            out,
            "sybils: {} attackers sent {} broadcasts from fresh keys; {} reached honest nodes ({:.1} per node)",
            y.sybils, y.sent, y.delivered_to_honest, y.per_honest_node
        )?;
    }
    writeln!(
        out,
        "honest neighbours reported as misbehaving by honest nodes: {}",
        report.honest_reported
    )?;
    if let Some([asked, dropped]) = report.pull {
        writeln!(
            out,
            "pullers asked for {asked} messages from custody summaries and dropped the {dropped} they got"
        )?;
    }
    if let Some(r) = &report.replay {
        writeln!(
            out,
            "replay: {} replayers sent {} recorded frames again; {} messages delivered twice",
            r.replayers, r.frames_replayed, report.duplicates_delivered
        )?;
    }
    Ok(())
}

impl Report {
    /// The scenario's assertions that this run misses, each a sentence.
    pub fn check(&self, assertions: &Assertions) -> Vec<String> {
        let mut failures = Vec::new();
        let class = |name: &str| self.classes.iter().find(|c| c.class == name);
        for (name, min) in &assertions.delivery_min {
            match class(name) {
                Some(c) if c.deliverable_ratio + 1e-12 < *min => failures.push(format!(
                    "{name} delivery {:.4} (of what honest relays could reach) is below the required {min}",
                    c.deliverable_ratio
                )),
                None => failures.push(format!(
                    "{name} delivery is asserted but no {name} traffic was sent"
                )),
                _ => {}
            }
        }
        if let Some(max) = assertions.lost_max {
            let lost: u64 = self.classes.iter().map(|c| c.lost).sum();
            if lost > max {
                failures.push(format!(
                    "{lost} messages were neither delivered nor held in any node's custody at \
                     the end; at most {max} may be"
                ));
            }
        }
        for (name, max) in &assertions.p99_latency_max_ms {
            if let Some(c) = class(name)
                && c.latency_ms[2] > *max
            {
                failures.push(format!(
                    "{name} p99 latency {:.1} ms is above the allowed {max} ms",
                    c.latency_ms[2]
                ));
            }
        }
        for (name, max) in &assertions.p99_stretch_max {
            if let Some(c) = class(name)
                && c.stretch[1] > *max
            {
                failures.push(format!(
                    "{name} p99 stretch {:.3} is above the allowed {max}",
                    c.stretch[1]
                ));
            }
        }
        for (name, max) in &assertions.transmissions_max {
            match class(name) {
                Some(c) if c.broadcast => failures.push(format!(
                    "{name} is broadcast: transmissions_max is for unicast classes"
                )),
                Some(c) if c.transmissions_per_message > max * c.shortest_hops_mean => failures
                    .push(format!(
                        "{name} took {:.2} transmissions per delivered message, {:.3} times the \
                         mean shortest path of {:.2} hops; at most {max} times is allowed",
                        c.transmissions_per_message,
                        c.transmissions_per_message / c.shortest_hops_mean,
                        c.shortest_hops_mean
                    )),
                None => failures.push(format!(
                    "{name} transmissions are asserted but no {name} traffic was sent"
                )),
                _ => {}
            }
        }
        if let Some(max) = assertions.control_bytes_per_node_s_max
            && self.control_bytes_per_node_s > max
        {
            failures.push(format!(
                "control traffic {:.1} B/s per node is above the allowed {max}",
                self.control_bytes_per_node_s
            ));
        }
        if let Some(max) = assertions.flood_admitted_max {
            match &self.flood {
                Some(f) if f.admitted_ratio > max => failures.push(format!(
                    "honest nodes received {} flood SOS, {:.3} of what the per-origin limit \
                     allows ({}); at most {max} is allowed",
                    f.delivered_to_honest, f.admitted_ratio, f.allowed_to_honest
                )),
                None => failures
                    .push("flood_admitted_max is asserted but the scenario has no flooders".into()),
                _ => {}
            }
        }
        if let Some(max) = assertions.honest_reported_max
            && self.honest_reported > max
        {
            failures.push(format!(
                "honest nodes reported honest neighbours as misbehaving {} times; at most {max} \
                 may (a relay was blamed for what it only passed on)",
                self.honest_reported
            ));
        }
        if let Some(max) = assertions.duplicates_max
            && self.duplicates_delivered > max
        {
            failures.push(format!(
                "{} messages were delivered twice to the same node; at most {max} may be \
                 (a replay or a retry got past the duplicate check)",
                self.duplicates_delivered
            ));
        }
        if let Some(chain) = &self.chain {
            self.check_chain(chain, assertions, &mut failures);
        } else if assertions.finality_lag_p99_max_periods.is_some()
            || assertions.finalized_min.is_some()
            || assertions.heal_agreement_max_periods.is_some()
            || assertions.equivocation_detected_min_nodes.is_some()
            || assertions.txs_registered_min.is_some()
        {
            failures.push("chain assertions need a [chain] section in the scenario".into());
        }
        failures
    }

    fn check_chain(
        &self,
        chain: &crate::chain::ChainReport,
        assertions: &Assertions,
        failures: &mut Vec<String>,
    ) {
        if chain.finalized_conflicts > 0 {
            failures.push(format!(
                "{} finalized blocks conflict between nodes: finality was broken",
                chain.finalized_conflicts
            ));
        }
        if let Some(max) = assertions.finality_lag_p99_max_periods
            && chain.finality_lag_periods[1] > max
        {
            failures.push(format!(
                "p99 finality lag {:.2} periods is above the allowed {max}",
                chain.finality_lag_periods[1]
            ));
        }
        if let Some(min) = assertions.finalized_min
            && chain.finalized_min < min
        {
            failures.push(format!(
                "a node finalized only up to block {}, below the required {min}",
                chain.finalized_min
            ));
        }
        if let Some(max) = assertions.heal_agreement_max_periods {
            match chain.heal_agreement_periods {
                Some(p) if p <= max => {}
                Some(p) => failures.push(format!(
                    "nodes agreed on one head {p:.2} periods after the heal, above the allowed {max}"
                )),
                None => failures.push(
                    "nodes never agreed on one head after the heal (or nothing healed)".into(),
                ),
            }
        }
        if let Some(min) = assertions.equivocation_detected_min_nodes
            && chain.equivocation_detected_nodes < min
        {
            failures.push(format!(
                "{} nodes caught the equivocating authority, fewer than the required {min}",
                chain.equivocation_detected_nodes
            ));
        }
        if let Some(min) = assertions.txs_registered_min {
            let ratio = chain.txs_registered as f64 / chain.txs_submitted.max(1) as f64;
            if ratio + 1e-12 < min {
                failures.push(format!(
                    "{} of {} registrations are on chain ({ratio:.3}), below the required {min}",
                    chain.txs_registered, chain.txs_submitted
                ));
            }
        }
    }

    /// The report as pretty JSON (same run, same bytes).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
