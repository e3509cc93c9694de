//! The one place that holds a bollard client: connected lazily, version negotiated on first use,
//! forgotten when the engine goes away so that the next call starts afresh.

use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use sandkeeper_ports::{Cause, RuntimeError};
use tokio::sync::Mutex;

/// How long the first `/version` call may take. An engine that does not answer that quickly is
/// treated as unreachable, not as slow.
pub(crate) const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Client {
    endpoint: String,
    call_timeout: Duration,
    docker: Mutex<Option<Docker>>,
}

impl Client {
    /// Nothing is contacted here: sandkeeper starts while the engine is down.
    pub(crate) fn new(endpoint: String, call_timeout: Duration) -> Self {
        Self { endpoint, call_timeout, docker: Mutex::new(None) }
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client that has negotiated the API version with the engine, connecting if needed.
    ///
    /// The lock is held while connecting so that a burst of calls after a restart negotiates once;
    /// each caller is still bounded by its own call timeout.
    pub(crate) async fn get(&self) -> Result<Docker, RuntimeError> {
        let mut slot = self.docker.lock().await;
        if let Some(docker) = slot.as_ref() {
            return Ok(docker.clone());
        }
        // bollard checks that a unix socket exists when the client is built, so building it
        // must wait until the engine is there.
        let docker = Docker::connect_with_host(&self.endpoint)
            .map_err(|error| self.unavailable(error))?
            // bollard's own limit stays above ours so that ours, which names the operation,
            // is the one that fires.
            .with_timeout(self.call_timeout + Duration::from_secs(1));
        let negotiated = tokio::time::timeout(NEGOTIATION_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| {
                RuntimeError::Unavailable(Cause::message(format!(
                    "the Docker engine at {} did not answer within {NEGOTIATION_TIMEOUT:?}",
                    self.endpoint
                )))
            })?
            .map_err(|error| self.translate(error))?;
        let version = negotiated.client_version();
        tracing::debug!(
            endpoint = %self.endpoint,
            api_version = %format!("{}.{}", version.major_version, version.minor_version),
            "connected to the Docker engine"
        );
        *slot = Some(negotiated.clone());
        Ok(negotiated)
    }

    /// Drops the client after the engine could not be reached, so that the next call connects
    /// and negotiates again (the engine may come back as another version).
    pub(crate) async fn forget(&self) {
        *self.docker.lock().await = None;
    }

    /// Translates a bollard error that no caller handles itself: unreachable engine, timeout,
    /// or anything else with the engine's own message. bollard's error stays the cause.
    pub(crate) fn translate(&self, error: BollardError) -> RuntimeError {
        match &error {
            BollardError::DockerResponseServerError { status_code, message } => {
                RuntimeError::Failed(Cause::message(format!(
                    "the Docker engine at {} answered {status_code}: {}",
                    self.endpoint,
                    message.trim()
                )))
            }
            BollardError::RequestTimeoutError => {
                RuntimeError::Unavailable(Cause::new(error).context(format!(
                    "the Docker engine at {} did not answer in time",
                    self.endpoint
                )))
            }
            BollardError::SocketNotFoundError(_)
            | BollardError::HyperLegacyError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::IOError { .. } => self.unavailable(error),
            _ => RuntimeError::Failed(
                Cause::new(error)
                    .context(format!("talking to the Docker engine at {} failed", self.endpoint)),
            ),
        }
    }

    fn unavailable(&self, error: BollardError) -> RuntimeError {
        let context = format!("cannot reach the Docker engine at {}", self.endpoint);
        let cause = match error {
            BollardError::SocketNotFoundError(path) => {
                Cause::message(format!("socket {path} does not exist"))
            }
            other => Cause::new(other),
        };
        RuntimeError::Unavailable(cause.context(context))
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// The 404 the engine answers for a container (or image) it does not know.
pub(crate) fn is_not_found(error: &BollardError) -> bool {
    matches!(error, BollardError::DockerResponseServerError { status_code: 404, .. })
}

pub(crate) fn is_conflict(error: &BollardError) -> bool {
    matches!(error, BollardError::DockerResponseServerError { status_code: 409, .. })
}

#[cfg(test)]
mod tests {
    use sandkeeper_ports::Report;

    use super::*;

    fn client() -> Client {
        Client::new("unix:///nowhere.sock".to_owned(), Duration::from_secs(5))
    }

    #[test]
    fn a_missing_socket_is_unavailable_and_names_the_endpoint() {
        let error = client().translate(BollardError::SocketNotFoundError("/nowhere.sock".into()));
        assert!(matches!(error, RuntimeError::Unavailable(_)), "{error:?}");
        let message = Report(&error).to_string();
        assert!(message.contains("unix:///nowhere.sock"), "{message}");
        assert!(message.contains("socket /nowhere.sock does not exist"), "{message}");
    }

    #[test]
    fn an_engine_error_keeps_the_engine_message() {
        let error = client().translate(BollardError::DockerResponseServerError {
            status_code: 500,
            message: "Unknown runtime specified runsc\n".into(),
        });
        assert_eq!(
            error,
            RuntimeError::Failed(
                "the Docker engine at unix:///nowhere.sock answered 500: Unknown runtime specified runsc"
                    .into()
            )
        );
    }

    #[test]
    fn an_io_error_is_unavailable_with_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = client().translate(BollardError::IOError { err: io });
        assert!(matches!(error, RuntimeError::Unavailable(_)), "{error:?}");
        // The chain: what failed, where, and the I/O error itself, kept as bollard gave it.
        let context = std::error::Error::source(&error).expect("where it failed");
        assert!(context.to_string().contains("unix:///nowhere.sock"), "{context}");
        let io = context.source().expect("the I/O error stays in the chain");
        assert_eq!(io.to_string(), "connection refused");
    }
}
