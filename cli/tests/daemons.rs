//! Real daemons as separate processes on loopback: they find each other
//! through a bootstrap list, three authorities advance and finalize the
//! chain (by finality votes, one block behind the head), messages cross with receipts, an SOS is acknowledged, and a node
//! killed with SIGKILL comes back with its chain and custody.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{
    Daemon, fails, free_port, genesis_of, genesis_with_heartbeat, http_get, json, lifeline, ok,
};

fn finalized(d: &Daemon) -> u64 {
    d.status()["chain"]["finalized"]["number"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn daemons_connect_finalize_exchange_messages_and_survive_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Daemon> = ["a", "b", "c"]
        .iter()
        .map(|n| Daemon::new(root.path(), n))
        .collect();

    // A fresh chain with all three as authorities, one block a second.
    let genesis = genesis_of(root.path(), &nodes);

    // b is the hub: a and c know only b, and accept only b (otherwise the
    // DHT can introduce them, and a's message to c below would not need b:
    // seen once in CI).
    let hub = nodes[1].addr();
    nodes[0].bootstrap = vec![hub.clone()];
    nodes[2].bootstrap = vec![hub];
    let hub_id = nodes[1].id.clone();
    for n in [0, 2] {
        nodes[n].args = vec!["--allow-peer".into(), hub_id.clone()];
    }
    let metrics = format!("127.0.0.1:{}", free_port());
    nodes[1].args = vec!["--metrics".into(), metrics.clone()];
    for n in &mut nodes {
        n.start();
    }
    for n in &nodes {
        n.wait_for("a peer", Duration::from_secs(30), |d| {
            d.status()["peers"].as_u64().unwrap_or(0) >= 1
        });
    }

    // The chain advances and finalizes everywhere.
    for n in &nodes {
        n.wait_for("finalized block 3", Duration::from_secs(60), |d| {
            finalized(d) >= 3
        });
    }
    // A block is final once the votes for its child are in: one block
    // behind the head (seals make nothing final).
    for n in &nodes {
        n.wait_for(
            "finality one block behind the head",
            Duration::from_secs(30),
            |d| {
                let head = d.status()["chain"]["head"]["number"].as_u64().unwrap_or(0);
                head >= 4 && finalized(d) + 1 >= head
            },
        );
    }
    // The hub's metrics and health.
    let (code, body) = http_get(&metrics, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = http_get(&metrics, "/metrics");
    assert_eq!(code, 200);
    let finalized_metric = body
        .lines()
        .find_map(|l| l.strip_prefix("lifeline_chain_finalized "))
        .unwrap_or_else(|| panic!("no lifeline_chain_finalized in:\n{body}"));
    assert!(
        finalized_metric.trim().parse::<u64>().unwrap() >= 3,
        "{finalized_metric}"
    );
    assert!(body.contains("lifeline_peers 2"), "{body}");
    // The router's counters reach the metrics (copied as deltas).
    let counter = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert!(
        counter("lifeline_control_bytes_total").is_some_and(|v| v > 0),
        "{body}"
    );
    assert_eq!(
        counter("lifeline_lookups_sent_total"),
        Some(0),
        "an unscoped mesh looks nothing up:\n{body}"
    );
    assert!(body.contains("libp2p_"), "libp2p's own metrics are missing");

    let genesis_hashes: Vec<String> = nodes
        .iter()
        .map(|d| d.status()["chain"]["genesis"].as_str().unwrap().to_string())
        .collect();
    assert!(
        genesis_hashes.windows(2).all(|w| w[0] == w[1]),
        "genesis differs: {genesis_hashes:?}"
    );

    // a sends to c with c's contact card; the receipt comes back.
    let card = root.path().join("c.card");
    let out = lifeline(&nodes[2].dir)
        .args(["key", "card"])
        .output()
        .unwrap();
    std::fs::write(&card, ok(out, "key card")).unwrap();
    let text = "Water at the north school gym";
    let out = lifeline(&nodes[0].dir)
        .args([
            "--json",
            "send",
            "--to",
            &nodes[2].id,
            "--wait",
            "30s",
            "--card",
        ])
        .arg(&card)
        .arg(text)
        .output()
        .unwrap();
    let sent: serde_json::Value = serde_json::from_str(&ok(out, "send")).unwrap();
    assert_eq!(sent["status"], "delivered", "{sent}");
    let inbox = ok(
        lifeline(&nodes[2].dir)
            .args(["--json", "inbox"])
            .output()
            .unwrap(),
        "inbox",
    );
    let received: serde_json::Value = serde_json::from_str(inbox.lines().next().unwrap()).unwrap();
    assert_eq!(received["text"], text);
    assert_eq!(received["from"], nodes[0].id.as_str());
    assert_eq!(received["kind"], "message");

    // An SOS from c reaches a, and a's acknowledgement reaches c.
    let out = lifeline(&nodes[2].dir)
        .args([
            "--json",
            "sos",
            "--lat",
            "51.34",
            "--lon",
            "12.37",
            "Two people trapped",
        ])
        .output()
        .unwrap();
    let sos: serde_json::Value = serde_json::from_str(&ok(out, "sos")).unwrap();
    let sos_id = sos["id"].as_str().unwrap().to_string();
    nodes[0].wait_for("the SOS in its inbox", Duration::from_secs(20), |d| {
        let out = lifeline(&d.dir).args(["--json", "inbox"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&sos_id)
    });
    ok(
        lifeline(&nodes[0].dir)
            .args(["sos", "ack", &sos_id, "--note", "Team 4, 15 minutes"])
            .output()
            .unwrap(),
        "sos ack",
    );
    nodes[2].wait_for("the SOS acknowledged", Duration::from_secs(20), |d| {
        let v = json(&d.dir, &["message", "status", &sos_id]);
        let receipts = v["receipts"].to_string();
        // Who acknowledged, by the chain: a is an authority.
        v["status"] == "acknowledged"
            && receipts.contains("Team 4, 15 minutes")
            && receipts.contains(&format!("{} (authority)", nodes[0].id))
    });

    // A relay holding a message in custody is killed with SIGKILL: c is
    // frozen (SIGSTOP), so b takes custody of a's message to c and cannot
    // pass it on. b restarts from its database still holding it, and once c
    // runs again the message arrives.
    let before = finalized(&nodes[1]);
    assert_eq!(
        nodes[0].status()["peers"].as_u64(),
        Some(1),
        "a's only peer is b"
    );
    nodes[2].signal("STOP");
    let text = "Blankets needed at the sports hall";
    let out = lifeline(&nodes[0].dir)
        .args(["--json", "send", "--to", &nodes[2].id, "--card"])
        .arg(&card)
        .arg(text)
        .output()
        .unwrap();
    let sent: serde_json::Value = serde_json::from_str(&ok(out, "send")).unwrap();
    let id = sent["id"].as_str().unwrap().to_string();
    nodes[0].wait_for("b taking custody", Duration::from_secs(20), |a| {
        let status = json(&a.dir, &["message", "status", &id])["status"].clone();
        status == "forwarded" || status == "in-custody"
    });
    nodes[1].wait_for("the message in custody", Duration::from_secs(20), |b| {
        b.status()["custody"]["messages"].as_u64().unwrap_or(0) >= 1
    });
    nodes[1].kill9();
    nodes[1].start();
    let held = nodes[1].status()["custody"]["messages"].as_u64().unwrap();
    assert!(held >= 1, "b lost the message it had taken into custody");
    assert!(
        finalized(&nodes[1]) >= before,
        "b lost finalized blocks over kill -9"
    );
    nodes[2].signal("CONT");
    nodes[0].wait_for("the held message delivered", Duration::from_secs(90), |a| {
        json(&a.dir, &["message", "status", &id])["status"] == "delivered"
    });
    let inbox = ok(
        lifeline(&nodes[2].dir)
            .args(["--json", "inbox"])
            .output()
            .unwrap(),
        "inbox",
    );
    assert!(
        inbox.contains(text),
        "c's inbox lacks the held message:\n{inbox}"
    );

    // b, an authority, came back from kill -9: the chain goes on past where it was.
    for n in &nodes {
        n.wait_for(
            "finality moving on after the restart",
            Duration::from_secs(60),
            |d| finalized(d) >= before + 3,
        );
    }

    // A second node starts with a copy of a's key (issue 22's clone): it
    // listens first, hears a's blocks or votes, and stops sealing and voting
    // with guidance, while a and the chain go on. (Without clone protection
    // its status has no "halted" and this times out.)
    // It reaches the mesh through a fourth node, d: b would take the
    // clone's connection for another one of a's (one PeerId).
    let mut d = Daemon::new(root.path(), "d");
    std::fs::copy(&genesis, d.dir.join("genesis.toml")).unwrap();
    d.bootstrap = vec![nodes[1].addr()];
    d.start();
    d.wait_for("the chain", Duration::from_secs(30), |d| {
        finalized(d) >= before
    });
    let mut clone = nodes[0].clone_key(root.path(), "a-clone");
    clone.bootstrap = vec![d.addr()];
    clone.start();
    let halted = clone.wait_for_value("stopping as a clone", Duration::from_secs(60), |d| {
        d.status()["chain"]["halted"].as_str().map(String::from)
    });
    assert!(
        halted.contains("another node is using this authority's key")
            && halted.contains("Stop every other node that runs this key"),
        "{halted}"
    );
    assert!(
        clone
            .log()
            .contains("another node is using this authority's key"),
        "the clone's log says nothing"
    );
    let now = finalized(&nodes[1]);
    nodes[1].wait_for(
        "finality going on beside the clone",
        Duration::from_secs(60),
        |d| finalized(d) >= now + 3,
    );
    assert!(
        nodes[0].status()["chain"]["halted"].is_null(),
        "a itself goes on"
    );
}

#[test]
fn a_second_node_on_the_same_data_folder_or_port_is_refused_clearly() {
    let root = tempfile::tempdir().unwrap();
    let mut first = Daemon::new(root.path(), "first");
    first.start();
    // Same data folder: the database is locked.
    let out = lifeline(&first.dir)
        .args([
            "node",
            "--no-mdns",
            "--metrics",
            "off",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .output()
        .unwrap();
    fails(out, "in use by another lifeline process");
    // Another folder, same port: refused at start, not shared.
    let other = Daemon::new(root.path(), "other");
    let out = lifeline(&other.dir)
        .args(["node", "--no-mdns", "--metrics", "off", "--listen"])
        .arg(format!("/ip4/127.0.0.1/tcp/{}", first.port))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains("in use"),
        "{err}"
    );
    // A bad config names the line.
    let config = root.path().join("bad.toml");
    std::fs::write(&config, "mdns = true\nrelay = \"yes\"\n").unwrap();
    let out = lifeline(&other.dir)
        .args(["node", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    fails(out, "line 2");
    // The first node is unharmed.
    assert_eq!(first.status()["id"], first.id.as_str());
    // No node running: the CLI says what to do.
    let out = lifeline(&other.dir).arg("status").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no lifeline node is running") && err.contains("lifeline node"),
        "{err}"
    );
}

#[test]
fn the_control_api_on_loopback_tcp_wants_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let mut node = Daemon::new(root.path(), "tcp");
    let addr = format!("127.0.0.1:{}", free_port());
    node.args = vec!["--control-tcp".into(), addr.clone()];
    node.start();
    let token = node.dir.join("control.token");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token is readable by others");

    // With the token: the same answers as on the socket.
    let mut cmd = lifeline(root.path());
    cmd.args(["--json", "--control-tcp", &addr, "--control-token-file"])
        .arg(&token)
        .arg("status");
    let status: serde_json::Value =
        serde_json::from_str(&ok(cmd.output().unwrap(), "status over TCP")).unwrap();
    assert_eq!(status["id"], node.id.as_str());

    // Without it, or with a wrong one: refused, saying what to do.
    let out = lifeline(root.path())
        .args(["--control-tcp", &addr, "status"])
        .env_remove("LIFELINE_CONTROL_TOKEN")
        .output()
        .unwrap();
    fails(out, "--control-token-file");
    let out = lifeline(root.path())
        .args(["--control-tcp", &addr, "status"])
        .env("LIFELINE_CONTROL_TOKEN", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    fails(out, "token is missing or wrong");

    // Issue 23, item 13: a client that connects and never shows the token
    // is closed after 10 s (before, it held one of the 32 slots for good);
    // a watcher with the token stays.
    let mut watcher = lifeline(root.path())
        .args(["--control-tcp", &addr, "--control-token-file"])
        .arg(&token)
        .args(["inbox", "--watch"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = std::time::Instant::now();
    // The server's HTTP/2 settings come first; then nothing, until closed.
    let mut buf = [0u8; 256];
    let read = loop {
        match std::io::Read::read(&mut idle, &mut buf) {
            Ok(n) if n > 0 => continue,
            other => break other,
        }
    };
    let held = started.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)) && held < Duration::from_secs(15),
        "an idle connection without the token was held {held:?} ({read:?})"
    );
    assert!(
        watcher.try_wait().unwrap().is_none(),
        "the watcher with the token was closed too"
    );
    watcher.kill().unwrap();
    let _ = watcher.wait();

    // Only loopback: the control API controls the node.
    let open = Daemon::new(root.path(), "open");
    let out = lifeline(&open.dir)
        .args([
            "node",
            "--no-mdns",
            "--metrics",
            "off",
            "--control-tcp",
            "0.0.0.0:9",
        ])
        .output()
        .unwrap();
    fails(out, "loopback");
}

#[test]
fn two_nodes_talk_over_quic() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Daemon::new(root.path(), "qa");
    let quic = format!("/ip4/127.0.0.1/udp/{}/quic-v1", free_port());
    a.args = vec!["--listen".into(), quic.clone()];
    a.start();
    // b knows a only by its QUIC address.
    let mut b = Daemon::new(root.path(), "qb");
    b.bootstrap = vec![format!("{quic}/p2p/{}", a.id)];
    b.start();
    b.wait_for_mesh_peer(&a, "quic-v1", Duration::from_secs(30));
    let card = a.card_file(root.path());
    let mut send = b.send_to(&a, &card, &["--wait", "20s", "Over QUIC"]);
    ok(send.output().unwrap(), "send over QUIC");
}

/// A bootstrap peer that was down when this node started is dialled again
/// once it is up, even though another peer is connected by then (it used to
/// be retried only by a node with no peer at all).
#[test]
fn a_bootstrap_peer_down_at_start_is_dialled_again_while_others_are_connected() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Daemon::new(root.path(), "up");
    a.start();
    let mut late = Daemon::new(root.path(), "late");
    let mut b = Daemon::new(root.path(), "b");
    b.bootstrap = vec![a.addr(), late.addr()];
    b.start();
    b.wait_for_mesh_peer(&a, "", Duration::from_secs(30));
    // Only later does the shelter server come up, once b's first DHT walk,
    // which also dials it, is over; nobody else knows it.
    std::thread::sleep(Duration::from_secs(10));
    late.start();
    b.wait_for_mesh_peer(&late, "", Duration::from_secs(40));
}

#[test]
fn a_relay_circuit_is_upgraded_by_a_hole_punch_and_autonat_finds_nodes_reachable() {
    let root = tempfile::tempdir().unwrap();
    let mut r = Daemon::new(root.path(), "relay");
    r.args = vec![
        "--relay".into(),
        "--external-address".into(),
        format!("/ip4/127.0.0.1/tcp/{}", r.port),
    ];
    r.start();
    let mut c = Daemon::new(root.path(), "behind");
    c.bootstrap = vec![r.addr()];
    c.start();
    let circuit = c.wait_for_circuit(Duration::from_secs(30));
    // a knows c only through the relay; DCUtR then punches a direct connection.
    let mut a = Daemon::new(root.path(), "caller");
    // The relayed listen address already ends in c's id.
    assert!(circuit.ends_with(&c.id), "{circuit}");
    a.bootstrap = vec![circuit];
    a.start();
    a.wait_for("a direct connection to c", Duration::from_secs(60), |a| {
        a.log().contains("hole punch succeeded")
            && json(&a.dir, &["peers"])
                .as_array()
                .unwrap()
                .iter()
                .any(|p| {
                    p["id"] == c.id.as_str()
                        && p["addrs"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|x| !x.as_str().unwrap().contains("p2p-circuit"))
                })
    });
    // AutoNAT: peers dialled back, so the nodes know they are reachable.
    c.wait_for("AutoNAT's verdict", Duration::from_secs(60), |c| {
        c.status()["reachability"]
            .as_str()
            .unwrap()
            .starts_with("public at /ip4/127.0.0.1/")
    });
}

/// Issue 23, item 6: a transaction whose nonce is ahead of its sender's next
/// one counted as pending but could never go into a block, so the authority
/// proposed an empty block, was refused (too early for a heartbeat), and
/// tried again at once until the heartbeat came. The attacker is a plain
/// node that submits such a transaction; its broadcast carries it to the
/// authority. On the old code the authority signed and refused 4,720 blocks
/// in the 5 s measured here (one per tick of tokio's timer), each logged as
/// an error: about 11 MB of log a minute, for one transaction.
#[test]
fn a_transaction_from_the_future_does_not_make_an_authority_spin() {
    use lifeline_consensus::{Action, Transaction};
    use lifeline_crypto::Identity;

    let root = tempfile::tempdir().unwrap();
    let mut authority = Daemon::new(root.path(), "authority");
    let mut attacker = Daemon::new(root.path(), "attacker");
    // A long heartbeat: the window in which the old code spun.
    genesis_with_heartbeat(root.path(), std::slice::from_ref(&authority), 60);
    std::fs::copy(
        root.path().join("genesis.toml"),
        attacker.dir.join("genesis.toml"),
    )
    .unwrap();
    attacker.bootstrap = vec![authority.addr()];
    authority.start();
    attacker.start();
    attacker.wait_for_route(&authority, Duration::from_secs(30));
    // Past its listening time (3 periods after start), so that it seals.
    std::thread::sleep(Duration::from_secs(3));

    // Signed by a throwaway key, nonce 5 where the chain expects 0.
    let junk = Identity::generate(&mut rand::rng());
    let tx = Transaction::sign(
        &junk,
        5,
        Action::RevokeIdentity {
            subject: *junk.id(),
            reason: "from the future".into(),
        },
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let socket = lifeline_node::control::default_socket(&attacker.dir);
        let mut client = lifeline_node::client::connect(&socket).await.unwrap();
        client
            .submit_transaction(lifeline_node::pb::control::SubmitTransactionRequest {
                transaction: tx.to_bytes().to_vec(),
            })
            .await
            .unwrap();
    });
    authority.wait_for(
        "the junk transaction to arrive",
        Duration::from_secs(30),
        |d| {
            let log = d.log();
            // The old code said nothing when it pooled; it failed to seal.
            log.contains("pooled a transaction") || log.contains("did not import")
        },
    );

    let refusals = |d: &Daemon| {
        let log = d.log();
        log.matches("did not import").count() + log.matches("not sealing now").count()
    };
    let (before, cpu, wall) = (
        refusals(&authority),
        authority.cpu_time(),
        std::time::Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(10));
    let used = authority.cpu_time() - cpu;
    let refused = refusals(&authority) - before;
    assert!(
        refused <= 2,
        "the authority tried and failed to seal {refused} times in 5 s over one transaction it cannot seal"
    );
    let share = used.as_secs_f64() / wall.elapsed().as_secs_f64();
    assert!(
        share < 0.3,
        "the authority used {:.0}% of a core while holding one transaction it cannot seal",
        share * 100.0
    );
}
