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

use std::time::{Duration, Instant};

use common::{Daemon, Line, SlowDisk, genesis_of, json, lifeline, ok};

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

/// A node whose disk is slow keeps relaying an SOS while it writes its own
/// messages. B, in the middle of A-B-C, gets messages from A while its
/// writes are throttled to a few a second (a worn SD card), so keeping
/// them in its inbox takes seconds. An SOS from A to C, sent right after
/// them, still crosses B as fast as on an idle line. Before 2026-12-07, B
/// wrote each inbox entry on its driver's thread, and everything that
/// arrived meanwhile, the SOS too, waited for the disk (it failed so:
/// the SOS took about as long as B's writes). And a signed message's
/// receipt says it was delivered only once it is on disk there.
#[test]
fn a_relay_with_a_slow_disk_relays_an_sos_while_it_keeps_its_own_messages() {
    const MESSAGES: usize = 8;
    let Some(line) = Line::for_test("ls", 3) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let nodes = line.start_daemons(root.path());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    a.wait_for_route(c, Duration::from_secs(90));
    let (b_card, c_card) = (b.card_file(root.path()), c.card_file(root.path()));
    // What a message to C took, once C has it on disk.
    let latency = |text: &str| {
        let mut found = None;
        c.wait_for(text, Duration::from_secs(60), |c| {
            found = inbox_of(c).into_iter().find(|m| m["text"] == text);
            found.is_some()
        });
        let m = found.unwrap();
        m["received_ms"].as_u64().unwrap() - m["sent_ms"].as_u64().unwrap()
    };
    // Both ways work, and what an SOS takes on the idle line.
    let mut sent = a.send_to(b, &b_card, &["--wait", "60s", "to B, idle"]);
    ok(sent.output().unwrap(), "send to B");
    let urgent = ["--priority", "urgent", "--wait", "60s", "SOS, idle"];
    ok(a.send_to(c, &c_card, &urgent).output().unwrap(), "SOS");
    let idle = latency("SOS, idle");

    let slow = SlowDisk::new(root.path(), 4).unwrap_or_else(|e| {
        panic!("cannot slow the disk down: {e} (CI runs as root on a block device)")
    });
    slow.add(b.pid());
    let started = Instant::now();
    for i in 0..MESSAGES {
        let text = format!("to B, slow disk {i}");
        ok(
            a.send_to(b, &b_card, &[&text]).output().unwrap(),
            "send to B",
        );
    }
    let urgent = ["--priority", "urgent", "SOS across a slow disk"];
    ok(a.send_to(c, &c_card, &urgent).output().unwrap(), "SOS");
    // And one for B, signed (P0), whose receipt the router sent as it
    // delivered it, before: A heard "delivered" while it waited for B's
    // disk. Now it does only once B has it on disk.
    let urgent = [
        "--json",
        "send",
        "--priority",
        "urgent",
        "--to",
        &b.id,
        "--card",
    ];
    let out = lifeline(&a.dir)
        .args(urgent)
        .arg(&b_card)
        .arg("urgent, to B")
        .output()
        .unwrap();
    let sent: serde_json::Value = serde_json::from_str(&ok(out, "send")).unwrap();
    let id = sent["id"].as_str().unwrap().to_string();
    let loaded = latency("SOS across a slow disk");
    a.wait_for("B's receipt", Duration::from_secs(120), |a| {
        json(&a.dir, &["message", "status", &id])["status"] == "delivered"
    });
    assert!(
        inbox_of(b).iter().any(|m| m["text"] == "urgent, to B"),
        "A heard that B got its message before B had it on disk"
    );
    b.wait_for("B's messages in its inbox", Duration::from_secs(120), |b| {
        inbox_of(b).len() == MESSAGES + 2
    });
    let kept_in = started.elapsed();
    eprintln!("SOS across B: {idle} ms idle, {loaded} ms while B kept its messages ({kept_in:?})");
    // Else the disk was not slow, and this shows nothing.
    assert!(
        kept_in > Duration::from_secs(2),
        "B kept {MESSAGES} messages in {kept_in:?}: its disk was not slowed down"
    );
    assert!(
        loaded < 500.max(10 * idle),
        "the SOS took {loaded} ms across B (idle: {idle} ms) while B kept its messages in \
         {kept_in:?}"
    );
    // Nothing B kept was lost on the way, and A heard so.
    let texts: Vec<String> = inbox_of(b)
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    for i in 0..MESSAGES {
        assert!(texts.contains(&format!("to B, slow disk {i}")), "{texts:?}");
    }
    drop(slow);
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
    // Whichever end opened the circuit (C may dial A through A's own
    // reservation first), each lists the other as reached through the relay.
    a.wait_for_mesh_peer(&c, "p2p-circuit", Duration::from_secs(60));
    c.wait_for_mesh_peer(&a, "p2p-circuit", Duration::from_secs(30));
    let card = c.card_file(root.path());
    let mut send = a.send_to(&c, &card, &["--wait", "30s", "Across the relay"]);
    ok(send.output().unwrap(), "send through the relay");
    assert!(
        inbox_of(&c).iter().any(|m| m["text"] == "Across the relay"),
        "the message is not in C's inbox"
    );
}

/// Issue 22 through real daemons: four authorities in a line A-B-C-D, the
/// line cut in different places while blocks are sealed, so that
/// authorities find themselves with other partners in each split: {A,B} |
/// {C,D}, then {A} | {B,C,D}, then {A,B,C} | {D}, then healed. Every node's
/// `lifeline chain status --json` is read throughout: no two nodes ever
/// report different finalized blocks at one height, and after the heal all
/// four agree on one head and one finalized block, and finality goes on.
/// (The exact message schedule of the issue, which made seal finality
/// conflict, is replayed with real `Chain`s in consensus/tests/finality.rs:
/// daemons seal on their own clocks, so it cannot be forced here.)
#[test]
fn four_authorities_split_reshuffled_and_healed_agree_on_one_finalized_chain() {
    let Some(line) = Line::for_test("lf", 4) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Daemon> = (0..4)
        .map(|i| {
            let mut d = Daemon::new(root.path(), &format!("n{i}"));
            d.netns = Some(line.names[i].clone());
            d
        })
        .collect();
    genesis_of(root.path(), &nodes);
    for n in &mut nodes {
        n.start();
    }
    let chain = |d: &Daemon| json(&d.dir, &["chain", "status"]);
    let finalized = |d: &Daemon| chain(d)["finalized"]["number"].as_u64().unwrap_or(0);
    for n in &nodes {
        n.wait_for("finalized block 2", Duration::from_secs(90), |d| {
            finalized(d) >= 2
        });
    }
    // Every (height, hash) any node reports final, checked as we go.
    let mut seen: std::collections::BTreeMap<u64, String> = Default::default();
    let mut watch = |nodes: &[Daemon], for_s: u64| {
        let until = std::time::Instant::now() + Duration::from_secs(for_s);
        while std::time::Instant::now() < until {
            for n in nodes {
                let c = chain(n);
                let number = c["finalized"]["number"].as_u64().unwrap();
                let hash = c["finalized"]["hash"].as_str().unwrap().to_string();
                let first = seen.entry(number).or_insert_with(|| hash.clone());
                assert_eq!(
                    *first, hash,
                    "{} finalized another block at height {number}",
                    n.id
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // Cut B-C, then A-B (B-C back), then C-D (A-B back), then heal.
    for (cut, mend) in [(1, None), (0, Some(1)), (2, Some(0))] {
        if let Some(m) = mend {
            line.set_link(m, true);
        }
        line.set_link(cut, false);
        watch(&nodes, 8);
    }
    line.set_link(2, true);
    let agreed = |nodes: &[Daemon]| {
        let all: Vec<serde_json::Value> = nodes.iter().map(chain).collect();
        all.windows(2).all(|w| {
            w[0]["finalized"] == w[1]["finalized"] && w[0]["head"]["hash"] == w[1]["head"]["hash"]
        })
    };
    let start = std::time::Instant::now();
    while !agreed(&nodes) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no agreement a minute after the heal: {:?}",
            nodes.iter().map(chain).collect::<Vec<_>>()
        );
        watch(&nodes, 1);
    }
    let now = finalized(&nodes[0]);
    for n in &nodes {
        n.wait_for(
            "finality going on after the heal",
            Duration::from_secs(60),
            |d| finalized(d) >= now + 3,
        );
        assert!(chain(n)["halted"].is_null(), "{} stopped", n.id);
    }
    watch(&nodes, 1);
}
