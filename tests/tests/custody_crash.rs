//! Nothing lost in custody: a relay taking messages into RocksDB is killed
//! (SIGKILL) at random moments. After every kill, every message it had
//! acknowledged is back in its custody when it restarts, and none that it
//! acknowledged as delivered to it is delivered again when replayed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use lifeline_routing::{Config, Event, MessageId, Router};
use lifeline_storage::Database;
use lifeline_tests::custody::{message_id, relay_identity, to_relay, upstream, wire_message};
use rand::{RngExt, SeedableRng};

/// Messages offered per run: enough that the helper is still at work when
/// it is killed, 5 to 60 ms in, even where a synced write is nearly free
/// (1,000 took 50 ms in all on one machine, and most kills came too late).
const PER_RUN: u64 = 20_000;
const KILLS: u64 = 8;

#[test]
fn killed_relays_keep_every_message_they_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut acknowledged: BTreeSet<MessageId> = BTreeSet::new();
    let mut delivered: BTreeSet<MessageId> = BTreeSet::new();
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
        // Read while it works, so that it never waits on a full pipe: the
        // kill must find it writing to RocksDB, not blocked on stdout.
        let reader = std::thread::spawn(move || lines.collect::<Vec<String>>());
        std::thread::sleep(Duration::from_millis(rng.random_range(5..60)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let mut this_run = 0;
        for line in reader.join().unwrap() {
            if let Some(id) = line.strip_prefix("acked ") {
                acknowledged.insert(id.parse().unwrap());
                this_run += 1;
            } else if let Some(id) = line.strip_prefix("delivered ") {
                delivered.insert(id.parse().unwrap());
                this_run += 1;
            }
        }
        if !status.success() && this_run < PER_RUN {
            killed_mid_work += 1;
        }
        // Restart the relay from its database: everything acknowledged is held.
        let db = Database::open(dir.path()).unwrap();
        let mut router = Router::new(
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
        // Every message delivered before a kill, sent again: none is
        // delivered a second time.
        let up = upstream();
        router.handle_link_up(1, up, 300);
        let mut replayed = 0;
        for n in (0..(run + 1) * PER_RUN).filter(|n| to_relay(*n)) {
            if delivered.contains(&message_id(n)) {
                router.handle_packet(1, &up, &wire_message(n));
                replayed += 1;
            }
        }
        let again = std::iter::from_fn(|| router.poll_event())
            .filter(|e| matches!(e, Event::Delivered(_)))
            .count();
        assert_eq!(
            again, 0,
            "run {run}: {again} of {replayed} replays delivered again"
        );
    }
    assert!(
        killed_mid_work >= KILLS / 2,
        "only {killed_mid_work} kills landed mid-work"
    );
    assert!(!acknowledged.is_empty());
    assert!(!delivered.is_empty());
}
