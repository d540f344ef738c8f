//! A TCP listener with a cap on open connections and, optionally, on how
//! long each may stay open: for the metrics endpoint and the control API on
//! loopback TCP, which had neither (issue 23, item 13). A client that opens
//! connections and holds them then waits its turn instead of exhausting the
//! node's file descriptors; and one that connects and never authenticates
//! is closed (`Capped::vouch_within`). The web app also caps connections
//! per IP address (`Capped::per_ip`), as its clients come from a LAN.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// A listener that accepts at most `max` connections at once.
#[derive(Debug)]
pub struct Capped {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    lifetime: Option<Duration>,
    /// With [`Capped::vouch_within`]: how long a connection may stay open
    /// before the server vouches for it, and the open ones by peer address.
    vouching: Option<(Duration, Vouching)>,
    /// With [`Capped::per_ip`]: the most connections one IP address may
    /// have open, and how many each has.
    per_ip: Option<PerIp>,
}

/// Open connections by IP address, and the most one may have.
#[derive(Clone, Debug)]
struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a connection from `ip`, unless it has all it may have.
    fn take(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            ip,
            per_ip: self.clone(),
        })
    }
}

/// One connection's place in its address's count.
#[derive(Debug)]
struct IpSlot {
    ip: IpAddr,
    per_ip: PerIp,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Connections waiting to be vouched for, by peer address: the server
/// marks one (after its first authenticated request, say) with
/// [`Vouching::vouch`].
#[derive(Clone, Debug, Default)]
pub struct Vouching(Arc<Mutex<HashMap<SocketAddr, Arc<AtomicBool>>>>);

impl Vouching {
    /// Vouches for the connection from `peer`: it may stay open.
    pub fn vouch(&self, peer: SocketAddr) {
        if let Some(flag) = self.lock().get(&peer) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<AtomicBool>>> {
        // A panic elsewhere while holding it leaves a map still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Capped {
    /// At most `max` open connections (at least 1), each closed after
    /// `lifetime` if one is given.
    pub fn new(listener: TcpListener, max: usize, lifetime: Option<Duration>) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(max.max(1))),
            lifetime,
            vouching: None,
            per_ip: None,
        }
    }

    /// At most `max` open connections from one IP address (at least 1):
    /// one host cannot take every slot. Past it, a new connection from that
    /// address is closed at once.
    #[must_use]
    pub fn per_ip(mut self, max: usize) -> Self {
        self.per_ip = Some(PerIp {
            max: max.max(1),
            open: Arc::default(),
        });
        self
    }

    /// Closes each connection that the server has not vouched for within
    /// `within` (through the returned [`Vouching`]): a client that
    /// connects and never shows the token cannot hold a slot.
    pub fn vouch_within(mut self, within: Duration) -> (Self, Vouching) {
        let vouching = Vouching::default();
        self.vouching = Some((within, vouching.clone()));
        (self, vouching)
    }

    /// Waits for a free slot, then for a connection.
    pub async fn accept(&self) -> io::Result<(CappedStream, SocketAddr)> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("the listener's slots are closed"))?;
        let (stream, addr, ip_slot) = loop {
            let (stream, addr) = self.listener.accept().await?;
            match &self.per_ip {
                None => break (stream, addr, None),
                Some(per_ip) => match per_ip.take(addr.ip()) {
                    Some(slot) => break (stream, addr, Some(slot)),
                    // Dropped: closed, and its slot stays free for others.
                    None => {
                        tracing::debug!(%addr, "refused: too many connections from its address")
                    }
                },
            }
        };
        let deadline = self.lifetime.map(|d| Box::pin(tokio::time::sleep(d)));
        let unvouched = self.vouching.as_ref().map(|(within, vouching)| {
            let flag = Arc::new(AtomicBool::new(false));
            vouching.lock().insert(addr, flag.clone());
            Unvouched {
                flag,
                deadline: Box::pin(tokio::time::sleep(*within)),
                vouching: vouching.clone(),
                peer: addr,
            }
        });
        Ok((
            CappedStream {
                stream,
                _permit: permit,
                _ip_slot: ip_slot,
                deadline,
                unvouched,
            },
            addr,
        ))
    }

    /// The connections, for servers that take a stream of them (tonic).
    pub fn into_stream(self) -> impl Stream<Item = io::Result<CappedStream>> {
        futures::stream::unfold(self, |listener| async move {
            let next = listener.accept().await.map(|(s, _)| s);
            Some((next, listener))
        })
    }
}

impl axum::serve::Listener for Capped {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CappedStream, SocketAddr) {
        loop {
            match Capped::accept(self).await {
                Ok(accepted) => return accepted,
                Err(e) => {
                    // As axum does: a failed accept (out of descriptors,
                    // say) is retried after a pause.
                    tracing::debug!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection that holds its slot until it is dropped.
#[derive(Debug)]
pub struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _ip_slot: Option<IpSlot>,
    deadline: Option<Pin<Box<Sleep>>>,
    unvouched: Option<Unvouched>,
}

/// A connection's wait to be vouched for.
#[derive(Debug)]
struct Unvouched {
    flag: Arc<AtomicBool>,
    deadline: Pin<Box<Sleep>>,
    vouching: Vouching,
    peer: SocketAddr,
}

impl Drop for Unvouched {
    fn drop(&mut self) {
        self.vouching.lock().remove(&self.peer);
    }
}

impl CappedStream {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(u) = &mut self.unvouched {
            if u.flag.load(Ordering::Relaxed) {
                self.unvouched = None;
            } else if u.deadline.as_mut().poll(cx).is_ready() {
                return true;
            }
        }
        self.deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the connection stayed open too long, or without a call the server took",
    )
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for CappedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Before, a client could hold as many connections as it liked.
    #[tokio::test]
    async fn connections_beyond_the_cap_wait_and_old_ones_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let capped = Capped::new(listener, 2, Some(Duration::from_secs(2)));
        // An echo server on it.
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = capped.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        async fn echo(c: &mut TcpStream, wait: Duration) -> bool {
            c.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            tokio::time::timeout(wait, c.read_exact(&mut b))
                .await
                .is_ok_and(|r| r.is_ok())
        }
        let long = Duration::from_secs(5);
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        assert!(echo(&mut a, long).await, "the first is served");
        assert!(echo(&mut b, long).await, "the second is served");
        // A third waits while the first two are open (uncapped, it would be
        // answered within a millisecond)...
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert!(
            !echo(&mut c, Duration::from_millis(150)).await,
            "a third connection was served beside two"
        );
        // ...and is served once one of them closes.
        drop(a);
        let mut one = [0u8; 1];
        tokio::time::timeout(long, c.read_exact(&mut one))
            .await
            .unwrap()
            .unwrap();
        // A connection held open is closed at the end of its lifetime.
        let closed = tokio::time::timeout(long, b.read(&mut one)).await.unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }

    /// Issue 23, item 13: before, a client that connected to the control
    /// API on TCP and never showed the token held one of its slots for
    /// good. A connection nobody vouched for is closed after the deadline;
    /// one the server vouched for stays.
    #[tokio::test]
    async fn a_connection_nobody_vouches_for_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (capped, vouching) =
            Capped::new(listener, 4, None).vouch_within(Duration::from_millis(300));
        let (peers_tx, mut peers) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, peer)) = capped.accept().await else {
                    return;
                };
                let _ = peers_tx.send(peer);
                tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    // Silent: it only reads, as a server waiting for a call.
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                    }
                });
            }
        });
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let idle_peer = peers.recv().await.unwrap();
        let mut vouched = TcpStream::connect(addr).await.unwrap();
        let vouched_peer = peers.recv().await.unwrap();
        assert_ne!(idle_peer, vouched_peer);
        vouching.vouch(vouched_peer);
        let mut one = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut one))
            .await
            .expect("the connection nobody vouched for was left open");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        // The vouched one is still open well past the deadline.
        let open = tokio::time::timeout(Duration::from_millis(800), vouched.read(&mut one)).await;
        assert!(open.is_err(), "the vouched connection was closed: {open:?}");
    }

    #[tokio::test]
    async fn one_address_gets_its_share_and_others_still_get_in() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let capped = Capped::new(listener, 8, None).per_ip(2);
        let (accepted, mut from) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((s, peer)) = capped.accept().await {
                if accepted.send((s, peer)).await.is_err() {
                    return;
                }
            }
        });
        let connect = |ip: &'static str| async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
            socket.connect(addr).await.unwrap()
        };
        let _a1 = connect("127.0.0.1").await;
        let _a2 = connect("127.0.0.1").await;
        let mut a3 = connect("127.0.0.1").await;
        let _b1 = connect("127.0.0.2").await;
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (stream, peer) = tokio::time::timeout(Duration::from_secs(2), from.recv())
                .await
                .unwrap()
                .unwrap();
            peers.push((stream, peer.ip().to_string()));
        }
        let ips: Vec<&str> = peers.iter().map(|(_, ip)| ip.as_str()).collect();
        assert_eq!(ips, ["127.0.0.1", "127.0.0.1", "127.0.0.2"]);
        // The third from 127.0.0.1 was closed at once.
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), a3.read(&mut b))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        // Once one of its connections ends, it may open another.
        drop(peers.remove(0));
        let _a4 = connect("127.0.0.1").await;
        let (_, peer) = tokio::time::timeout(Duration::from_secs(2), from.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.1");
    }
}
