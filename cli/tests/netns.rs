//! Real multi-hop: five network namespaces in a line A-B-C-D-E, each joined
//! to the next by a veth pair, so that each node sees only its neighbours and
//! finds them by mDNS. A message from A reaches E through three relays; with
//! the C-D link cut, a message waits in custody, and arrives once the link is
//! back.
//!
//! Needs root (CI runs as root). If namespaces cannot be made the test fails
//! and says why, unless `LIFELINE_SKIP_NETNS=1` skips it explicitly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Daemon, Line, json, lifeline, ok};

const NODES: usize = 5;

fn inbox_of(d: &Daemon) -> Vec<serde_json::Value> {
    let out = ok(
        lifeline(&d.dir).args(["--json", "inbox"]).output().unwrap(),
        "inbox",
    );
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_message_crosses_three_relays_and_waits_in_custody_while_a_link_is_cut() {
    let Some(line) = Line::for_test("ll", NODES) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let nodes = line.start_daemons(root.path());
    let (a, e) = (&nodes[0], &nodes[NODES - 1]);

    // Each finds its neighbours by mDNS, and A learns a route to E.
    a.wait_for_route(e, Duration::from_secs(90));
    let peers: Vec<String> = json(&a.dir, &["peers"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(peers, [nodes[1].id.clone()], "A must see only B");

    let card = e.card_file(root.path());
    let send = |text: &str, wait: Option<&str>| {
        let mut cmd = lifeline(&a.dir);
        cmd.args(["--json", "send", "--to", &e.id, "--card"])
            .arg(&card);
        if let Some(w) = wait {
            cmd.args(["--wait", w]);
        }
        let v: serde_json::Value =
            serde_json::from_str(&ok(cmd.arg(text).output().unwrap(), "send")).unwrap();
        v
    };
    let first = send("first, over four hops", Some("60s"));
    assert_eq!(first["status"], "delivered", "{first}");
    let inbox = inbox_of(e);
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["text"], "first, over four hops");
    assert_eq!(inbox[0]["hops"], 4, "A-B-C-D-E is four hops: {}", inbox[0]);

    // Cut C-D: the next message waits in custody on A's side of the cut.
    line.set_link(2, false);
    let second = send("second, across a cut", None);
    let id = second["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(5));
    let status = json(&a.dir, &["message", "status", &id]);
    assert_ne!(status["status"], "delivered", "delivered across a cut link");
    let held: u64 = nodes[..3]
        .iter()
        .map(|n| n.status()["custody"]["messages"].as_u64().unwrap())
        .sum();
    assert!(held >= 1, "nobody on A's side holds the message in custody");

    // Restore it: the message arrives.
    line.set_link(2, true);
    a.wait_for(
        "the second message delivered",
        Duration::from_secs(120),
        |a| json(&a.dir, &["message", "status", &id])["status"] == "delivered",
    );
    let texts: Vec<String> = inbox_of(e)
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["first, over four hops", "second, across a cut"]);
}

#[test]
fn a_relay_joins_two_nodes_that_cannot_reach_each_other() {
    // A - R - C: R is in both of the others' networks and forwards no IP
    // packets, so A and C can meet only through R's circuit relay.
    let Some(line) = Line::for_test("lr", 3) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut a = Daemon::new(root.path(), "a");
    let mut r = Daemon::new(root.path(), "r");
    let mut c = Daemon::new(root.path(), "c");
    for (node, ns) in [&mut a, &mut r, &mut c].into_iter().zip(&line.names) {
        node.netns = Some(ns.clone());
    }
    // The relay knows the addresses it is reached at (a public IP, in real life).
    r.args = [
        "--relay",
        "--external-address",
        "/ip4/10.77.0.2/tcp/4100",
        "--external-address",
        "/ip4/10.77.1.1/tcp/4100",
    ]
    .map(String::from)
    .to_vec();
    r.start();
    c.start();

    // C finds R by mDNS, sees it is a relay, and takes a reservation there.
    let circuit = c.wait_for_circuit(Duration::from_secs(60));
    assert!(
        circuit.contains(&r.id),
        "the circuit is not through R: {circuit}"
    );

    // A dials C through the relay: the only way there.
    a.bootstrap = vec![format!(
        "/ip4/10.77.0.2/tcp/4100/p2p/{}/p2p-circuit/p2p/{}",
        r.id, c.id
    )];
    a.start();
    a.wait_for_mesh_peer(&c, "p2p-circuit", Duration::from_secs(60));
    let card = c.card_file(root.path());
    let mut send = a.send_to(&c, &card, &["--wait", "30s", "Across the relay"]);
    ok(send.output().unwrap(), "send through the relay");
    assert!(
        inbox_of(&c).iter().any(|m| m["text"] == "Across the relay"),
        "the message is not in C's inbox"
    );
}
