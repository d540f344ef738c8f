//! The app's JSON calls under `/api`: each one a [`Command`] for the
//! driver, as the control API makes them, and the same checks.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use lifeline_crypto::NodeId;
use lifeline_crypto::armor::{self, Kind};
use lifeline_crypto::prekey::{MAX_SIGNED_PREKEY_LEN, PublicPrekey};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{App, MAX_SENT, Sent};
use crate::control::{AlertQuery, Command, CommandError, Reply, ask};
use crate::pb::control as api;

/// The session a call came with (set by `require_session`).
#[derive(Clone)]
pub(super) struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// A failed call: its status and its JSON body, `{"error": "..."}` and,
/// for a refused CAP alert, the line, element and rule too.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// A failed call.
pub(super) fn error(status: StatusCode, message: &str) -> ApiError {
    ApiError {
        status,
        body: json!({ "error": message }),
    }
}

type Answer = Result<Json<Value>, ApiError>;

fn command_error(e: CommandError) -> ApiError {
    let status = match e {
        CommandError::BadRequest(_) => StatusCode::BAD_REQUEST,
        CommandError::NotFound(_) => StatusCode::NOT_FOUND,
        CommandError::NoChain => StatusCode::CONFLICT,
        CommandError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

/// Asks the driver; a stopping node answers 503.
async fn driver<T>(app: &App, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ApiError> {
    ask(&app.commands, make).await.ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is shutting down; reload the page once it runs again",
        )
    })
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(t)| t).map_err(|e| {
        error(
            e.status(),
            &format!("the app sent a request the node cannot read ({e}); reload the page"),
        )
    })
}

/// Refuses an empty (or only white space) `value`, saying `missing`.
fn required(value: &str, missing: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, missing));
    }
    Ok(())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn micro(v: Option<i32>) -> Option<f64> {
    v.map(|m| f64::from(m) / 1e6)
}

/// Names kept for senders' ids; past this many the cache starts over.
const MAX_NAMES: usize = 4096;

/// The name `id` registered on the chain, if any: senders are shown by it.
/// Only names found are kept (one unknown today may register tomorrow).
async fn name_of(app: &App, id: &str) -> Option<String> {
    let lock = || {
        app.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(name) = lock().get(id) {
        return Some(name.clone());
    }
    let query = id.to_owned();
    let found = driver(app, |r| Command::Identities(query, r))
        .await
        .ok()?
        .ok()?;
    let name = found.identities.into_iter().find(|i| i.id == id)?.name;
    let mut names = lock();
    if names.len() >= MAX_NAMES {
        names.clear();
    }
    names.insert(id.to_owned(), name.clone());
    Some(name)
}

async fn inbox_entry(app: &App, m: &api::InboxMessage) -> Value {
    let mut entry = inbox_json(m);
    entry["from_name"] = name_of(app, &m.from).await.into();
    entry
}

fn inbox_json(m: &api::InboxMessage) -> Value {
    json!({
        "id": m.id, "from": m.from, "kind": m.kind,
        "text": String::from_utf8_lossy(&m.text),
        "received_ms": m.received_ms, "sent_ms": m.sent_ms, "hops": m.hops,
        "lat": micro(m.lat_micro), "lon": micro(m.lon_micro),
    })
}

pub(super) async fn not_found() -> ApiError {
    error(StatusCode::NOT_FOUND, "no such call")
}

/// `GET /api/me`: who this node is, and the page's CSRF token.
pub(super) async fn me(State(app): State<App>, Extension(s): Extension<Session>) -> Answer {
    let status = driver(&app, Command::Status).await?;
    let id = status.id.clone();
    let name = driver(&app, |r| Command::Identities(id, r))
        .await?
        .ok()
        .and_then(|found| found.identities.into_iter().next())
        .map(|i| json!({"name": i.name, "roles": i.roles.iter().map(|r| &r.role).collect::<Vec<_>>(), "authority": i.authority}));
    let chain = status.chain.unwrap_or_default();
    Ok(Json(json!({
        "csrf": s.csrf,
        "id": status.id,
        "fingerprint": status.fingerprint,
        "card": status.card,
        "registered": name,
        "chain": chain.enabled,
        "authority": chain.is_authority,
        "pairing_required": app.pairing_required,
        "tiles": app.tiles,
    })))
}

/// `GET /api/inbox`: the newest messages received.
pub(super) async fn inbox(State(app): State<App>) -> Answer {
    let (kept, _) = driver(&app, |reply| Command::Inbox { limit: 200, reply })
        .await?
        .map_err(command_error)?;
    let mut messages = Vec::with_capacity(kept.len());
    for m in kept.iter().rev() {
        messages.push(inbox_entry(&app, m).await);
    }
    Ok(Json(json!({ "messages": messages })))
}

/// `GET /api/sent`: what this app sent, newest first, with each one's
/// status and the receipts seen for it.
pub(super) async fn sent(State(app): State<App>) -> Answer {
    let sent: Vec<Sent> = app
        .sent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .rev()
        .take(50)
        .cloned()
        .collect();
    let mut out = Vec::with_capacity(sent.len());
    for m in sent {
        let id = m.id.clone();
        let status = driver(&app, |r| Command::MessageStatus(id, r))
            .await?
            .unwrap_or_default();
        out.push(json!({
            "id": m.id, "to": m.to, "text": m.text, "kind": m.kind, "sent_ms": m.sent_ms,
            "status": status.status, "receipts": status.receipts,
        }));
    }
    Ok(Json(json!({ "messages": out })))
}

/// `GET /api/events`: messages as they arrive (server-sent events): a
/// `message` event each, `lagged` when this page fell behind (it reloads
/// the inbox).
pub(super) async fn events(
    State(app): State<App>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (_, live) = driver(&app, |reply| Command::Inbox { limit: 0, reply })
        .await?
        .map_err(command_error)?;
    let stream = futures::stream::unfold((live, app), |(mut live, app)| async move {
        let event = match live.recv().await {
            Ok(m) => Event::default()
                .event("message")
                .data(inbox_entry(&app, &m).await.to_string()),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (live, app)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Deserialize)]
pub(super) struct SendBody {
    /// A registered name or an id; may be empty with a card.
    #[serde(default)]
    to: String,
    text: String,
    /// A pasted or scanned contact card.
    #[serde(default)]
    card: String,
}

/// Who `who` is: an id, or the one identity registered under that name.
async fn resolve(app: &App, who: &str) -> Result<String, ApiError> {
    let who = who.trim();
    if who.parse::<NodeId>().is_ok() {
        return Ok(who.to_owned());
    }
    let query = who.to_owned();
    let found = driver(app, |r| Command::Identities(query, r))
        .await?
        .map_err(command_error)?
        .identities;
    match found.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(error(
            StatusCode::NOT_FOUND,
            &format!(
                "no one is registered on the chain as {who:?}: check the spelling, or paste their contact card"
            ),
        )),
        many => Err(error(
            StatusCode::CONFLICT,
            &format!(
                "{} people are registered as {who:?}: paste the card of the one you mean",
                many.len()
            ),
        )),
    }
}

fn remember(app: &App, sent: Sent) {
    let mut list = app
        .sent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if list.len() >= MAX_SENT {
        list.pop_front();
    }
    list.push_back(sent);
}

/// `POST /api/send`: a message to a registered name, an id, or a card.
pub(super) async fn send(
    State(app): State<App>,
    json: Result<Json<SendBody>, JsonRejection>,
) -> Answer {
    let request = body(json)?;
    required(&request.text, "the message is empty: write something")?;
    let (to, prekey) = if request.card.trim().is_empty() {
        required(
            &request.to,
            "say who the message is for: a registered name, or paste their contact card",
        )?;
        (resolve(&app, &request.to).await?, Vec::new())
    } else {
        let bytes = armor::decode(Kind::Card, &request.card, MAX_SIGNED_PREKEY_LEN)
            .map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
        let card = PublicPrekey::from_bytes(&bytes).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("that contact card is not valid ({e}); ask for it again"),
            )
        })?;
        (card.owner().to_string(), bytes)
    };
    let send = api::SendRequest {
        to: to.clone(),
        text: request.text.clone().into_bytes(),
        priority: api::Priority::Normal.into(),
        prekey,
        ttl_secs: 0,
    };
    let reply = driver(&app, |r| Command::Send(send, r))
        .await?
        .map_err(command_error)?;
    remember(
        &app,
        Sent {
            id: reply.id.clone(),
            to: if request.to.trim().is_empty() {
                to
            } else {
                request.to.trim().chars().take(80).collect()
            },
            text: request.text,
            kind: "message",
            sent_ms: unix_ms(),
        },
    );
    Ok(Json(json!({ "id": reply.id })))
}

#[derive(Deserialize)]
pub(super) struct SosBody {
    text: String,
    lat: Option<f64>,
    lon: Option<f64>,
}

/// `POST /api/sos`: an SOS to everyone in reach.
pub(super) async fn sos(
    State(app): State<App>,
    json: Result<Json<SosBody>, JsonRejection>,
) -> Answer {
    let request = body(json)?;
    required(
        &request.text,
        "say in a few words what is happening, so helpers know what to bring",
    )?;
    let micro = |v: Option<f64>, max: f64, what: &str| -> Result<Option<i32>, ApiError> {
        match v {
            None => Ok(None),
            // In range, so the product fits an i32.
            #[allow(clippy::cast_possible_truncation)]
            Some(d) if (-max..=max).contains(&d) => Ok(Some((d * 1e6).round() as i32)),
            Some(d) => Err(error(
                StatusCode::BAD_REQUEST,
                &format!("the {what} {d} is out of range (±{max} degrees)"),
            )),
        }
    };
    let (lat, lon) = (
        micro(request.lat, 90.0, "latitude")?,
        micro(request.lon, 180.0, "longitude")?,
    );
    if lat.is_some() != lon.is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "give both a latitude and a longitude, or neither",
        ));
    }
    let sos = api::SosRequest {
        text: request.text.clone(),
        lat_micro: lat,
        lon_micro: lon,
    };
    let reply = driver(&app, |r| Command::Sos(sos, r))
        .await?
        .map_err(command_error)?;
    remember(
        &app,
        Sent {
            id: reply.id.clone(),
            to: "everyone in reach".into(),
            text: request.text,
            kind: "sos",
            sent_ms: unix_ms(),
        },
    );
    Ok(Json(json!({ "id": reply.id })))
}

#[derive(Deserialize)]
pub(super) struct AckBody {
    id: String,
    #[serde(default)]
    note: String,
}

/// `POST /api/sos/ack`: tell an SOS's sender that help is coming.
pub(super) async fn sos_ack(
    State(app): State<App>,
    json: Result<Json<AckBody>, JsonRejection>,
) -> Answer {
    let request = body(json)?;
    let ack = api::SosAckRequest {
        id: request.id,
        note: request.note,
    };
    let reply = driver(&app, |r| Command::SosAck(ack, r))
        .await?
        .map_err(command_error)?;
    Ok(Json(json!({ "id": reply.id })))
}

#[derive(Deserialize)]
pub(super) struct AlertsQuery {
    lat: Option<f64>,
    lon: Option<f64>,
    #[serde(default)]
    lang: String,
}

/// `GET /api/alerts`: official alerts in force, only those that may cover
/// a point when one is given.
pub(super) async fn alerts(State(app): State<App>, Query(q): Query<AlertsQuery>) -> Answer {
    let near = match (q.lat, q.lon) {
        (Some(lat), Some(lon)) if lat.abs() <= 90.0 && lon.abs() <= 180.0 => Some((lat, lon)),
        (None, None) => None,
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "give a latitude (±90) and a longitude (±180), or neither",
            ));
        }
    };
    let query = AlertQuery {
        near,
        language: q.lang.chars().take(64).collect(),
    };
    let alerts = driver(&app, |r| Command::Alerts(query, r)).await?;
    let list: Vec<Value> = alerts
        .iter()
        .map(|a| {
            json!({
                "identifier": a.identifier, "sender": a.sender, "publisher": a.publisher,
                "headline": a.headline, "event": a.event, "severity": a.severity,
                "area": a.area, "instruction": a.instruction, "status": a.status,
                "sent_ms": a.sent_ms, "expires_ms": a.expires_ms,
                "until_replaced": a.until_replaced, "response_types": a.response_types,
                "area_by_code_only": a.area_by_code_only, "language": a.language,
                "shapes": a.shapes.iter().map(|s| json!({
                    "area": s.area,
                    "ring": s.ring.iter().map(|p| [p.lat, p.lon]).collect::<Vec<_>>(),
                    "center": s.center.as_ref().map(|p| [p.lat, p.lon]),
                    "radius_km": s.radius_km,
                    "geocode": s.geocode,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "alerts": list })))
}

/// `GET /api/network`: neighbours, routes, custody and the chain.
pub(super) async fn network(State(app): State<App>) -> Answer {
    let status = driver(&app, Command::Status).await?;
    let peers = driver(&app, Command::Peers).await?.peers;
    let routes = driver(&app, Command::Routes).await?.routes;
    let chain = status.chain.unwrap_or_default();
    Ok(Json(json!({
        "peers": peers.iter().map(|p| json!({
            "id": p.id, "mesh": p.mesh, "rtt_ms": (p.rtt_us > 0).then(|| p.rtt_us as f64 / 1000.0),
            "misbehaviour": p.misbehaviour, "hop_queue_ms": p.hop_queue_ms,
            "addrs": p.addrs,
        })).collect::<Vec<_>>(),
        "routes": routes.iter().map(|r| json!({
            "destination": r.destination, "next_hop": r.next_hop, "metric": r.metric,
        })).collect::<Vec<_>>(),
        "custody_messages": status.custody_messages,
        "custody_bytes": status.custody_bytes,
        "reachability": status.reachability,
        "uptime_secs": status.uptime_secs,
        "chain": {
            "enabled": chain.enabled, "head": chain.head_number, "head_hash": chain.head_hash,
            "finalized": chain.finalized_number, "authorities": chain.authorities.len(),
            "identities": chain.identities, "halted": chain.halted,
        },
    })))
}

/// `POST /api/logout`: ends this browser's session.
pub(super) async fn logout(State(app): State<App>, Extension(s): Extension<Session>) -> Response {
    app.pairing.close(&s.cookie);
    let mut response = Json(json!({ "ok": true })).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        app.cookie
    )) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// An authority's action on someone: by registered name or id.
#[derive(Deserialize)]
pub(super) struct CertifyBody {
    who: String,
    role: String,
    /// Until when, in Unix milliseconds.
    expires_ms: u64,
}

async fn transact(app: &App, action: api::transact_request::Action) -> Answer {
    let request = api::TransactRequest {
        action: Some(action),
    };
    let reply = driver(app, |r| Command::Transact(request, r))
        .await?
        .map_err(command_error)?;
    Ok(Json(json!({ "hash": reply.hash })))
}

/// `POST /api/authority/certify`: vouch that someone holds a role.
pub(super) async fn certify(
    State(app): State<App>,
    json: Result<Json<CertifyBody>, JsonRejection>,
) -> Answer {
    let request = body(json)?;
    required(
        &request.role,
        "say which role: medic, firefighter, shelter manager...",
    )?;
    if request.expires_ms <= unix_ms() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the role must last until a later date",
        ));
    }
    let subject = resolve(&app, &request.who).await?;
    transact(
        &app,
        api::transact_request::Action::Certify(api::CertifyAction {
            subject,
            role: request.role.trim().to_owned(),
            expires_ms: request.expires_ms,
        }),
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct RevokeBody {
    who: String,
    reason: String,
}

/// `POST /api/authority/revoke`: revoke someone's key.
pub(super) async fn revoke(
    State(app): State<App>,
    json: Result<Json<RevokeBody>, JsonRejection>,
) -> Answer {
    let request = body(json)?;
    required(
        &request.reason,
        "give the reason everyone will read: lost device, stolen key...",
    )?;
    let subject = resolve(&app, &request.who).await?;
    transact(
        &app,
        api::transact_request::Action::Revoke(api::RevokeAction {
            subject,
            reason: request.reason.trim().to_owned(),
        }),
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct VoteBody {
    who: String,
    /// true: add as an authority; false: drop.
    authorize: bool,
}

/// `POST /api/authority/vote`: vote an authority in or out.
pub(super) async fn vote(
    State(app): State<App>,
    json: Result<Json<VoteBody>, JsonRejection>,
) -> Answer {
    let request = body(json)?;
    let target = resolve(&app, &request.who).await?;
    let vote = api::VoteRequest {
        target: target.clone(),
        authorize: request.authorize,
    };
    driver(&app, |r| Command::Vote(vote, r))
        .await?
        .map_err(command_error)?;
    Ok(Json(json!({ "target": target })))
}

#[derive(Deserialize)]
pub(super) struct AlertBody {
    /// A CAP 1.2 document: a file the person chose, or what the page's
    /// form wrote.
    xml: String,
}

/// `POST /api/authority/alert`: publish a CAP 1.2 alert, with the checks
/// and messages of `lifeline alert publish`.
pub(super) async fn publish_alert(
    State(app): State<App>,
    json: Result<Json<AlertBody>, JsonRejection>,
) -> Answer {
    use lifeline_consensus::cap;
    use prost::Message as _;
    let request = body(json)?;
    if request.xml.len() > cap::MAX_CAP_LEN {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the alert is {} bytes; lifeline reads CAP files of at most {} bytes",
                request.xml.len(),
                cap::MAX_CAP_LEN
            ),
        ));
    }
    let import = match cap::from_cap_xml(&request.xml) {
        Ok(import) => import,
        Err(e) => {
            let answer = json!({
                "error": format!("this is not a CAP 1.2 alert lifeline can publish: {e}"),
                "element": e.element, "line": e.line, "rule": e.rule.to_string(),
                "problem": e.message,
            });
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                body: answer,
            });
        }
    };
    let identifier = import.alert.identifier.clone();
    let Json(mut reply) = transact(
        &app,
        api::transact_request::Action::CapAlert(import.alert.to_cap_pb().encode_to_vec()),
    )
    .await?;
    reply["identifier"] = identifier.into();
    reply["not_carried"] = import.not_carried.into();
    Ok(Json(reply))
}

#[derive(Deserialize)]
pub(super) struct TxQuery {
    hash: String,
}

/// `GET /api/tx?hash=`: where a transaction is (pending, included, final).
pub(super) async fn transaction(State(app): State<App>, Query(q): Query<TxQuery>) -> Answer {
    let status = driver(&app, |r| Command::TransactionStatus(q.hash, r))
        .await?
        .map_err(command_error)?;
    Ok(Json(
        json!({ "status": status.status, "block": status.block }),
    ))
}

#[derive(Deserialize)]
pub(super) struct RegisterBody {
    name: String,
}

/// `POST /api/register`: this node registers itself under a name.
pub(super) async fn register(
    State(app): State<App>,
    json: Result<Json<RegisterBody>, JsonRejection>,
) -> Answer {
    let request = body(json)?;
    required(&request.name, "write the name people know you by")?;
    transact(
        &app,
        api::transact_request::Action::Register(api::RegisterAction {
            name: request.name.trim().to_owned(),
        }),
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct IdentityQuery {
    who: String,
}

/// `GET /api/identity?who=`: who a registered name or id is on the chain:
/// name, certified roles, authority, revoked.
pub(super) async fn identity(State(app): State<App>, Query(q): Query<IdentityQuery>) -> Answer {
    let query: String = q.who.trim().chars().take(128).collect();
    let found = driver(&app, |r| Command::Identities(query, r))
        .await?
        .map_err(command_error)?;
    let now = unix_ms();
    let list: Vec<Value> = found
        .identities
        .iter()
        .map(|i| {
            json!({
                "id": i.id, "name": i.name, "authority": i.authority, "revoked": i.revoked,
                "roles": i.roles.iter().filter(|r| r.expires_ms > now).map(|r| &r.role).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "identities": list })))
}

/// `GET /api/card.svg`: this node's contact card as a QR code, for
/// exchanging keys face to face with no network at all.
pub(super) async fn card_qr(State(app): State<App>) -> Result<Response, ApiError> {
    use qrcode::render::svg;
    let status = driver(&app, Command::Status).await?;
    let code =
        qrcode::QrCode::with_error_correction_level(status.card.as_bytes(), qrcode::EcLevel::M)
            .map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("the card does not fit a QR code ({e}); give the card's text instead"),
                )
            })?;
    let image = code.render::<svg::Color>().min_dimensions(280, 280).build();
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], image).into_response())
}
