//! A client of a running node's control API, for the CLI and tests.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

use crate::pb::control::control_client::ControlClient;

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
pub async fn connect(socket: &Path) -> Result<ControlClient<Channel>, ClientError> {
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
    Ok(ControlClient::new(channel).max_decoding_message_size(16 << 20))
}
