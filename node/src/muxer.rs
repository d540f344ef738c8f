//! Yamux for the node's connections, with the limits the node needs.
//!
//! The `yamux` crate auto-tunes each stream's receive window (doubling it
//! while the sender keeps it busy) up to a connection-wide budget that
//! `libp2p-yamux` leaves at 1 GiB, but its frame decoder refuses any data
//! frame over 1 MiB. Rust peers split their frames at 16 KiB; js-libp2p's
//! yamux sends frames as large as the window it was granted, so after a
//! second of bulk transfer it sent 2 MiB frames and the node dropped the
//! connection (`FrameTooLarge(2097140)`, issue 23, item 14). `libp2p-yamux`
//! exposes only the stream count, so this module builds the muxer from
//! `yamux` itself with a budget that keeps every window within what the
//! decoder accepts, and with fewer streams per connection (each may hold a
//! window of unread data).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use futures::future::{Ready, ready as done};
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use yamux::{Connection, ConnectionError, DEFAULT_CREDIT, Mode};

/// Streams one connection may have open at once. Each may hold a window
/// (256 KiB at first) of data not yet read, so this bounds what one peer
/// can make the node buffer per connection.
pub const MAX_STREAMS: usize = 128;

/// Largest data frame `yamux` decodes (its `MAX_FRAME_BODY_LEN`).
pub const MAX_FRAME_BODY: usize = 1024 * 1024;

/// How far, in all, the streams of a connection may grow their windows
/// beyond the first 256 KiB each. One stream can then reach 1 MiB (about
/// 80 Mbit/s over a 100 ms round trip, more than any radio link here),
/// and no peer is ever granted a window larger than a frame may be.
pub const WINDOW_GROWTH: usize = MAX_FRAME_BODY - DEFAULT_CREDIT as usize;

/// Inbound streams kept waiting for the connection's handler; more are
/// reset (as `libp2p-yamux` does; it equals yamux's backlog of streams not
/// yet acknowledged, which well-behaved peers respect).
const MAX_WAITING_STREAMS: usize = 256;

/// The node's yamux, as a connection upgrade for the swarm builder.
#[derive(Clone, Debug)]
pub struct Yamux(yamux::Config);

impl Default for Yamux {
    fn default() -> Self {
        let mut config = yamux::Config::default();
        // In this order: each setter asserts the window covers the streams.
        config.set_max_num_streams(MAX_STREAMS);
        config.set_max_connection_receive_window(Some(
            MAX_STREAMS * DEFAULT_CREDIT as usize + WINDOW_GROWTH,
        ));
        Self(config)
    }
}

impl UpgradeInfo for Yamux {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = Ready<Result<Muxer<C>, std::io::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        done(Ok(Muxer::new(Connection::new(io, self.0, Mode::Server))))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = Ready<Result<Muxer<C>, std::io::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        done(Ok(Muxer::new(Connection::new(io, self.0, Mode::Client))))
    }
}

/// One yamux connection as libp2p drives it.
#[derive(Debug)]
pub struct Muxer<C> {
    connection: Connection<C>,
    /// Inbound streams that came while libp2p polled the connection for
    /// other work, until it asks for them.
    waiting: VecDeque<yamux::Stream>,
    /// Who asked for an inbound stream while none was there.
    wants_inbound: Option<Waker>,
}

impl<C> Muxer<C> {
    fn new(connection: Connection<C>) -> Self {
        Self {
            connection,
            waiting: VecDeque::new(),
            wants_inbound: None,
        }
    }
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    fn next_inbound(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<yamux::Stream, ConnectionError>> {
        match ready!(self.connection.poll_next_inbound(cx)) {
            Some(stream) => Poll::Ready(stream),
            None => Poll::Ready(Err(ConnectionError::Closed)),
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = yamux::Stream;
    type Error = ConnectionError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(stream) = this.waiting.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(stream) = this.next_inbound(cx) {
            return Poll::Ready(stream);
        }
        this.wants_inbound = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.get_mut().connection.poll_new_outbound(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().connection.poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        // Driving the connection is what reads frames; a stream opened
        // meanwhile waits for `poll_inbound`.
        let stream = ready!(this.next_inbound(cx))?;
        if this.waiting.len() >= MAX_WAITING_STREAMS {
            tracing::debug!(stream = %stream.id(), "too many inbound streams waiting; this one is reset");
        } else {
            this.waiting.push_back(stream);
            if let Some(waker) = this.wants_inbound.take() {
                waker.wake();
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_accepted() {
        // yamux asserts (panics) on a window that does not cover the streams.
        let _ = Yamux::default();
    }

    #[test]
    fn no_window_can_outgrow_what_the_decoder_accepts() {
        // The most one stream can reach is its first credit plus all the
        // growth the connection allows (yamux's auto-tuning formula).
        assert_eq!(DEFAULT_CREDIT as usize + WINDOW_GROWTH, MAX_FRAME_BODY);
        // What one connection can make the node buffer, at most.
        let budget = MAX_STREAMS * DEFAULT_CREDIT as usize + WINDOW_GROWTH;
        assert!(budget <= 33 * 1024 * 1024, "{budget}");
    }
}
