//! A node run in-process for tests and benchmarks: started on loopback with
//! a fresh identity, reachable through its control API.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use lifeline_crypto::{KeyBundle, Timestamp};
use lifeline_node::pb::control as api;
use lifeline_node::{Config, Options};
use tokio::sync::oneshot;

/// A running node.
pub struct LocalNode {
    /// Its control API.
    pub control: lifeline_node::client::Client,
    /// Its id.
    pub id: String,
    /// Where it listens, with `/p2p/ID`.
    pub addr: String,
    /// Its signed prekey (what a contact card carries).
    pub card: Vec<u8>,
    /// Its control socket.
    pub socket: std::path::PathBuf,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalNode {
    /// Starts a node in `dir` (no mDNS, no metrics) that dials `bootstrap`,
    /// and waits until it answers and listens.
    pub async fn start(dir: &Path, bootstrap: Vec<String>) -> Self {
        Self::start_with(dir, bootstrap, |_| {}).await
    }

    /// As [`LocalNode::start`], with `tweak` applied to the config.
    pub async fn start_with(
        dir: &Path,
        bootstrap: Vec<String>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_keys(dir, bootstrap, tweak, Self::keys()).await
    }

    /// Fresh keys for a node.
    pub fn keys() -> KeyBundle {
        KeyBundle::generate(
            Timestamp::from_unix_millis(1_800_000_000_000),
            &mut rand::rng(),
        )
    }

    /// As [`LocalNode::start_with`], with these keys (a restart keeps them).
    pub async fn start_keys(
        dir: &Path,
        bootstrap: Vec<String>,
        tweak: impl FnOnce(&mut Config),
        keys: KeyBundle,
    ) -> Self {
        let card = keys.prekeys.current().to_bytes().to_vec();
        let mut config = Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap,
            mdns: false,
            metrics: "off".into(),
            web: "off".into(),
            ..Config::default()
        };
        tweak(&mut config);
        let options = Options {
            config,
            data_dir: dir.to_path_buf(),
            keys,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            lifeline_node::run(options, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let socket = lifeline_node::control::default_socket(dir);
        let mut control = None;
        for _ in 0..200 {
            if let Ok(c) = lifeline_node::client::connect(&socket).await {
                control = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut control = control.expect("the node's control socket");
        let status = loop {
            let s = control
                .status(api::StatusRequest {})
                .await
                .unwrap()
                .into_inner();
            if !s.listen_addrs.is_empty() {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            addr: format!("{}/p2p/{}", status.listen_addrs[0], status.id),
            id: status.id,
            control,
            card,
            socket,
            stop,
            task,
        }
    }

    /// Waits (at most `limit`) until `peer` is a neighbour, with a mesh
    /// link too if `mesh`; the neighbours last seen, and whether it came.
    pub async fn wait_for_peer(
        &self,
        peer: &str,
        mesh: bool,
        limit: Duration,
    ) -> (bool, Vec<api::Peer>) {
        let started = std::time::Instant::now();
        loop {
            let peers = self
                .control
                .clone()
                .peers(api::PeersRequest {})
                .await
                .unwrap()
                .into_inner()
                .peers;
            if peers.iter().any(|p| p.id == peer && (p.mesh || !mesh)) {
                return (true, peers);
            }
            if started.elapsed() > limit {
                return (false, peers);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends the shutdown signal and waits (at most 10 s) for the node to stop.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the node did not stop on its shutdown signal")
            .unwrap();
    }
}
