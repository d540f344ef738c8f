//! A cap on inbound connections from one IP address.
//!
//! libp2p's connection limits count connections in all and per peer, but a
//! peer id costs nothing: one host with many identities could take every
//! inbound slot and cut a node off from honest neighbours (issue 23, item
//! 10). This behaviour refuses an inbound connection, pending or
//! established, from an address that already has `max_per_ip`. Relayed
//! connections are not counted here: their address is the relay's, whose
//! own limits (reservations, circuits) bound them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};
use thiserror::Error;

/// Why an inbound connection was refused.
#[derive(Debug, Error)]
#[error(
    "{ip} already has {count} connections to this node (max_connections_per_ip); \
     refusing another"
)]
pub struct TooManyFromIp {
    /// The address.
    pub ip: IpAddr,
    /// How many it has.
    pub count: u32,
}

/// The behaviour: counts inbound connections per IP address.
#[derive(Debug)]
pub struct Behaviour {
    max_per_ip: u32,
    /// Each inbound connection counted, and its address.
    connections: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, u32>,
}

impl Behaviour {
    /// At most `max_per_ip` inbound connections (at least 1) from one address.
    pub fn new(max_per_ip: u32) -> Self {
        Self {
            max_per_ip: max_per_ip.max(1),
            connections: HashMap::new(),
            per_ip: HashMap::new(),
        }
    }

    /// How many inbound connections `ip` has now.
    pub fn count(&self, ip: &IpAddr) -> u32 {
        self.per_ip.get(ip).copied().unwrap_or(0)
    }

    fn forget(&mut self, connection: ConnectionId) {
        if let Some(ip) = self.connections.remove(&connection)
            && let Some(count) = self.per_ip.get_mut(&ip)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// The IP address a connection comes from, unless it is relayed.
fn direct_ip(address: &Multiaddr) -> Option<IpAddr> {
    if address.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    address.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = direct_ip(remote) else {
            return Ok(());
        };
        let count = self.count(&ip);
        if count >= self.max_per_ip {
            return Err(ConnectionDenied::new(TooManyFromIp { ip, count }));
        }
        self.connections.insert(connection, ip);
        *self.per_ip.entry(ip).or_default() += 1;
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(closed) => self.forget(closed.connection_id),
            FromSwarm::ListenFailure(failure) => self.forget(failure.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_connections_count_against_their_relay_not_its_address() {
        let direct: Multiaddr = "/ip4/192.0.2.7/tcp/4100".parse().unwrap();
        let relayed: Multiaddr =
            "/ip4/192.0.2.7/tcp/4100/p2p/12D3KooWRHnwM4qsWBPp4r7vFGsNuTTEEuKCjXALEhQLPPNZ5wJ4/p2p-circuit"
                .parse()
                .unwrap();
        assert_eq!(direct_ip(&direct), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(direct_ip(&relayed), None);
    }

    #[test]
    fn an_address_gets_its_limit_and_a_slot_back_when_one_closes() {
        let mut limit = Behaviour::new(2);
        let from =
            |port: u16| -> Multiaddr { format!("/ip4/192.0.2.7/tcp/{port}").parse().unwrap() };
        let local: Multiaddr = "/ip4/192.0.2.1/tcp/4100".parse().unwrap();
        let (a, b, c) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        assert!(
            limit
                .handle_pending_inbound_connection(a, &local, &from(1))
                .is_ok()
        );
        assert!(
            limit
                .handle_pending_inbound_connection(b, &local, &from(2))
                .is_ok()
        );
        let refused = limit.handle_pending_inbound_connection(c, &local, &from(3));
        assert!(refused.is_err());
        // Another address is not affected.
        let other: Multiaddr = "/ip4/198.51.100.1/tcp/9".parse().unwrap();
        assert!(
            limit
                .handle_pending_inbound_connection(c, &local, &other)
                .is_ok()
        );
        limit.forget(a);
        assert_eq!(limit.count(&"192.0.2.7".parse().unwrap()), 1);
        let d = ConnectionId::new_unchecked(4);
        assert!(
            limit
                .handle_pending_inbound_connection(d, &local, &from(4))
                .is_ok()
        );
    }
}
