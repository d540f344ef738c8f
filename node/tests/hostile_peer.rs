//! A peer that sends garbage on lifeline's mesh protocol: the node closes
//! each such stream, bans the peer after the third, refuses it while the ban
//! lasts, and keeps serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, noise, tcp, yamux};
use lifeline_node::pb::control as api;
use tokio::sync::mpsc;

use common::LocalNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_mesh_protocol_gets_a_peer_banned_and_nothing_else() {
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
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
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
