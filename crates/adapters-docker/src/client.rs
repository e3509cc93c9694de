//! The one owner of the engine client and of the bounds on every call to it: the bollard
//! client, connected lazily, its API version negotiated on first use and forgotten when the
//! engine goes away so that the next call starts afresh; the call timeout, the latency metric,
//! and the translation of bollard's errors into [`RuntimeError`] (bollard's error kept as the
//! cause). Everything else in this crate talks to the engine through here.

use std::future::Future;
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::{API_DEFAULT_VERSION, Docker};
use sandkeeper_ports::{Cause, ExecError, FileError, ProcessError, Report, RuntimeError};
use tokio::sync::Mutex;

use crate::config::{Endpoint, TlsFiles};

/// The latency histogram of every engine call, labelled `operation`
/// (`create`, `stop`, `inspect`, `list_managed`, `ping`, and `exec`, `upload`, `download` for
/// the whole of a command or a transfer).
pub const DURATION_METRIC: &str = "sandbox.docker.duration.seconds";

/// How long the first `/version` call may take. An engine that does not answer that quickly is
/// treated as unreachable, not as slow.
pub(crate) const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Client {
    endpoint: String,
    tls: Option<TlsFiles>,
    call_timeout: Duration,
    docker: Mutex<Option<Docker>>,
}

impl Client {
    /// Nothing is contacted here: sandkeeper starts while the engine is down.
    pub(crate) fn new(endpoint: Endpoint, call_timeout: Duration) -> Self {
        let Endpoint { host: endpoint, tls } = endpoint;
        Self { endpoint, tls, call_timeout, docker: Mutex::new(None) }
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bound on one engine call.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Runs one operation: connects if needed, bounds it by the call timeout, records its
    /// latency, and forgets the connection when the engine turned out to be unreachable.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        run: F,
    ) -> Result<T, RuntimeError>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, RuntimeError>>,
    {
        let started = Instant::now();
        let bounded = tokio::time::timeout(self.call_timeout, async {
            let docker = self.get().await?;
            run(docker).await
        })
        .await;
        let result =
            bounded.unwrap_or(Err(RuntimeError::Timeout { operation, after: self.call_timeout }));
        metrics::histogram!(DURATION_METRIC, "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            tracing::debug!(operation, error = %Report(&error), "Docker call failed");
            if matches!(error, RuntimeError::Unavailable(_)) {
                self.forget().await;
            }
        }
        result
    }

    /// Runs an operation that may take `runs_for` beyond its engine calls (a command, a
    /// transfer). Its bound is generous but final: connecting and starting (one call timeout),
    /// running for `runs_for`, and reading the outcome (another call timeout). Failures are
    /// translated into `E` through `RuntimeError` like every other call.
    pub(crate) async fn long_call<T, E, F, Fut>(
        &self,
        operation: &'static str,
        runs_for: Duration,
        run: F,
    ) -> Result<T, E>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<RuntimeError> + EngineLoss,
    {
        let started = Instant::now();
        let bound = runs_for.saturating_add(self.call_timeout.saturating_mul(2));
        let bounded = tokio::time::timeout(bound, async {
            let docker = match tokio::time::timeout(self.call_timeout, self.get()).await {
                Ok(Ok(docker)) => docker,
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => {
                    let after = self.call_timeout;
                    return Err(RuntimeError::Timeout { operation, after }.into());
                }
            };
            run(docker).await
        })
        .await;
        metrics::histogram!(DURATION_METRIC, "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        let result = match bounded {
            Ok(result) => result,
            Err(_) => Err(RuntimeError::Timeout { operation, after: bound }.into()),
        };
        if let Err(error) = &result {
            if error.engine_lost() {
                self.forget().await;
            }
        }
        result
    }

    /// Bounds one engine call, made inside an operation, by the call timeout.
    pub(crate) async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = T>,
    ) -> Result<T, RuntimeError> {
        let after = self.call_timeout;
        tokio::time::timeout(after, call)
            .await
            .map_err(|_| RuntimeError::Timeout { operation, after })
    }

    /// A client, connected within the call timeout, for an operation that outlives one call
    /// (following the engine's events).
    pub(crate) async fn connected(&self, operation: &'static str) -> Result<Docker, RuntimeError> {
        match self.bounded(operation, self.get()).await {
            Ok(Ok(docker)) => Ok(docker),
            Ok(Err(error)) => Err(self.lost(error).await),
            Err(timeout) => Err(timeout),
        }
    }

    /// Forgets the connection after the engine could not be reached, and returns the error.
    pub(crate) async fn lost(&self, error: RuntimeError) -> RuntimeError {
        if matches!(error, RuntimeError::Unavailable(_)) {
            self.forget().await;
        }
        error
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
        let docker = self
            .build()
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

    /// The bollard client for the endpoint. TLS is ours to decide (the configuration's files),
    /// never bollard's own reading of `DOCKER_TLS_VERIFY`: a plain `tcp://` engine is reached
    /// over plain HTTP.
    fn build(&self) -> Result<Docker, BollardError> {
        // bollard's own limit; `get` replaces it with one just above the call timeout.
        let seconds = self.call_timeout.as_secs() + 1;
        match &self.tls {
            Some(tls) => Docker::connect_with_ssl(
                &self.endpoint,
                &tls.key,
                &tls.cert,
                &tls.ca,
                seconds,
                API_DEFAULT_VERSION,
            ),
            None if self.endpoint.starts_with("tcp://") || self.endpoint.starts_with("http://") => {
                Docker::connect_with_http(&self.endpoint, seconds, API_DEFAULT_VERSION)
            }
            None => Docker::connect_with_host(&self.endpoint),
        }
    }

    /// Drops the client after the engine could not be reached, so that the next call connects
    /// and negotiates again (the engine may come back as another version).
    async fn forget(&self) {
        *self.docker.lock().await = None;
    }

    /// Translates a bollard error that no caller handles itself: unreachable engine, timeout,
    /// or anything else with the engine's own message. bollard's error stays the cause.
    pub(crate) fn translate(&self, error: BollardError) -> RuntimeError {
        match &error {
            BollardError::DockerResponseServerError { status_code, .. } => {
                let context =
                    format!("the Docker engine at {} answered {status_code}", self.endpoint);
                RuntimeError::Failed(Cause::new(error).context(context))
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
        let endpoint = &self.endpoint;
        let context = match &self.tls {
            Some(tls) => tls_failure(endpoint, tls, &error).unwrap_or_else(|| {
                // The engine may also refuse our certificate by closing the connection before
                // its alert reaches us: the files stay named.
                format!(
                    "cannot reach the Docker engine at {endpoint} over TLS (CA {}, client \
                     certificate {})",
                    tls.ca.display(),
                    tls.cert.display()
                )
            }),
            None => format!("cannot reach the Docker engine at {endpoint}"),
        };
        RuntimeError::Unavailable(Cause::new(error).context(context))
    }
}

/// What a failed TLS handshake means, when the error is one: rustls's refusal of the engine's
/// certificate ("invalid peer certificate: UnknownIssuer"), or the engine's refusal of ours (a
/// fatal alert it sent, e.g. "BadCertificate"). Each names the file to look at.
fn tls_failure(endpoint: &str, tls: &TlsFiles, error: &BollardError) -> Option<String> {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let text = text.to_ascii_lowercase();
    if text.contains("peer certificate") {
        Some(format!(
            "the TLS handshake with the Docker engine at {endpoint} failed: the engine's \
             certificate was not trusted ({} must hold the CA that signed it)",
            tls.ca.display()
        ))
    } else if text.contains("fatal alert") {
        Some(format!(
            "the TLS handshake with the Docker engine at {endpoint} failed: the engine refused \
             sandkeeper's client certificate ({} and {} must be signed by a CA the engine \
             trusts, its --tlscacert)",
            tls.cert.display(),
            tls.key.display()
        ))
    } else {
        None
    }
}

/// Whether an error says the engine could not be reached, so the connection must be made anew.
pub(crate) trait EngineLoss {
    fn engine_lost(&self) -> bool;
}

impl EngineLoss for ExecError {
    fn engine_lost(&self) -> bool {
        matches!(self, Self::Runtime(RuntimeError::Unavailable(_)))
    }
}

impl EngineLoss for FileError {
    fn engine_lost(&self) -> bool {
        matches!(self, Self::Runtime(RuntimeError::Unavailable(_)))
    }
}

impl EngineLoss for ProcessError {
    fn engine_lost(&self) -> bool {
        matches!(self, Self::Runtime(RuntimeError::Unavailable(_)))
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

    use super::*;

    fn client() -> Client {
        let endpoint = Endpoint { host: "unix:///nowhere.sock".to_owned(), tls: None };
        Client::new(endpoint, Duration::from_secs(5))
    }

    #[test]
    fn a_missing_socket_is_unavailable_and_names_the_endpoint() {
        let error = client().translate(BollardError::SocketNotFoundError("/nowhere.sock".into()));
        assert!(matches!(error, RuntimeError::Unavailable(_)), "{error:?}");
        let message = Report(&error).to_string();
        assert!(message.contains("unix:///nowhere.sock"), "{message}");
        let context = std::error::Error::source(&error).expect("where it failed");
        let bollard = context.source().expect("bollard's error stays in the chain");
        assert!(bollard.to_string().contains("/nowhere.sock"), "{bollard}");
    }

    #[test]
    fn an_engine_error_keeps_the_engine_message_under_the_endpoint() {
        let error = client().translate(BollardError::DockerResponseServerError {
            status_code: 500,
            message: "Unknown runtime specified runsc".into(),
        });
        assert!(matches!(error, RuntimeError::Failed(_)), "{error:?}");
        assert_eq!(error.to_string(), "the Docker engine at unix:///nowhere.sock answered 500");
        let bollard =
            std::error::Error::source(&error).expect("bollard's error stays in the chain");
        assert!(bollard.to_string().ends_with("Unknown runtime specified runsc"), "{bollard}");
    }

    #[test]
    fn an_engine_over_tls_that_cannot_be_reached_names_the_tls_files() {
        let tls = TlsFiles {
            ca: "/certs/ca.pem".into(),
            cert: "/certs/cert.pem".into(),
            key: "/certs/key.pem".into(),
        };
        let endpoint = Endpoint { host: "tcp://127.0.0.1:2376".to_owned(), tls: Some(tls) };
        let client = Client::new(endpoint, Duration::from_secs(5));
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let error = client.translate(BollardError::IOError { err: reset });
        assert!(matches!(error, RuntimeError::Unavailable(_)), "{error:?}");
        let message = Report(&error).to_string();
        assert!(message.contains("tcp://127.0.0.1:2376 over TLS"), "{message}");
        assert!(message.contains("/certs/ca.pem") && message.contains("/certs/cert.pem"));
        assert!(message.ends_with("connection reset"), "the cause stays: {message}");
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
