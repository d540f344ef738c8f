//! The control API: gRPC (tonic) on a Unix socket that only the node's
//! owner may open. Each call becomes a [`Command`] for the driver's task,
//! which answers on a oneshot channel.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::pb::control as api;
use crate::pb::control::control_server::{Control, ControlServer};

/// Inbox entries sent before the live ones.
pub const INBOX_BACKLOG: usize = 1_000;

/// What `alerts` asks for.
#[derive(Clone, Debug, Default)]
pub struct AlertQuery {
    /// Only alerts that may cover this point (latitude, longitude).
    pub near: Option<(f64, f64)>,
    /// Each alert's info block in this language (RFC 3066 tag or its
    /// prefix, such as `fr`), where it has one; else its first.
    pub language: String,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request is wrong (the message says how).
    #[error("{0}")]
    BadRequest(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The node keeps no chain.
    #[error(
        "this node keeps no chain: it has no genesis file (put genesis.toml in its data folder)"
    )]
    NoChain,
    /// The node failed.
    #[error("{0}")]
    Internal(String),
}

impl From<CommandError> for Status {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::BadRequest(m) => Status::invalid_argument(m),
            CommandError::NotFound(m) => Status::not_found(m),
            e @ CommandError::NoChain => Status::failed_precondition(e.to_string()),
            CommandError::Internal(m) => Status::internal(m),
        }
    }
}

/// Where the driver answers a command.
pub type Reply<T> = oneshot::Sender<T>;

/// Inbox entries kept, and a receiver for the ones that arrive later.
pub type InboxFeed = (
    Vec<api::InboxMessage>,
    broadcast::Receiver<api::InboxMessage>,
);

/// What the control API asks of the driver.
#[derive(Debug)]
pub enum Command {
    /// This node's status.
    Status(Reply<api::StatusReply>),
    /// Connected peers.
    Peers(Reply<api::PeersReply>),
    /// The routing table.
    Routes(Reply<api::RoutesReply>),
    /// Send a personal message.
    Send(
        api::SendRequest,
        Reply<Result<api::SendReply, CommandError>>,
    ),
    /// Broadcast an SOS.
    Sos(api::SosRequest, Reply<Result<api::SendReply, CommandError>>),
    /// Acknowledge an SOS.
    SosAck(
        api::SosAckRequest,
        Reply<Result<api::SendReply, CommandError>>,
    ),
    /// The newest `limit` inbox entries, and a receiver for new ones.
    Inbox {
        /// How many kept entries.
        limit: usize,
        /// The answer.
        reply: Reply<Result<InboxFeed, CommandError>>,
    },
    /// A sent message's status.
    MessageStatus(String, Reply<Result<api::MessageStatusReply, CommandError>>),
    /// The chain's status.
    ChainStatus(Reply<api::ChainStatusReply>),
    /// A canonical block.
    Block(u64, Reply<Result<api::BlockReply, CommandError>>),
    /// A signed transaction to pool and broadcast.
    SubmitTransaction(
        Vec<u8>,
        Reply<Result<api::SubmitTransactionReply, CommandError>>,
    ),
    /// Alerts in force, optionally only those covering a point (lat, lon).
    Alerts(AlertQuery, Reply<Vec<api::Alert>>),
    /// An authority's vote for its next block.
    Vote(
        api::VoteRequest,
        Reply<Result<api::VoteReply, CommandError>>,
    ),
    /// Sign an action with this node's key and submit it.
    Transact(
        api::TransactRequest,
        Reply<Result<api::TransactReply, CommandError>>,
    ),
    /// Where a transaction is.
    TransactionStatus(
        String,
        Reply<Result<api::TransactionStatusReply, CommandError>>,
    ),
    /// Registered identities matching a query.
    Identities(String, Reply<Result<api::IdentitiesReply, CommandError>>),
    /// One alert in full.
    AlertDetail(String, Reply<Result<api::AlertDetailReply, CommandError>>),
}

/// Asks the driver and waits for its answer; `None` once it has stopped.
/// The channel is bounded: callers wait, the driver never does.
pub async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(Reply<T>) -> Command,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    commands.send(make(tx)).await.ok()?;
    rx.await.ok()
}

#[derive(Clone)]
struct Service {
    commands: mpsc::Sender<Command>,
    web: Option<std::sync::Arc<crate::web::WebHandle>>,
}

const STOPPED: &str = "the node is shutting down";

impl Service {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Status> {
        ask(&self.commands, make)
            .await
            .ok_or_else(|| Status::unavailable(STOPPED))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Control for Service {
    async fn status(
        &self,
        _: Request<api::StatusRequest>,
    ) -> Result<Response<api::StatusReply>, Status> {
        let mut status = self.ask(Command::Status).await?;
        if let Some(web) = &self.web {
            status.web_urls = web.urls(&status.listen_addrs);
        }
        Ok(Response::new(status))
    }

    async fn peers(
        &self,
        _: Request<api::PeersRequest>,
    ) -> Result<Response<api::PeersReply>, Status> {
        self.ask(Command::Peers).await.map(Response::new)
    }

    async fn routes(
        &self,
        _: Request<api::RoutesRequest>,
    ) -> Result<Response<api::RoutesReply>, Status> {
        self.ask(Command::Routes).await.map(Response::new)
    }

    async fn send(&self, r: Request<api::SendRequest>) -> Result<Response<api::SendReply>, Status> {
        let request = r.into_inner();
        Ok(Response::new(
            self.ask(|tx| Command::Send(request, tx)).await??,
        ))
    }

    async fn sos(&self, r: Request<api::SosRequest>) -> Result<Response<api::SendReply>, Status> {
        let request = r.into_inner();
        Ok(Response::new(
            self.ask(|tx| Command::Sos(request, tx)).await??,
        ))
    }

    async fn sos_ack(
        &self,
        r: Request<api::SosAckRequest>,
    ) -> Result<Response<api::SendReply>, Status> {
        let request = r.into_inner();
        Ok(Response::new(
            self.ask(|tx| Command::SosAck(request, tx)).await??,
        ))
    }

    type InboxStream = BoxStream<api::InboxMessage>;

    async fn inbox(
        &self,
        r: Request<api::InboxRequest>,
    ) -> Result<Response<Self::InboxStream>, Status> {
        let watch = r.into_inner().watch;
        let (kept, mut live) = self
            .ask(|reply| Command::Inbox {
                limit: INBOX_BACKLOG,
                reply,
            })
            .await??;
        let stream = async_stream(move |tx| async move {
            for m in kept {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            if !watch {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(m) => {
                        if tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let status = Status::data_loss(format!(
                            "this watcher fell {n} messages behind; they are in the inbox, run `lifeline inbox`"
                        ));
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn message_status(
        &self,
        r: Request<api::MessageStatusRequest>,
    ) -> Result<Response<api::MessageStatusReply>, Status> {
        let id = r.into_inner().id;
        Ok(Response::new(
            self.ask(|tx| Command::MessageStatus(id, tx)).await??,
        ))
    }

    async fn chain_status(
        &self,
        _: Request<api::ChainStatusRequest>,
    ) -> Result<Response<api::ChainStatusReply>, Status> {
        self.ask(Command::ChainStatus).await.map(Response::new)
    }

    async fn block(
        &self,
        r: Request<api::BlockRequest>,
    ) -> Result<Response<api::BlockReply>, Status> {
        let number = r.into_inner().number;
        Ok(Response::new(
            self.ask(|tx| Command::Block(number, tx)).await??,
        ))
    }

    async fn submit_transaction(
        &self,
        r: Request<api::SubmitTransactionRequest>,
    ) -> Result<Response<api::SubmitTransactionReply>, Status> {
        let bytes = r.into_inner().transaction;
        Ok(Response::new(
            self.ask(|tx| Command::SubmitTransaction(bytes, tx))
                .await??,
        ))
    }

    type AlertsStream = BoxStream<api::Alert>;

    async fn alerts(
        &self,
        r: Request<api::AlertsRequest>,
    ) -> Result<Response<Self::AlertsStream>, Status> {
        let request = r.into_inner();
        let watch = request.watch;
        let near = match (request.near_lat, request.near_lon) {
            (Some(lat), Some(lon)) => Some((lat, lon)),
            (None, None) => None,
            _ => {
                return Err(Status::invalid_argument(
                    "give both a latitude and a longitude, or neither",
                ));
            }
        };
        if request.language.len() > 64 {
            return Err(Status::invalid_argument(
                "a language is a short tag such as fr or fr-CA",
            ));
        }
        let query = AlertQuery {
            near,
            language: request.language.trim().to_owned(),
        };
        let service = self.clone();
        let stream = async_stream(move |tx| async move {
            let mut seen = std::collections::HashSet::new();
            loop {
                let query = query.clone();
                let Ok(alerts) = service.ask(|reply| Command::Alerts(query, reply)).await else {
                    return;
                };
                for a in alerts {
                    if seen.insert(a.identifier.clone()) && tx.send(Ok(a)).await.is_err() {
                        return;
                    }
                }
                if !watch {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        Ok(Response::new(stream))
    }

    async fn transact(
        &self,
        r: Request<api::TransactRequest>,
    ) -> Result<Response<api::TransactReply>, Status> {
        let request = r.into_inner();
        Ok(Response::new(
            self.ask(|tx| Command::Transact(request, tx)).await??,
        ))
    }

    async fn transaction_status(
        &self,
        r: Request<api::TransactionStatusRequest>,
    ) -> Result<Response<api::TransactionStatusReply>, Status> {
        let hash = r.into_inner().hash;
        Ok(Response::new(
            self.ask(|tx| Command::TransactionStatus(hash, tx))
                .await??,
        ))
    }

    async fn vote(&self, r: Request<api::VoteRequest>) -> Result<Response<api::VoteReply>, Status> {
        let request = r.into_inner();
        Ok(Response::new(
            self.ask(|tx| Command::Vote(request, tx)).await??,
        ))
    }

    async fn identities(
        &self,
        r: Request<api::IdentitiesRequest>,
    ) -> Result<Response<api::IdentitiesReply>, Status> {
        let query = r.into_inner().query;
        Ok(Response::new(
            self.ask(|tx| Command::Identities(query, tx)).await??,
        ))
    }

    async fn alert_detail(
        &self,
        r: Request<api::AlertDetailRequest>,
    ) -> Result<Response<api::AlertDetailReply>, Status> {
        let identifier = r.into_inner().identifier;
        Ok(Response::new(
            self.ask(|tx| Command::AlertDetail(identifier, tx))
                .await??,
        ))
    }

    async fn web_pair(
        &self,
        r: Request<api::WebPairRequest>,
    ) -> Result<Response<api::WebPairReply>, Status> {
        let Some(web) = &self.web else {
            return Err(Status::failed_precondition(
                "this node serves no web app: set `web` in its config (or --web ADDR) and restart it",
            ));
        };
        let forgotten = if r.into_inner().forget {
            web.pairing.forget_all()
        } else {
            0
        };
        let lifetime = crate::web::pairing::CODE_LIFETIME;
        let listen = self.ask(Command::Status).await?.listen_addrs;
        Ok(Response::new(api::WebPairReply {
            code: web.pairing.new_code(lifetime),
            valid_secs: lifetime.as_secs(),
            urls: web.urls(&listen),
            forgotten: u32::try_from(forgotten).unwrap_or(u32::MAX),
            pairing_required: web.pairing_required,
        }))
    }
}

/// A stream fed by a task, through a small bounded channel.
fn async_stream<T, F, Fut>(body: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The server, ready to run until its stop signal.
pub type Server = Box<
    dyn FnOnce(oneshot::Receiver<()>) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

/// The optional loopback TCP endpoint: where, and the token callers must show.
pub struct TcpEndpoint {
    /// A loopback address.
    pub addr: SocketAddr,
    /// The token (`authorization: Bearer TOKEN`).
    pub token: String,
}

/// Refuses calls without the right bearer token, in constant time; vouches
/// for the connection of a call that shows it (so it may stay open).
#[derive(Clone)]
struct CheckToken(blake3::Hash, crate::capped::Vouching);

impl tonic::service::Interceptor for CheckToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let shown = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // blake3::Hash compares in constant time.
        if blake3::hash(shown.as_bytes()) == self.0 {
            if let Some(peer) = request.remote_addr() {
                self.1.vouch(peer);
            }
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "the control token is missing or wrong: give the one in the node's data folder \
                 (control.token, owner-only) with --control-token-file",
            ))
        }
    }
}

/// Connections the control API on loopback TCP serves at once; more wait.
pub const MAX_TCP_CONNECTIONS: usize = 32;

/// How long a connection to the control API on TCP may stay open without a
/// call that shows the token: an idle client without it cannot hold one of
/// the [`MAX_TCP_CONNECTIONS`] slots.
pub const FIRST_CALL_WITHIN: Duration = Duration::from_secs(10);

/// Binds the control socket at `path` with owner-only permissions, and the
/// loopback TCP endpoint if there is one. A socket left by a node that died
/// is replaced; one that answers belongs to a running node and is an error.
pub async fn serve(
    path: &Path,
    tcp: Option<TcpEndpoint>,
    commands: mpsc::Sender<Command>,
    web: Option<std::sync::Arc<crate::web::WebHandle>>,
) -> Result<Server, String> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(
                "another lifeline node is running with it (stop it, or use another --data-dir)"
                    .into(),
            );
        }
        std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket: {e}"))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let listener = UnixListener::bind(path).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot make it owner-only: {e}"))?;
    let tcp = match tcp {
        None => None,
        Some(endpoint) => {
            let listener = tokio::net::TcpListener::bind(endpoint.addr)
                .await
                .map_err(|e| {
                    format!("cannot listen on {} for control calls: {e}", endpoint.addr)
                })?;
            // Capped in connections; not in time, as watchers (`lifeline
            // inbox --watch`) stay open for good, but closed unless a call
            // with the token comes within FIRST_CALL_WITHIN.
            let (listener, vouching) =
                crate::capped::Capped::new(listener, MAX_TCP_CONNECTIONS, None)
                    .vouch_within(FIRST_CALL_WITHIN);
            Some((
                listener,
                CheckToken(blake3::hash(endpoint.token.as_bytes()), vouching),
            ))
        }
    };
    let service = Service { commands, web };
    Ok(Box::new(move |stop: oneshot::Receiver<()>| {
        Box::pin(async move {
            let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
            let unix = tonic::transport::Server::builder()
                .add_service(ControlServer::new(service.clone()))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), {
                    let mut stopped = stopped.clone();
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    }
                });
            let tcp = async move {
                let Some((listener, check)) = tcp else {
                    return Ok(());
                };
                tonic::transport::Server::builder()
                    .add_service(ControlServer::with_interceptor(service, check))
                    .serve_with_incoming_shutdown(listener.into_stream(), {
                        let mut stopped = stopped.clone();
                        async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        }
                    })
                    .await
            };
            let signal = async move {
                let _ = stop.await;
                let _ = stopped_tx.send(true);
            };
            let (unix, tcp, ()) = tokio::join!(unix, tcp, signal);
            for result in [unix, tcp] {
                if let Err(e) = result {
                    tracing::error!("the control API stopped: {e}");
                }
            }
        })
    }))
}

/// Reads the control token from `path`, or makes one there (owner-only).
pub fn load_or_create_token(path: &Path) -> Result<String, String> {
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the control token {}: {e}", path.display()))?;
        let token = text.trim().to_owned();
        if token.len() < 32 {
            return Err(format!(
                "the control token in {} is too short (at least 32 characters); delete the \
                 file and a new one is made",
                path.display()
            ));
        }
        return Ok(token);
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(options.write(true).create_new(true), 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create the control token {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())
        .map_err(|e| format!("cannot write the control token {}: {e}", path.display()))?;
    Ok(token)
}

/// Where a node keeps the token of its TCP control endpoint.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.token")
}

/// Where the control socket of a node with data folder `data_dir` is.
pub fn default_socket(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}
