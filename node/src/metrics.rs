//! Prometheus metrics (libp2p's own and lifeline's) and `/healthz`, served
//! over HTTP on loopback by default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A message class label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    /// p0, p1, p2 or p3.
    pub class: String,
}

/// A message class and status label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// p0, p1, p2 or p3.
    pub class: String,
    /// What happened.
    pub status: String,
}

/// lifeline's own metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Messages by class and what happened to them here.
    pub messages: Family<StatusLabel, Counter>,
    /// Time from creation to delivery here, by class.
    pub delivery_latency: Family<ClassLabel, Histogram>,
    /// Messages in custody.
    pub custody_messages: Gauge,
    /// Bytes in custody.
    pub custody_bytes: Gauge,
    /// Bytes waiting in link queues.
    pub queued_bytes: Gauge,
    /// Connected peers.
    pub peers: Gauge,
    /// Neighbours with a mesh stream.
    pub neighbours: Gauge,
    /// Routes known.
    pub routes: Gauge,
    /// The chain's head height.
    pub chain_head: Gauge,
    /// The chain's finalized height.
    pub chain_finalized: Gauge,
    /// Misbehaviour events counted against peers.
    pub misbehaviour: Counter,
    /// Peers banned.
    pub bans: Counter,
    /// Routing control bytes sent.
    pub control_bytes: Counter,
    /// Route updates refused because the routing table was full.
    pub routes_refused: Counter,
    /// Scoped meshes: lookups sent for far destinations.
    pub lookups_sent: Counter,
    /// Scoped meshes: answers to them learned.
    pub lookups_answered: Counter,
}

impl Metrics {
    /// Registers lifeline's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            messages: Family::default(),
            delivery_latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0,
                ])
            }),
            custody_messages: Gauge::default(),
            custody_bytes: Gauge::default(),
            queued_bytes: Gauge::default(),
            peers: Gauge::default(),
            neighbours: Gauge::default(),
            routes: Gauge::default(),
            chain_head: Gauge::default(),
            chain_finalized: Gauge::default(),
            misbehaviour: Counter::default(),
            bans: Counter::default(),
            control_bytes: Counter::default(),
            routes_refused: Counter::default(),
            lookups_sent: Counter::default(),
            lookups_answered: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("lifeline");
        r.register(
            "messages",
            "Messages by class and status",
            m.messages.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "Time from a message's creation to its delivery here",
            m.delivery_latency.clone(),
        );
        r.register(
            "custody_messages",
            "Messages in custody",
            m.custody_messages.clone(),
        );
        r.register("custody_bytes", "Bytes in custody", m.custody_bytes.clone());
        r.register(
            "queued_bytes",
            "Bytes waiting in link queues",
            m.queued_bytes.clone(),
        );
        r.register("peers", "Connected peers", m.peers.clone());
        r.register(
            "neighbours",
            "Neighbours with a mesh stream",
            m.neighbours.clone(),
        );
        r.register("routes", "Routes known", m.routes.clone());
        r.register(
            "chain_head",
            "Height of the chain's head",
            m.chain_head.clone(),
        );
        r.register(
            "chain_finalized",
            "Height of the finalized block",
            m.chain_finalized.clone(),
        );
        r.register(
            "misbehaviour",
            "Misbehaviour counted against peers",
            m.misbehaviour.clone(),
        );
        r.register("bans", "Peers banned for misbehaviour", m.bans.clone());
        r.register(
            "control_bytes",
            "Routing control bytes queued for links",
            m.control_bytes.clone(),
        );
        r.register(
            "routes_refused",
            "Route updates for new destinations refused because the routing table was full",
            m.routes_refused.clone(),
        );
        r.register(
            "lookups_sent",
            "Scoped meshes: lookups sent to far destinations' home landmarks",
            m.lookups_sent.clone(),
        );
        r.register(
            "lookups_answered",
            "Scoped meshes: answers to lookups learned (the rest waited 2 s, then went by way of the home)",
            m.lookups_answered.clone(),
        );
        m
    }

    /// Counts one message of `class` with `status`.
    pub fn message(&self, class: lifeline_routing::Class, status: &str) {
        self.messages
            .get_or_create(&StatusLabel {
                class: class_name(class).into(),
                status: status.into(),
            })
            .inc();
    }
}

/// `p0` .. `p3`.
pub fn class_name(class: lifeline_routing::Class) -> &'static str {
    match class {
        lifeline_routing::Class::P0 => "p0",
        lifeline_routing::Class::P1 => "p1",
        lifeline_routing::Class::P2 => "p2",
        lifeline_routing::Class::P3 => "p3",
    }
}

/// The driver's heartbeat: the last time (unix seconds) its loop ran, and
/// whether its last write to the database failed (a full disk, say).
#[derive(Clone, Debug, Default)]
pub struct Heartbeat {
    last: Arc<AtomicU64>,
    write_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl Heartbeat {
    /// Records that the loop ran now.
    pub fn beat(&self) {
        self.last.store(unix_secs(), Ordering::Relaxed);
    }

    /// Records that a write to the database failed: `/healthz` fails until
    /// one succeeds again.
    pub fn write_failed(&self, error: String) {
        if let Ok(mut e) = self.write_error.lock() {
            *e = Some(error);
        }
    }

    /// Records that a write to the database succeeded.
    pub fn write_succeeded(&self) {
        if let Ok(mut e) = self.write_error.lock() {
            *e = None;
        }
    }

    fn age_secs(&self) -> u64 {
        unix_secs().saturating_sub(self.last.load(Ordering::Relaxed))
    }

    fn write_error(&self) -> Option<String> {
        self.write_error.lock().ok().and_then(|e| e.clone())
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    heartbeat: Heartbeat,
}

/// Connections the metrics endpoint serves at once; more wait their turn.
pub const MAX_CONNECTIONS: usize = 16;
/// How long one connection may stay open (a scrape takes milliseconds).
pub const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30);

/// How long the driver may go without running before `/healthz` fails.
pub const HEALTHY_WITHIN_SECS: u64 = 10;

/// Binds `addr` (so a port in use is reported at start) and returns the
/// server to spawn.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    heartbeat: Heartbeat,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = crate::capped::Capped::new(
        tokio::net::TcpListener::bind(addr).await?,
        MAX_CONNECTIONS,
        Some(CONNECTION_LIFETIME),
    );
    let state = AppState {
        registry: Arc::new(registry),
        heartbeat,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state);
    Ok(async move { axum::serve(listener, app).await })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    health(&state.heartbeat)
}

fn health(heartbeat: &Heartbeat) -> (StatusCode, String) {
    let age = heartbeat.age_secs();
    if age > HEALTHY_WITHIN_SECS {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the node's event loop has not run for {age} s\n"),
        );
    }
    if let Some(e) = heartbeat.write_error() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the node cannot write to its database ({e}): it takes nothing into custody and \
                 keeps no new inbox entries; free space in the data folder (a full disk is the \
                 usual cause), then restart the node if this does not clear\n"
            ),
        );
    }
    (StatusCode::OK, "ok\n".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_write_makes_the_node_unhealthy_until_one_succeeds() {
        let heartbeat = Heartbeat::default();
        heartbeat.beat();
        assert_eq!(health(&heartbeat).0, StatusCode::OK);
        heartbeat.write_failed("IO error: No space left on device".into());
        let (status, text) = health(&heartbeat);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            text.contains("No space left") && text.contains("free space"),
            "{text}"
        );
        heartbeat.write_succeeded();
        assert_eq!(health(&heartbeat).0, StatusCode::OK);
    }
}
