//! A client of a running node's control API, for the CLI and tests.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use thiserror::Error;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::pb::control::control_client::ControlClient;

/// A control API client, over the Unix socket or loopback TCP.
pub type Client = ControlClient<InterceptedService<Channel, Token>>;

/// Adds the TCP endpoint's bearer token to each call (nothing on the socket).
#[derive(Clone, Debug, Default)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Largest answer read (a block, a long inbox entry).
const MAX_REPLY: usize = 16 << 20;

/// Why the node could not be reached.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "no lifeline node is running for this data folder (no answer on {0}); start one with `lifeline node`, or pass the right --data-dir"
    )]
    NotRunning(PathBuf),
    /// The socket exists but may not be opened.
    #[error(
        "the control socket {0} may not be opened by this user (it is owner-only); run as the node's user"
    )]
    Permission(PathBuf),
    /// Nothing answers at the TCP address.
    #[error(
        "no lifeline node answers on {0}; check the node's control_tcp setting, or use its socket"
    )]
    TcpNotRunning(String),
    /// The token cannot be sent.
    #[error("the control token is not valid (it is hex text, as in the node's control.token)")]
    BadToken,
    /// Anything else.
    #[error("cannot talk to the node on {path}: {reason}")]
    Other {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Connects to the node whose control socket is `socket`.
pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
    // Checked first, so the common mistakes get their own clear message.
    if let Err(e) = tokio::net::UnixStream::connect(socket).await {
        return Err(match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(socket.to_path_buf())
            }
            std::io::ErrorKind::PermissionDenied => ClientError::Permission(socket.to_path_buf()),
            _ => ClientError::Other {
                path: socket.to_path_buf(),
                reason: e.to_string(),
            },
        });
    }
    let path = socket.to_path_buf();
    // The URI is required by tonic and unused: the connector opens the socket.
    let channel = Endpoint::from_static("http://lifeline.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| ClientError::Other {
            path: socket.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(ControlClient::with_interceptor(channel, Token::default())
        .max_decoding_message_size(MAX_REPLY))
}

/// Connects to a node's loopback TCP endpoint (`host:port`) with its token.
pub async fn connect_tcp(addr: &str, token: &str) -> Result<Client, ClientError> {
    let value: MetadataValue<Ascii> = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| ClientError::BadToken)?;
    let other = |reason: String| ClientError::Other {
        path: PathBuf::from(addr),
        reason,
    };
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}")).map_err(|e| other(e.to_string()))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|_| ClientError::TcpNotRunning(addr.to_owned()))?;
    Ok(ControlClient::with_interceptor(channel, Token(Some(value)))
        .max_decoding_message_size(MAX_REPLY))
}
