//! The web app: the node's pages for people who never open a terminal,
//! served over HTTP on the daemon's runtime (docs/web.md).
//!
//! Every page and call goes through the same [`Command`]s as the control
//! API, so the driver answers them between its other work and nothing a
//! page does can block it. On loopback the app opens at once; anywhere else
//! a browser must first pair with a code from `lifeline web pair`.
//!
//! The page's own safety: a strict Content-Security-Policy (no inline
//! script, nothing from elsewhere), the session in an `HttpOnly`,
//! `SameSite=Strict` cookie, a CSRF token echoed in a header on every
//! action, the Host checked on loopback (against DNS rebinding), bounded
//! bodies and connections.

mod api;
mod assets;
pub mod pairing;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::handler::Handler as _;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};
use tower_http::compression::CompressionLayer;

use crate::capped::{Capped, Vouching};
use crate::control::Command;
pub use pairing::Pairing;

/// Connections served at once; more wait. A browser keeps about six.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections one IP address may hold when the app is on the LAN: one
/// host cannot take every slot.
pub const MAX_CONNECTIONS_PER_IP: usize = 16;
/// How long a connection may stay open unless a request on it shows a
/// session (or pairs): an unpaired client cannot hold a slot.
pub const FIRST_REQUEST_WITHIN: Duration = Duration::from_secs(10);
/// Largest request body (a message is at most 32 KiB of text).
pub const MAX_BODY: usize = 64 * 1024;
/// Messages sent from the app whose status its Messages page follows.
pub const MAX_SENT: usize = 200;
/// The header every action carries, holding the session's CSRF token.
pub const CSRF_HEADER: &str = "x-lifeline-csrf";

/// What the control API needs of the web app (`lifeline web pair`).
pub struct WebHandle {
    /// Codes and sessions.
    pub pairing: Arc<Pairing>,
    /// Where the app is, for people (`http://ADDR/`).
    pub url: String,
    /// Its port, and whether it listens on every address (then its URLs
    /// are this machine's addresses, which the node's own listeners know).
    pub port: u16,
    /// See `port`.
    pub every_address: bool,
    /// Whether browsers must pair (the app is not on loopback only).
    pub pairing_required: bool,
}

/// A message sent from the app, as its Messages page lists it.
#[derive(Clone, Debug)]
struct Sent {
    id: String,
    to: String,
    text: String,
    kind: &'static str,
    sent_ms: u64,
}

#[derive(Clone)]
struct App {
    commands: mpsc::Sender<Command>,
    pairing: Arc<Pairing>,
    pairing_required: bool,
    cookie: String,
    sent: Arc<Mutex<VecDeque<Sent>>>,
    vouching: Vouching,
    /// Whether the map has offline tiles.
    tiles: bool,
    /// Registered names of senders, by id (api::name_of).
    names: Arc<Mutex<std::collections::HashMap<String, String>>>,
}

/// The server, ready to run until its stop signal.
pub type Server = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What the web app serves, and where.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// Its address.
    pub addr: SocketAddr,
    /// Where paired sessions are kept (None: in memory).
    pub sessions_file: Option<PathBuf>,
    /// Offline map tiles (a PMTiles file), checked by [`check_tiles`].
    pub tiles: Option<PathBuf>,
}

/// Why the web app cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The tile file is not usable.
    #[error(
        "the map tiles {path} cannot be used: {reason} (give a PMTiles file, version 3, of \
         raster tiles; see docs/web.md)"
    )]
    Tiles {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Checks that `path` is a PMTiles (version 3) archive of raster tiles, so
/// a wrong file stops the node at start rather than leaving a blank map.
pub fn check_tiles(path: &Path) -> Result<(), WebError> {
    let fail = |reason: String| WebError::Tiles {
        path: path.to_path_buf(),
        reason,
    };
    let mut header = [0u8; 127];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .map_err(|e| fail(e.to_string()))?;
    if &header[..7] != b"PMTiles" || header[7] != 3 {
        return Err(fail("it is not a PMTiles version 3 file".into()));
    }
    // Tile type, byte 99: 1 MVT (vector), 2 PNG, 3 JPEG, 4 WebP, 5 AVIF.
    match header[99] {
        2..=5 => Ok(()),
        1 => Err(fail(
            "its tiles are vector tiles; the app draws raster tiles (PNG, JPEG, WebP)".into(),
        )),
        t => Err(fail(format!("its tile type {t} is unknown"))),
    }
}

/// Binds the address (so a port in use is reported at start) and returns
/// the handle for the control API and the server to spawn.
pub async fn serve(
    options: WebOptions,
    commands: mpsc::Sender<Command>,
    stop: oneshot::Receiver<()>,
) -> Result<(Arc<WebHandle>, Server), WebError> {
    let addr = options.addr;
    if let Some(tiles) = &options.tiles {
        check_tiles(tiles)?;
    }
    let bind = |source| WebError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let pairing_required = !addr.ip().is_loopback();
    let mut capped = Capped::new(listener, MAX_CONNECTIONS, None);
    if pairing_required {
        // On loopback every client is this machine: no address to tell apart.
        capped = capped.per_ip(MAX_CONNECTIONS_PER_IP);
    }
    let (listener, vouching) = capped.vouch_within(FIRST_REQUEST_WITHIN);
    let pairing = Arc::new(Pairing::new(options.sessions_file));
    let url = if addr.ip().is_unspecified() {
        format!("http://<this machine's address>:{}/", bound.port())
    } else {
        format!("http://{bound}/")
    };
    let app = App {
        commands,
        pairing: pairing.clone(),
        pairing_required,
        // Browsers share cookies between the ports of one host: one name
        // per port keeps two nodes on one machine apart.
        cookie: format!("lifeline_session_{}", bound.port()),
        sent: Arc::new(Mutex::new(VecDeque::new())),
        vouching,
        tiles: options.tiles.is_some(),
        names: Arc::default(),
    };
    let router = routes(app, options.tiles);
    let handle = Arc::new(WebHandle {
        pairing,
        url,
        port: bound.port(),
        every_address: addr.ip().is_unspecified(),
        pairing_required,
    });
    let server = Box::pin(async move {
        let service = router.into_make_service_with_connect_info::<Peer>();
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await
        {
            tracing::error!("the web app stopped: {e}");
        }
    });
    Ok((handle, server))
}

fn routes(app: App, tiles: Option<PathBuf>) -> Router {
    let mut api = Router::new();
    if let Some(path) = tiles {
        // Range requests: the map reads only the tiles it shows.
        api = api.route_service("/tiles.pmtiles", tower_http::services::ServeFile::new(path));
    }
    let api = api
        .route("/me", get(api::me))
        .route("/inbox", get(api::inbox))
        .route("/sent", get(api::sent))
        .route("/events", get(api::events))
        .route("/send", post(api::send))
        .route("/sos", post(api::sos))
        .route("/sos/ack", post(api::sos_ack))
        .route("/alerts", get(api::alerts))
        .route("/network", get(api::network))
        .route("/logout", post(api::logout))
        .route("/tx", get(api::transaction))
        .route("/register", post(api::register))
        .route("/identity", get(api::identity))
        .route("/card.svg", get(api::card_qr))
        .route("/authority/certify", post(api::certify))
        .route("/authority/revoke", post(api::revoke))
        .route("/authority/vote", post(api::vote))
        .route(
            "/authority/alert",
            // A CAP file may be 4 MiB (embedded media, dropped), and JSON
            // escaping may double it.
            post(api::publish_alert).layer(DefaultBodyLimit::max(
                2 * lifeline_consensus::cap::MAX_CAP_LEN + 1024,
            )),
        )
        .fallback(api::not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_session,
        ));
    Router::new()
        // The app's own files, gzipped for a slow Wi-Fi (about a quarter of
        // their size); not the API: its event stream must not be buffered,
        // nor the tiles, which go by range.
        .route("/", get(index.layer(CompressionLayer::new())))
        .route("/pair", get(pair_page).post(pair))
        .nest("/api", api)
        .fallback(static_file.layer(CompressionLayer::new()))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// The address a connection comes from.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl WebHandle {
    /// The app's addresses for people: on every address, one per address of
    /// this machine among `listen` (the node's libp2p listen addresses).
    pub fn urls(&self, listen: &[String]) -> Vec<String> {
        if !self.every_address {
            return vec![self.url.clone()];
        }
        let mut urls: Vec<String> = listen
            .iter()
            .filter_map(|a| {
                let mut parts = a.split('/');
                match (parts.nth(1), parts.next()) {
                    (Some("ip4"), Some(ip)) => ip.parse::<std::net::Ipv4Addr>().ok(),
                    _ => None,
                }
            })
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .map(|ip| format!("http://{ip}:{}/", self.port))
            .collect();
        urls.sort();
        urls.dedup();
        if urls.is_empty() {
            urls.push(self.url.clone());
        }
        urls
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Capped>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Capped>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The session cookie's value, if the request carries one.
fn cookie_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str) -> HeaderValue {
    // Not `Secure`: the app is plain HTTP on a LAN without certificates.
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        pairing::SESSION_IDLE.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A host a loopback-only app answers to: a literal IP or `localhost`. A
/// page of another site whose name was made to resolve to 127.0.0.1 (DNS
/// rebinding) sends its own name, and is refused.
fn loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Every request: the Host and Origin checks, the page-safety headers.
async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut response = if !app.pairing_required && !loopback_host(&host) {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this lifeline node's web app answers only to localhost or its IP address; open it by that",
        )
            .into_response()
    } else if request.method() != Method::GET
        && request.method() != Method::HEAD
        && !same_origin(request.headers(), &host)
    {
        (
            StatusCode::FORBIDDEN,
            "this action came from another site's page; use the lifeline app itself",
        )
            .into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            // blob: images are offline map tiles, which the PMTiles reader
            // unpacks in the page.
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it a browser sends `Origin: null` on the
    // app's own form posts, and the Origin check above refuses them.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// An action's Origin, when the browser sends one, must be this app.
fn same_origin(headers: &HeaderMap, host: &str) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host)),
    }
}

/// The session of an `/api` call, with its CSRF token checked on actions.
/// Lets the connection a request came on stay open: it showed a session.
fn vouch(app: &App, peer: Option<&ConnectInfo<Peer>>) {
    if let Some(ConnectInfo(Peer(peer))) = peer {
        app.vouching.vouch(*peer);
    }
}

async fn require_session(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let Some(cookie) = cookie_of(request.headers(), &app.cookie).map(str::to_owned) else {
        return api::error(
            StatusCode::UNAUTHORIZED,
            "this browser is not paired with the node: open the app's address and enter a pairing code",
        )
        .into_response();
    };
    let Some(csrf) = app.pairing.session(&cookie) else {
        return api::error(
            StatusCode::UNAUTHORIZED,
            "this browser's pairing ended (the operator ended it, or it went unused): pair again",
        )
        .into_response();
    };
    if request.method() != Method::GET {
        let shown = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // blake3::Hash compares in constant time.
        if blake3::hash(shown.as_bytes()) != blake3::hash(csrf.as_bytes()) {
            return api::error(
                StatusCode::FORBIDDEN,
                "this action lacks the page's token: reload the page and try again",
            )
            .into_response();
        }
    }
    vouch(&app, request.extensions().get());
    request
        .extensions_mut()
        .insert(api::Session { cookie, csrf });
    next.run(request).await
}

/// `/`: the app, with a session: one opened here on loopback, else the
/// pairing page.
async fn index(State(app): State<App>, peer: ConnectInfo<Peer>, headers: HeaderMap) -> Response {
    if let Some(cookie) = cookie_of(&headers, &app.cookie)
        && app.pairing.session(cookie).is_some()
    {
        vouch(&app, Some(&peer));
        return assets::serve(assets::INDEX_HTML);
    }
    if app.pairing_required {
        return assets::pair_page(StatusCode::UNAUTHORIZED, None);
    }
    vouch(&app, Some(&peer));
    let session = app.pairing.open_unpaired();
    let mut response = assets::serve(assets::INDEX_HTML);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&app.cookie, &session.cookie));
    response
}

/// The app's files (anyone may have them: they hold nothing of the node).
async fn static_file(method: Method, uri: axum::http::Uri) -> Response {
    match assets::by_path(uri.path()) {
        Some(asset) if method == Method::GET || method == Method::HEAD => assets::serve(asset),
        _ => (StatusCode::NOT_FOUND, "no such page").into_response(),
    }
}

async fn pair_page() -> Response {
    assets::pair_page(StatusCode::OK, None)
}

#[derive(serde::Deserialize)]
struct PairForm {
    code: String,
}

/// `POST /pair`: a code from the form, for a session.
async fn pair(
    State(app): State<App>,
    peer: ConnectInfo<Peer>,
    form: axum::Form<PairForm>,
) -> Response {
    if form.code.len() > 64 {
        return assets::pair_page(
            StatusCode::BAD_REQUEST,
            Some("A pairing code is 12 letters and digits, like 7KQ2-M9XD-PA4F."),
        );
    }
    match app.pairing.pair(&form.code) {
        Ok(session) => {
            vouch(&app, Some(&peer));
            Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, "/")
                .header(header::SET_COOKIE, set_cookie(&app.cookie, &session.cookie))
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(e) => {
            tracing::info!("a browser failed to pair: {e}");
            let status = match e {
                pairing::PairError::WrongCode => StatusCode::UNAUTHORIZED,
                pairing::PairError::TooManyFailures => StatusCode::TOO_MANY_REQUESTS,
            };
            assets::pair_page(status, Some(&e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PMTiles version 3 header of tiles of `kind`, and some bytes more.
    fn pmtiles(kind: u8) -> tempfile::NamedTempFile {
        let mut bytes = vec![0u8; 200];
        bytes[..7].copy_from_slice(b"PMTiles");
        bytes[7] = 3;
        bytes[99] = kind;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        file
    }

    #[test]
    fn only_raster_pmtiles_are_taken_as_map_tiles() {
        check_tiles(pmtiles(2).path()).unwrap();
        let vector = check_tiles(pmtiles(1).path()).unwrap_err().to_string();
        assert!(vector.contains("vector tiles"), "{vector}");
        let other = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(other.path(), b"SQLite format 3\0 and more bytes").unwrap();
        let e = check_tiles(other.path()).unwrap_err().to_string();
        assert!(e.contains("PMTiles"), "{e}");
    }

    #[tokio::test]
    async fn tiles_are_served_by_range_to_paired_browsers_only() {
        use tower::ServiceExt;
        let file = pmtiles(2);
        let (commands, _driver) = mpsc::channel(1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_, vouching) = Capped::new(listener, 1, None).vouch_within(FIRST_REQUEST_WITHIN);
        let pairing = Arc::new(Pairing::new(None));
        let session = pairing.open_unpaired();
        let app = App {
            commands,
            pairing,
            pairing_required: true,
            cookie: "c".into(),
            sent: Arc::default(),
            vouching,
            tiles: true,
            names: Arc::default(),
        };
        let router = routes(app, Some(file.path().to_path_buf()));
        let request = |cookie: &str| {
            let mut r = Request::builder()
                .uri("/api/tiles.pmtiles")
                .header(header::HOST, "192.0.2.1:4180")
                .header(header::RANGE, "bytes=0-6")
                .header(header::COOKIE, format!("c={cookie}"))
                .body(Body::empty())
                .unwrap();
            r.extensions_mut()
                .insert(ConnectInfo(Peer("192.0.2.2:5000".parse().unwrap())));
            r
        };
        let refused = router.clone().oneshot(request("nope")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let served = router.oneshot(request(&session.cookie)).await.unwrap();
        assert_eq!(served.status(), StatusCode::PARTIAL_CONTENT);
        let body = axum::body::to_bytes(served.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"PMTiles");
    }

    #[test]
    fn loopback_hosts_are_literal_addresses_or_localhost() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:9",
            "10.0.0.2",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1.nip.io:80",
            "",
            "localhost.evil",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; lifeline_session_1=abc; b=2"),
        );
        assert_eq!(cookie_of(&h, "lifeline_session_1"), Some("abc"));
        assert_eq!(cookie_of(&h, "lifeline_session_2"), None);
    }

    #[test]
    fn actions_from_other_sites_are_refused() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h, "127.0.0.1:1"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:1"),
        );
        assert!(same_origin(&h, "127.0.0.1:1"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h, "127.0.0.1:1"));
    }
}
