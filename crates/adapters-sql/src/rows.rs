//! Conversions shared by both backends: rows to sessions, limits and durations to SQL values.

use std::time::Duration;

use sandkeeper_domain::{
    ChatId, ContainerId, EngineName, SandboxSession, SandboxStatus, SessionId, Timestamp,
};
use sandkeeper_ports::{Cause, StoreError};
use uuid::Uuid;

/// The columns of `sandbox_sessions`, in the order every query selects them.
pub(crate) const SESSION_COLUMNS: &str =
    "session_id, chat_id, container_id, status, created_at, expires_at, engine";

/// Longest duration the stores accept for leases; longer ones are clamped. A century keeps
/// every computed instant inside the range both backends can store.
const LONGEST_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub(crate) fn duration_micros(duration: Duration) -> i64 {
    let micros = duration.min(LONGEST_DURATION).as_micros();
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// A `LIMIT` value: `usize` beyond `i64` means "no limit" in practice.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A session read back from either backend, validated on the way in.
pub(crate) struct RawSession {
    pub(crate) session_id: Uuid,
    pub(crate) chat_id: Uuid,
    pub(crate) container_id: String,
    pub(crate) status: String,
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Timestamp,
    pub(crate) engine: String,
}

impl RawSession {
    pub(crate) fn into_session(self) -> Result<SandboxSession, StoreError> {
        let session_id = SessionId::from_uuid(self.session_id);
        let status: SandboxStatus = self.status.parse().map_err(|error| {
            StoreError::Failed(
                Cause::new(error).context(format!("session {session_id} in the store")),
            )
        })?;
        let container_id = ContainerId::new(self.container_id).map_err(|error| {
            StoreError::Failed(
                Cause::new(error).context(format!("session {session_id} in the store")),
            )
        })?;
        let engine = EngineName::parse(&self.engine).map_err(|error| {
            StoreError::Failed(
                Cause::new(error).context(format!("session {session_id} in the store")),
            )
        })?;
        Ok(SandboxSession {
            session_id,
            chat_id: ChatId::from_uuid(self.chat_id),
            container_id,
            status,
            created_at: self.created_at,
            expires_at: self.expires_at,
            engine,
        })
    }
}

/// The statuses to scan, each once, in a stable order.
pub(crate) fn distinct_statuses(statuses: &[SandboxStatus]) -> Vec<SandboxStatus> {
    SandboxStatus::ALL.into_iter().filter(|status| statuses.contains(status)).collect()
}

/// `SELECT ... WHERE status IN (...) ORDER BY created_at, session_id LIMIT n`, written as one
/// ordered, limited branch per status so that each branch is a range scan of that status's
/// partial `(created_at, session_id)` index and the merge sorts at most `n` rows per status.
/// The limit is the first parameter. With `after`, each branch starts strictly after the position `(created_at,
/// session_id)` given by the second and third parameters: a row-value comparison, which both
/// databases turn into the start of the index range instead of a filter over it.
pub(crate) fn list_by_status_sql(statuses: &[SandboxStatus], after: bool) -> String {
    let limit = "$1";
    let position =
        if after { " AND (created_at, session_id) > ($2, $3)".to_owned() } else { String::new() };
    let branches: Vec<String> = statuses
        .iter()
        .enumerate()
        .map(|(n, status)| {
            format!(
                "SELECT * FROM (SELECT {SESSION_COLUMNS} FROM sandbox_sessions \
                 WHERE status = '{status}'{position} \
                 ORDER BY created_at, session_id LIMIT {limit}) AS branch_{n}",
                status = status.as_str(),
            )
        })
        .collect();
    format!("{} ORDER BY created_at, session_id LIMIT {limit}", branches.join(" UNION ALL "))
}
