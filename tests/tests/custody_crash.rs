//! Nothing lost in custody: a relay taking messages into RocksDB is killed
//! (SIGKILL) at random moments. After every kill, every message it had
//! acknowledged is back in its custody when it restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use lifeline_routing::{Config, MessageId, Router};
use lifeline_storage::Database;
use lifeline_tests::custody::{message_id, relay_identity};
use rand::{RngExt, SeedableRng};

const PER_RUN: u64 = 1_000;
const KILLS: u64 = 8;

#[test]
fn killed_relays_keep_every_message_they_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut acknowledged: BTreeSet<MessageId> = BTreeSet::new();
    let mut killed_mid_work = 0;
    for run in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_custody-helper"))
            .arg(dir.path())
            .arg((run * PER_RUN).to_string())
            .arg(PER_RUN.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the helper");
        let mut lines = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok);
        assert_eq!(lines.next().as_deref(), Some("ready"));
        std::thread::sleep(Duration::from_millis(rng.random_range(5..60)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let mut this_run = 0;
        for line in lines {
            if let Some(id) = line.strip_prefix("acked ") {
                acknowledged.insert(id.parse().unwrap());
                this_run += 1;
            }
        }
        if !status.success() && this_run < PER_RUN {
            killed_mid_work += 1;
        }
        // Restart the relay from its database: everything acknowledged is held.
        let db = Database::open(dir.path()).unwrap();
        let router = Router::new(
            relay_identity(),
            Config::default(),
            db.message_store(),
            [0; 32],
            0,
        )
        .unwrap();
        let missing: Vec<_> = acknowledged.iter().filter(|id| !router.holds(id)).collect();
        assert!(
            missing.is_empty(),
            "run {run}: {} acknowledged messages lost",
            missing.len()
        );
        // And nothing is held that was never sent.
        let (held, _) = router.custody();
        assert!(held as u64 <= (run + 1) * PER_RUN);
        assert!(router.holds(&message_id(run * PER_RUN)) || this_run == 0);
    }
    assert!(
        killed_mid_work >= KILLS / 2,
        "only {killed_mid_work} kills landed mid-work"
    );
    assert!(!acknowledged.is_empty());
}
