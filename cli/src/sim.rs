//! `lifeline sim ...`: the simulator.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use lifeline_simulator::scenario::Scenario;

/// `lifeline sim` subcommands.
#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Run a scenario and write its report
    #[command(
        after_help = "Scenarios ship in simulator/scenarios/ (see its README).\n\n\
                            Example:\n  lifeline sim run simulator/scenarios/smoke.toml --out /tmp/sim\n\n\
                            Exit status: 0 when every assertion of the scenario holds, 1 when one \
                            fails, 2 when the scenario cannot be run."
    )]
    Run {
        /// The scenario file (TOML)
        scenario: PathBuf,
        /// Override the scenario's seed
        #[arg(long)]
        seed: Option<u64>,
        /// Write report.json and host.json into this folder
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Runs a `lifeline sim` command.
pub fn run(command: SimCommand) -> Result<ExitCode> {
    match command {
        SimCommand::Run {
            scenario,
            seed,
            out,
        } => {
            let loaded = match Scenario::load(&scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let seed = seed.unwrap_or(loaded.seed);
            eprintln!("sim: {} (seed {seed})", loaded.name);
            let started = Instant::now();
            let mut last = -1i64;
            let progress = Box::new(move |done: f64| {
                let tenth = (done * 10.0).floor() as i64;
                if tenth > last && tenth <= 10 {
                    last = tenth;
                    eprintln!(
                        "sim: {:>3}% simulated after {:.1} s",
                        tenth * 10,
                        started.elapsed().as_secs_f64()
                    );
                }
            });
            let (report, host) = match lifeline_simulator::run::run(&loaded, seed, Some(progress)) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let path = dir.join("report.json");
                std::fs::write(&path, report.to_json())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                let host_path = dir.join("host.json");
                let host_json = serde_json::to_string_pretty(&host)?;
                std::fs::write(&host_path, host_json)
                    .with_context(|| format!("cannot write {}", host_path.display()))?;
                let html_path = dir.join("report.html");
                let html = lifeline_simulator::html::render(&report, &host, &report.map);
                std::fs::write(&html_path, html)
                    .with_context(|| format!("cannot write {}", html_path.display()))?;
                eprintln!(
                    "sim: wrote {}, {} and {}",
                    path.display(),
                    html_path.display(),
                    host_path.display()
                );
            }
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{} nodes, {} links, components {:?}",
                report.nodes,
                report.edges,
                &report.components[..report.components.len().min(5)]
            )?;
            writeln!(
                out,
                "class  sent  delivered  ratio    p50 ms   p90 ms   p99 ms  stretch p99  tx/msg"
            )?;
            for c in &report.classes {
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
                    if c.broadcast { "  (broadcast)" } else { "" }
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
            if let Some(c) = &report.chain {
                writeln!(
                    out,
                    "chain: {} authorities, {} blocks, head {}, finalized >= {} everywhere; finality lag p50 {:.2} p99 {:.2} periods (votes {:.0} B/s per node); {} reorgs; {} finalized conflicts; {} equivocations caught by {} nodes; registrations {}/{}",
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
            if let Some(r) = &report.replay {
                writeln!(
                    out,
                    "replay: {} replayers sent {} recorded frames again; {} messages delivered twice",
                    r.replayers, r.frames_replayed, report.duplicates_delivered
                )?;
            }
            if report.failures.is_empty() {
                writeln!(out, "all assertions hold")?;
                Ok(ExitCode::SUCCESS)
            } else {
                for f in &report.failures {
                    writeln!(out, "FAILED: {f}")?;
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
