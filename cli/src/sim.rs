//! `lifeline sim ...`: the simulator.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

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
            let progress = lifeline_simulator::run::progress_to_stderr("sim: ");
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
            lifeline_simulator::report::write_summary(&report, &host, &mut out)?;
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
