//! Hostile peers on lifeline's mesh protocol, against a real node: one that
//! sends garbage (the node closes each such stream, bans the peer after the
//! third, refuses it while the ban lasts, and keeps serving everyone else),
//! peers that start the largest frames and stall (memory stays bounded and
//! an honest neighbour's message still arrives), and one that opens stream
//! after stream (refused beyond the limit, then banned).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::Stream;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, noise, tcp, yamux};
use lifeline_node::pb::control as api;
use tokio::sync::mpsc;

use common::LocalNode;

/// One test at a time: the memory test measures this whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_mesh_protocol_gets_a_peer_banned_and_nothing_else() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = LocalNode::start(dir.path(), Vec::new()).await;
    let socket = node.socket.clone();
    let mut control = node.control.clone();
    let status = control
        .status(api::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let node_id: PeerId = status.id.parse().unwrap();
    let addr: Multiaddr = status.listen_addrs[0].parse().unwrap();

    // The attacker: a plain libp2p peer with the stream behaviour.
    let mut swarm = attacker_swarm();
    let mut streams = swarm.behaviour().new_control();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    swarm.dial(addr.clone()).unwrap();
    let (dial_tx, mut dial_rx) = mpsc::unbounded_channel::<Multiaddr>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = swarm.select_next_some() => {
                    let summary = match event {
                        SwarmEvent::ConnectionEstablished { .. } => Some("up"),
                        SwarmEvent::ConnectionClosed { .. } => Some("down"),
                        SwarmEvent::OutgoingConnectionError { .. } => Some("refused"),
                        _ => None,
                    };
                    if let Some(s) = summary && events_tx.send(s).is_err() {
                        return;
                    }
                }
                Some(addr) = dial_rx.recv() => { let _ = swarm.dial(addr); }
            }
        }
    });
    assert_eq!(events.recv().await, Some("up"));

    // Three streams, each announcing a frame of 4 GiB.
    for _ in 0..3 {
        let mut stream = streams
            .open_stream(node_id, lifeline_node::mesh::PROTOCOL)
            .await
            .expect("a mesh stream to the node");
        let _ = stream.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
        let _ = stream.flush().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("the node did not disconnect the attacker");
    assert_eq!(closed, Some("down"));

    // Banned: a new connection does not stay up.
    dial_tx.send(addr).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap();
    if next == Some("up") {
        let again = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap();
        assert_eq!(again, Some("down"), "a banned peer stayed connected");
    } else {
        assert!(matches!(next, Some("refused" | "down")), "{next:?}");
    }

    // The node is fine and lists no such peer.
    let peers = control
        .peers(api::PeersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(peers.peers.is_empty(), "{:?}", peers.peers);
    assert_eq!(
        control
            .status(api::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .id,
        status.id
    );

    node.stop().await;
    assert!(!socket.exists(), "the control socket was left behind");
}

/// A plain libp2p peer with a new identity and the stream behaviour.
fn attacker_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

/// A plain libp2p peer with the stream behaviour, connected to `addr`.
async fn attacker(addr: &Multiaddr) -> libp2p_stream::Control {
    attacker_accepting(addr, false).await.0
}

/// As [`attacker`]; with `accept`, it takes mesh streams too (taken before
/// it dials, so that the node's stream to it cannot come first).
async fn attacker_accepting(
    addr: &Multiaddr,
    accept: bool,
) -> (
    libp2p_stream::Control,
    Option<libp2p_stream::IncomingStreams>,
) {
    let mut swarm = attacker_swarm();
    let mut control = swarm.behaviour().new_control();
    let incoming = accept.then(|| control.accept(lifeline_node::mesh::PROTOCOL).unwrap());
    swarm.dial(addr.clone()).unwrap();
    let (up_tx, mut up) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                let _ = up_tx.send(());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), up.recv())
        .await
        .expect("the attacker connected");
    (control, incoming)
}

/// An attacker that is the node's neighbour: it takes the node's mesh
/// stream to it, so that the node counts it as one, and opens its own.
async fn neighbour_of(addr: &Multiaddr, node_id: PeerId) -> Stream {
    let (mut control, incoming) = attacker_accepting(addr, true).await;
    let mut incoming = incoming.unwrap();
    let (linked_tx, mut linked) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some((_, stream)) = incoming.next().await {
            kept.push(stream);
            let _ = linked_tx.send(());
        }
    });
    let stream = control
        .open_stream(node_id, lifeline_node::mesh::PROTOCOL)
        .await
        .unwrap();
    // The node is a neighbour of ours once its stream to us is open.
    tokio::time::timeout(Duration::from_secs(30), linked.recv())
        .await
        .expect("the node opened its mesh stream to the attacker");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
}

/// This process's resident memory.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Issue 23, item 1. Six peers, each with four streams (the most the node
/// allows one peer), announce the largest frame on each and send as much of
/// it as the node takes, then hold on. The old reader allocated each frame
/// whole as soon as its length arrived and read all that was sent: about
/// 190 MiB here, and more with every peer. Now large frames share one
/// budget, so the node's memory stays within 64 MiB of idle, and an honest
/// neighbour's message still arrives meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_start_the_largest_frames_pin_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = LocalNode::start(dir_a.path(), Vec::new()).await;
    let honest = LocalNode::start(dir_b.path(), vec![node.addr.clone()]).await;
    let node_id: PeerId = node.id.parse().unwrap();
    let addr: Multiaddr = node.addr.parse().unwrap();
    let mut honest_control = honest.control.clone();
    for _ in 0..200 {
        let routes = honest_control
            .routes(api::RoutesRequest {})
            .await
            .unwrap()
            .into_inner();
        if routes.routes.iter().any(|r| r.destination == node.id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_bytes();

    let body: &'static [u8] = Box::leak(vec![0u8; 64 * 1024].into_boxed_slice());
    let mut held: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    for _ in 0..6 {
        let mut control = attacker(&addr).await;
        for _ in 0..lifeline_node::mesh::MAX_INBOUND_STREAMS {
            let mut stream: Stream = control
                .open_stream(node_id, lifeline_node::mesh::PROTOCOL)
                .await
                .expect("a mesh stream to the node");
            held.push(tokio::spawn(async move {
                let len = u32::try_from(lifeline_node::mesh::MAX_FRAME).unwrap();
                let _ = stream.write_all(&len.to_be_bytes()).await;
                // All but the last chunk, as fast as the node reads, then hold.
                let chunks = lifeline_node::mesh::MAX_FRAME / body.len() - 1;
                for _ in 0..chunks {
                    if stream.write_all(body).await.is_err() {
                        return;
                    }
                }
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_secs(600)).await;
            }));
        }
    }
    let mut peak = idle;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(rss_bytes());
    }
    let above = peak.saturating_sub(idle) / (1024 * 1024);
    eprintln!("memory above idle while 24 streams held large frames: {above} MiB");
    assert!(
        above < 64,
        "the node's process grew by {above} MiB while peers held large frames open"
    );

    // An honest neighbour's message still gets through.
    honest_control
        .send(api::SendRequest {
            to: node.id.clone(),
            text: b"still here?".to_vec(),
            priority: api::Priority::Normal.into(),
            prekey: node.card.clone(),
            ttl_secs: 0,
        })
        .await
        .unwrap();
    let mut control = node.control.clone();
    let mut arrived = false;
    for _ in 0..100 {
        let mut inbox = control
            .inbox(api::InboxRequest { watch: false })
            .await
            .unwrap()
            .into_inner();
        while let Some(m) = inbox.message().await.unwrap() {
            arrived |= m.text == b"still here?";
        }
        if arrived {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        arrived,
        "an honest message did not arrive during the attack"
    );
    for task in held {
        task.abort();
    }
    honest.stop().await;
    node.stop().await;
}

/// Issue 23, item 1: a peer may have only a few mesh streams open; one that
/// opens more is refused each time, counted, and banned. (The old node took
/// every stream it was given.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_opens_stream_after_stream_is_banned() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = LocalNode::start(dir.path(), Vec::new()).await;
    let node_id: PeerId = node.id.parse().unwrap();
    let addr: Multiaddr = node.addr.parse().unwrap();
    let mut control = attacker(&addr).await;
    let mut open = Vec::new();
    let mut refused = false;
    for _ in 0..20 {
        match tokio::time::timeout(
            Duration::from_secs(5),
            control.open_stream(node_id, lifeline_node::mesh::PROTOCOL),
        )
        .await
        {
            Ok(Ok(stream)) => open.push(stream),
            _ => {
                refused = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Banned: the connection is gone, and the node lists no such peer.
    let mut node_control = node.control.clone();
    let mut gone = false;
    for _ in 0..100 {
        let peers = node_control
            .peers(api::PeersRequest {})
            .await
            .unwrap()
            .into_inner();
        if peers.peers.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused && gone,
        "{} streams opened; refused: {refused}; disconnected: {gone}",
        open.len()
    );
    node.stop().await;
}

/// Issue 23, item 4: an SOS payload in a P3 broadcast, from a throwaway key.
/// The old node put it in the inbox as an SOS, like the real one (the test
/// then finds two SOS entries). Now only the P0 one is an SOS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sos_payload_in_a_bulk_broadcast_is_not_an_sos() {
    use lifeline_node::mesh::{Frame as MeshFrame, write_frame};
    use lifeline_node::pb::mesh::{AppPayload, Sos, app_payload};
    use lifeline_routing::wire::{Body, Frame, Message, Packet};
    use lifeline_routing::{Address, Class, Kind};
    use prost::Message as _;

    let _serial = SERIAL.lock().await;

    let dir = tempfile::tempdir().unwrap();
    let node = LocalNode::start(dir.path(), Vec::new()).await;
    let node_id: PeerId = node.id.parse().unwrap();
    let addr: Multiaddr = node.addr.parse().unwrap();
    // It takes the node's stream to it, so that the node counts it as a
    // neighbour.
    let mut stream = neighbour_of(&addr, node_id).await;

    let throwaway = lifeline_crypto::Identity::generate(&mut rand::rng());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let payload = AppPayload {
        kind: Some(app_payload::Kind::Sos(Sos {
            text: "fake emergency".into(),
            lat_micro: None,
            lon_micro: None,
        })),
    }
    .encode_to_vec();
    for (n, class) in [(1u64, Class::P3), (2, Class::P0)] {
        let body = Body {
            class,
            kind: Kind::Data,
            destination: None,
            origin: Some(Address::from(throwaway.id())),
            created_ms: now,
            expires_ms: now + 3_600_000,
            area: None,
            nonce: n.to_le_bytes(),
            payload: payload.clone(),
        };
        let message = Message::new(body, Some(&throwaway), 16);
        let packet = Packet {
            frame: n,
            index: 0,
            count: 1,
            class,
            data: Frame::Message(Box::new(message)).encode(),
        }
        .encode();
        write_frame(&mut stream, &MeshFrame::Packet(packet).encode())
            .await
            .unwrap();
    }

    // The P0 one arrives as an SOS; the P3 one never does.
    let mut node_control = node.control.clone();
    let mut sos = 0;
    for _ in 0..150 {
        let mut inbox = node_control
            .inbox(api::InboxRequest { watch: false })
            .await
            .unwrap()
            .into_inner();
        sos = 0;
        while let Some(m) = inbox.message().await.unwrap() {
            sos += usize::from(m.kind == "sos");
        }
        if sos >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for the P3 one too, had it been taken for an SOS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut inbox = node_control
        .inbox(api::InboxRequest { watch: false })
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(m) = inbox.message().await.unwrap() {
        kinds.push(m.kind);
    }
    assert!(sos >= 1, "the real SOS did not arrive: {kinds:?}");
    assert_eq!(
        kinds,
        vec!["sos".to_string()],
        "a bulk broadcast became an SOS"
    );
    node.stop().await;
}

/// Issue 23, item 13: the data folder holds the inbox, decrypted. The old
/// node left it, and RocksDB's folder inside it, as the umask made them
/// (0755 here): readable by every local user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_folder_is_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let _serial = SERIAL.lock().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = LocalNode::start(&dir, Vec::new()).await;
    for d in [dir.clone(), dir.join("db")] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", d.display());
    }
    node.stop().await;
}

/// Issue 23, item 10: one host with many free identities. The old node let
/// inbound connections take all of `max_connections`, with no limit per
/// address, so eight identities from one host took all eight slots here and
/// an honest neighbour could no longer connect. Now one address gets
/// `max_connections_per_ip` and a quarter of the slots stay for the node's
/// own dials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_with_many_identities_cannot_take_every_connection() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = LocalNode::start_with(dir.path(), Vec::new(), |c| {
        c.listen.push("/ip6/::1/tcp/0".into());
        c.max_connections = 8;
        c.max_connections_per_ip = 3;
    })
    .await;
    let status = node
        .control
        .clone()
        .status(api::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let on = |family: &str| -> String {
        let listen = status.listen_addrs.iter().find(|a| a.starts_with(family));
        format!("{}/p2p/{}", listen.expect("listening on loopback"), node.id)
    };
    // Eight identities on one host: they come over IPv6 loopback (::1),
    // the honest node over IPv4 (127.0.0.1), so they are two addresses.
    let addr: Multiaddr = on("/ip6/").parse().unwrap();
    let (up_tx, mut up) = mpsc::unbounded_channel::<bool>();
    for _ in 0..8 {
        let mut swarm = attacker_swarm();
        let up_tx = up_tx.clone();
        swarm.dial(addr.clone()).unwrap();
        tokio::spawn(async move {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        let _ = up_tx.send(true);
                    }
                    SwarmEvent::OutgoingConnectionError { .. } => {
                        let _ = up_tx.send(false);
                    }
                    _ => {}
                }
            }
        });
    }
    let mut connected = 0;
    for _ in 0..8 {
        let outcome = tokio::time::timeout(Duration::from_secs(10), up.recv())
            .await
            .expect("every attacker's dial ends one way or the other");
        connected += usize::from(outcome == Some(true));
    }

    // An honest neighbour still gets in.
    let honest_dir = tempfile::tempdir().unwrap();
    let honest = LocalNode::start(honest_dir.path(), vec![on("/ip4/")]).await;
    let (came, neighbours) = node
        .wait_for_peer(&honest.id, false, Duration::from_secs(10))
        .await;
    println!("attackers from one host connected: {connected} of 8");
    assert!(
        came,
        "the honest neighbour could not connect; {connected} of 8 attackers from one host did; neighbours: {neighbours:?}"
    );
    assert!(connected <= 3, "{connected} connections from one address");
    honest.stop().await;
    node.stop().await;
}

/// Issue 23, item 13: a letter to the node, copied off the air, is sent
/// again in a new routing message after the node restarted (and, in the
/// same way, below the memory guard's floor). The old node kept the
/// envelope replay guard in memory only: the copy opened again and the
/// inbox showed the letter twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_replayed_after_a_restart_is_refused() {
    use lifeline_node::mesh::{Frame as MeshFrame, write_frame};
    use lifeline_node::pb::mesh::{AppPayload, app_payload};
    use lifeline_routing::wire::{Body, Frame, Message, Packet};
    use lifeline_routing::{Address, Class, Kind};
    use prost::Message as _;

    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = LocalNode::keys();
    let copy = |k: &lifeline_crypto::KeyBundle| {
        lifeline_crypto::KeyBundle::from_bytes(&k.to_bytes()).unwrap()
    };
    let node = LocalNode::start_keys(dir.path(), Vec::new(), |_| {}, copy(&keys)).await;
    let node_id: PeerId = node.id.parse().unwrap();
    let me = Address::from(keys.identity.id());
    let prekey = lifeline_crypto::PublicPrekey::from_bytes(&node.card).unwrap();
    let sender = lifeline_crypto::Identity::generate(&mut rand::rng());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let sealed = lifeline_crypto::envelope::seal(
        &sender,
        &prekey,
        b"meet at the school",
        lifeline_crypto::Timestamp::from_unix_millis(now),
        &mut rand::rng(),
    )
    .unwrap();
    let payload = AppPayload {
        kind: Some(app_payload::Kind::Envelope(sealed.bytes.to_vec())),
    }
    .encode_to_vec();
    // The same envelope in a new routing message each time (a new nonce:
    // the router has not seen it).
    let wrapped = |n: u64| {
        let body = Body {
            class: Class::P2,
            kind: Kind::Data,
            destination: Some(me),
            origin: Some(Address::from(sender.id())),
            created_ms: now,
            expires_ms: now + 3_600_000,
            area: None,
            nonce: n.to_le_bytes(),
            payload: payload.clone(),
        };
        let packet = Packet {
            frame: n,
            index: 0,
            count: 1,
            class: Class::P2,
            data: Frame::Message(Box::new(Message::new(body, Some(&sender), 16))).encode(),
        };
        MeshFrame::Packet(packet.encode()).encode()
    };
    let letters = |node: &LocalNode| {
        let mut control = node.control.clone();
        async move {
            let mut inbox = control
                .inbox(api::InboxRequest { watch: false })
                .await
                .unwrap()
                .into_inner();
            let mut n = 0;
            while let Some(m) = inbox.message().await.unwrap() {
                n += usize::from(m.kind == "message");
            }
            n
        }
    };
    let mut stream = neighbour_of(&node.addr.parse().unwrap(), node_id).await;
    write_frame(&mut stream, &wrapped(1)).await.unwrap();
    let mut arrived = 0;
    for _ in 0..100 {
        arrived = letters(&node).await;
        if arrived > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(arrived, 1, "the letter did not arrive");
    // A copy at once: the memory guard refuses it.
    write_frame(&mut stream, &wrapped(2)).await.unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.stop().await;

    let node = LocalNode::start_keys(dir.path(), Vec::new(), |_| {}, keys).await;
    let mut stream = neighbour_of(&node.addr.parse().unwrap(), node_id).await;
    write_frame(&mut stream, &wrapped(3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        letters(&node).await,
        1,
        "the replayed letter was opened again after the restart"
    );
    node.stop().await;
}
