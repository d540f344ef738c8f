//! Another libp2p implementation talks to lifeline: a js-libp2p peer
//! (`interop/lookup.mjs`) dials a lifeline node, pings it, reads its identify
//! record, and finds a second lifeline node through the first one's Kademlia
//! DHT (`/lifeline/kad/1.0.0`). Then it writes 8 MiB on one mesh stream
//! and pings again on the same connection.
//!
//! Needs Node.js and npm (installed on the CI machines; `npm ci` runs once per
//! change of `interop/package-lock.json`, into the cargo target folder). Where
//! they cannot be had, the test fails saying so, unless
//! `LIFELINE_SKIP_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::Daemon;

/// The js peer, with its packages installed.
fn js_peer() -> PathBuf {
    common::npm_packages("interop", &["lookup.mjs"])
}

#[test]
fn a_js_libp2p_peer_pings_identifies_and_looks_up_lifeline_nodes() {
    if std::env::var_os("LIFELINE_SKIP_INTEROP").is_some_and(|v| v == "1") {
        eprintln!("skipped: LIFELINE_SKIP_INTEROP=1");
        return;
    }
    let version = Command::new("node").arg("--version").output().map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0)
    });
    match version {
        Ok(major) if major >= 20 => {}
        Ok(major) => panic!(
            "Node.js {major} is too old for js-libp2p (20 or newer); install a newer one, or set \
             LIFELINE_SKIP_INTEROP=1"
        ),
        Err(e) => panic!(
            "cannot run node ({e}); `make setup` installs Node.js, or set LIFELINE_SKIP_INTEROP=1"
        ),
    }
    let js = js_peer();
    let root = tempfile::tempdir().unwrap();
    // Both serve the DHT (relay mode puts Kademlia in server mode; other
    // nodes do once AutoNAT finds them reachable, which loopback never is).
    let mut a = Daemon::new(root.path(), "a");
    a.args = vec!["--relay".into()];
    a.start();
    let mut b = Daemon::new(root.path(), "b");
    b.args = vec!["--relay".into()];
    b.bootstrap = vec![a.addr()];
    b.start();
    b.wait_for("b to connect to a", Duration::from_secs(30), |d| {
        d.status()["peers"].as_u64().unwrap_or(0) >= 1
    });

    let out = Command::new("node")
        .arg(js.join("lookup.mjs"))
        .arg(a.addr())
        .arg(&b.id)
        .current_dir(&js)
        .output()
        .expect("cannot run node (Node.js)");
    assert!(
        out.status.success(),
        "the js-libp2p peer failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the js peer printed no JSON ({e}):\n{stdout}"));

    assert!(
        seen["rtt_ms"].as_f64().is_some(),
        "no ping round trip: {seen}"
    );
    assert!(
        seen["agent"].as_str().unwrap().starts_with("lifeline/"),
        "identify gave no lifeline agent: {seen}"
    );
    let protocols = seen["protocols"].to_string();
    for p in [
        "/ipfs/id/1.0.0",
        "/ipfs/ping/1.0.0",
        "/lifeline/kad/1.0.0",
        "/lifeline/mesh/1",
    ] {
        assert!(
            protocols.contains(p),
            "identify did not list {p}: {protocols}"
        );
    }
    assert_eq!(
        seen["found"],
        b.id.as_str(),
        "the DHT lookup found someone else"
    );
    // Issue 23, item 14: the node's yamux grew a stream's window past 1 MiB
    // but refused frames over 1 MiB, and js-libp2p sends frames as large as
    // the window: the old node dropped the connection within a second
    // (`Decode(FrameTooLarge(2097140))`), so there was no ping after.
    assert_eq!(seen["bulk_bytes"], 4 * (2 * 1024 * 1024 + 9), "{seen}");
    assert_eq!(
        seen["connection_lost"], false,
        "the node dropped the js peer's connection during a large transfer: {seen}"
    );
    assert!(
        seen["after_bulk_rtt_ms"].as_f64().is_some(),
        "no ping after the large transfer: {seen}"
    );
    let port = format!("/tcp/{}/", b.port);
    assert!(
        seen["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains(&port)),
        "the lookup did not give b's address: {seen}"
    );
}
