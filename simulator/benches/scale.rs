//! Issue 5's scale benchmark as a binary that prints figures: a scenario
//! run in the release profile, with its wall time, events per second and
//! peak memory, and, as a baseline measured in the same run, the time this
//! machine takes for 2,000 ed25519 verifications (the real crypto every
//! relay does for SOS traffic), so that runs on machines of other speeds,
//! or on a busy one, can be compared.
//!
//! `cargo bench -p lifeline-simulator --bench scale` runs
//! `simulator/scenarios/scale-10k.toml` (about two minutes);
//! `LIFELINE_SIM_SCENARIO=FILE` runs another (cargo runs a bench in its
//! package's folder; a relative path not found there is taken from the
//! workspace root, where the command was most likely typed). Under
//! `cargo test` (no
//! `--bench`) it runs `smoke.toml` and fails if an assertion of it fails,
//! to keep it working. Unlike `lifeline sim run` (the dev profile, with
//! debug assertions and overflow checks), it needs no RocksDB build.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Instant;

use lifeline_crypto::Identity;
use lifeline_simulator::report::write_summary;
use lifeline_simulator::run::{progress_to_stderr, run};
use lifeline_simulator::scenario::Scenario;

/// Seconds for 2,000 strict ed25519 verifications.
fn baseline_s() -> f64 {
    let identity = Identity::from_secret_bytes(&[7u8; 32]).unwrap();
    let signature = identity.sign(b"bench", b"a message of some length");
    let started = Instant::now();
    for _ in 0..2_000 {
        identity
            .id()
            .verify(b"bench", b"a message of some length", &signature)
            .unwrap();
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scenarios = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let path = match std::env::var_os("LIFELINE_SIM_SCENARIO") {
        Some(file) => {
            let file = PathBuf::from(file);
            let from_root = scenarios.join("../..").join(&file);
            if file.is_relative() && !file.exists() && from_root.exists() {
                from_root
            } else {
                file
            }
        }
        None if bench => scenarios.join("scale-10k.toml"),
        None => scenarios.join("smoke.toml"),
    };
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let before = baseline_s();
    let progress = progress_to_stderr("");
    let (report, host) = run(&scenario, scenario.seed, Some(progress)).unwrap();
    let baseline = (before + baseline_s()) / 2.0;
    let profile = if cfg!(debug_assertions) {
        "debug assertions on"
    } else {
        "release profile"
    };
    println!("{} (seed {}), {profile}", scenario.name, scenario.seed);
    write_summary(&report, &host, &mut std::io::stdout().lock()).unwrap();
    println!(
        "baseline: 2,000 ed25519 verifications took {:.3} s (mean of before and after); \
         the run took {:.0} times that",
        baseline,
        host.wall_s / baseline
    );
    assert!(
        report.failures.is_empty(),
        "assertions failed: {:?}",
        report.failures
    );
}
