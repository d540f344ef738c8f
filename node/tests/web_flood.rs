//! An attacker on the shelter's Wi-Fi against the web app offered there: one
//! host opens connection after connection, each with one request for the
//! pairing page, and keeps them all open. Another browser on the LAN must
//! still be served at once, and the node must keep routing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::LocalNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects from `from` (an address of this host) and asks for the
/// pairing page; returns the open connection once the answer's head came.
async fn ask_pairing_page(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    let mut stream = socket.connect(to).await?;
    stream
        .write_all(format!("GET /pair HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    if &head != b"HTTP/1.1 200" {
        return Err(std::io::Error::other(format!(
            "answered {:?}",
            String::from_utf8_lossy(&head)
        )));
    }
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lan_host_cannot_take_the_web_app_from_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // On every address: browsers must pair, as on a shelter's LAN.
    let node = LocalNode::start_with(dir.path(), Vec::new(), |c| {
        c.web = format!("0.0.0.0:{port}");
    })
    .await;
    let web: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // The attacker, from 127.0.0.1: more connections than the app serves.
    let mut held = Vec::new();
    for _ in 0..lifeline_node::web::MAX_CONNECTIONS + 16 {
        // Refused or left waiting (not kept): what the cap is for.
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(500),
            ask_pairing_page("127.0.0.1", web),
        )
        .await
        {
            held.push(stream);
        }
    }
    assert!(
        held.len() <= lifeline_node::web::MAX_CONNECTIONS_PER_IP,
        "one host holds {} connections to the web app",
        held.len()
    );

    // Another browser on the LAN, from 127.0.0.2, is served at once.
    let other = tokio::time::timeout(Duration::from_secs(3), ask_pairing_page("127.0.0.2", web))
        .await
        .expect("a second host waited more than 3 s for the pairing page")
        .expect("a second host was refused the pairing page");
    drop(other);

    // The node itself answers as before.
    let mut control = node.control.clone();
    control
        .status(lifeline_node::pb::control::StatusRequest {})
        .await
        .unwrap();
    drop(held);
    node.stop().await;
}
