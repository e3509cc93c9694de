//! Translation of sqlx's errors into the ports' errors, at the adapter boundary.

use std::time::Duration;

use sandkeeper_ports::{Cause, StoreError};
use secrecy::{ExposeSecret, SecretString};

/// Why [`crate::SqlStore::connect`] could not give a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The URL names no backend we support, or is malformed.
    #[error("database URL `{url}` is not usable: {reason}; accepted: {accepted}")]
    InvalidUrl { url: String, reason: String, accepted: &'static str },
    /// The options cannot be used with this URL.
    #[error("store options for `{url}` are not usable: {reason}")]
    InvalidOptions { url: String, reason: String },
    /// The database did not answer in time or refused the connection.
    #[error("cannot connect to the database at `{url}`: {reason}")]
    Unreachable { url: String, reason: String },
    /// Connected, but preparing the database (a scratch schema, its migrations) failed.
    #[error("preparing the database at `{url}` failed: {reason}")]
    Setup { url: String, reason: String },
}

/// What every error message of one store needs to know: where it is, without the password.
#[derive(Debug)]
pub(crate) struct ErrorContext {
    /// The URL with its password masked.
    pub(crate) url: String,
    /// The password, to scrub from foreign messages that might echo it.
    pub(crate) password: Option<SecretString>,
    pub(crate) acquire_timeout: Duration,
}

impl ErrorContext {
    pub(crate) fn scrub(&self, message: String) -> String {
        match &self.password {
            Some(password) => message.replace(password.expose_secret(), "***"),
            None => message,
        }
    }

    /// sqlx's error as a cause, with the password scrubbed from every message of its chain.
    pub(crate) fn cause(&self, error: sqlx::Error) -> Cause {
        let cause = Cause::new(error);
        match &self.password {
            Some(_) => cause.rewritten(&|text: &str| self.scrub(text.to_owned())),
            None => cause,
        }
    }

    /// Why a first connection failed, in words an operator can act on. A failed TLS handshake
    /// says first whether the server's certificate was not trusted, and which URL parameters
    /// decide that (`sslmode`, `sslrootcert`); sqlx's own words follow.
    pub(crate) fn connect_reason(&self, error: &sqlx::Error) -> String {
        let detail = self.scrub(chain_text(error));
        // rustls's refusal of the server's certificate reaches sqlx as an I/O error of the
        // handshake, with rustls's words: "invalid peer certificate: UnknownIssuer".
        let untrusted = detail.to_ascii_lowercase().contains("peer certificate");
        match error {
            sqlx::Error::Tls(_) | sqlx::Error::Io(_) if untrusted => format!(
                "the server's TLS certificate was not trusted (the URL's `sslrootcert` names the \
                 CA that signs it, and `sslmode=verify-full` also checks the host name): {detail}"
            ),
            sqlx::Error::Tls(_) => format!(
                "the TLS connection failed (see the URL's `sslmode` and `sslrootcert`): {detail}"
            ),
            _ => detail,
        }
    }

    /// A store error for a failed sqlx call: connection-level failures are `Unavailable`,
    /// everything else is `Failed`; sqlx's error is the cause.
    pub(crate) fn store_error(&self, error: sqlx::Error) -> StoreError {
        let url = &self.url;
        match &error {
            sqlx::Error::PoolTimedOut => {
                let hint = if url.to_ascii_lowercase().starts_with("sqlite:") {
                    "is the file there and writable, and no other process holding its write lock?"
                } else {
                    "is it running and reachable?"
                };
                StoreError::Unavailable(Cause::message(format!(
                    "no connection to the database at `{url}` within {:?}; {hint}",
                    self.acquire_timeout
                )))
            }
            sqlx::Error::PoolClosed => StoreError::Unavailable(Cause::message(format!(
                "the store for `{url}` has been closed"
            ))),
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => {
                StoreError::Unavailable(self.cause(error).context(format!("database at `{url}`")))
            }
            sqlx::Error::Database(db) if is_unavailable(db.as_ref()) => {
                StoreError::Unavailable(self.cause(error).context(format!("database at `{url}`")))
            }
            _ => StoreError::Failed(self.cause(error)),
        }
    }
}

/// An error and its sources, joined by `: ` (each only when it adds to the one before).
fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

/// Database errors that mean "not reachable or not serving now", as opposed to a failed statement.
fn is_unavailable(error: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    if let Ok(sqlite_code) = code.parse::<i32>() {
        // SQLite: BUSY (5), LOCKED (6), READONLY (8: the file, its directory or its mount does
        // not take writes now), IOERR (10), FULL (13), CANTOPEN (14); extended codes carry the
        // primary code in their low byte.
        return matches!(sqlite_code & 0xff, 5 | 6 | 8 | 10 | 13 | 14);
    }
    // PostgreSQL SQLSTATE: connection exceptions (08), insufficient resources (53),
    // operator intervention such as a shutdown (57P01..57P05).
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
}

/// Whether a failed sqlx call was SQLite's BUSY: another connection holds the write lock.
pub(crate) fn is_sqlite_busy(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    db.code().and_then(|code| code.parse::<i32>().ok()).is_some_and(|code| code & 0xff == 5)
}

/// Whether a database error is the violation of the one-running-session-per-chat index.
pub(crate) fn is_running_per_chat_violation(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    if !db.is_unique_violation() {
        return false;
    }
    match db.constraint() {
        Some(constraint) => constraint == "sandbox_sessions_one_running_per_chat",
        // SQLite names the columns instead: "UNIQUE constraint failed: sandbox_sessions.chat_id".
        None => db.message().contains("sandbox_sessions.chat_id"),
    }
}
