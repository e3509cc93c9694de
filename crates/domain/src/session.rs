use serde::{Deserialize, Serialize};

use crate::{ChatId, ContainerId, EngineName, SessionId, Timestamp};

/// The lifecycle state of a session.
///
/// - `Running`: the container was created and started; at most one per chat.
/// - `Stopped`: the session ended normally and its container may still need removal.
/// - `Crashed`: the store said running but the container was found exited or missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxStatus {
    Running,
    Stopped,
    Crashed,
}

impl SandboxStatus {
    pub const ALL: [SandboxStatus; 3] = [Self::Running, Self::Stopped, Self::Crashed];

    /// `Stopped` and `Crashed` are terminal: their container may be removed and their row deleted.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Crashed)
    }
}

spelling!(SandboxStatus {
    Running => "running",
    Stopped => "stopped",
    Crashed => "crashed",
} else StatusError);

/// A status spelling that is not one of `running`, `stopped`, `crashed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status `{0}` is not one of running, stopped, crashed")]
pub struct StatusError(pub String);

/// One sandbox: a container that belongs to one chat for a bounded time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSession {
    pub session_id: SessionId,
    pub chat_id: ChatId,
    pub container_id: ContainerId,
    pub status: SandboxStatus,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The engine the container runs on (`default` for a deployment of one engine).
    #[serde(default)]
    pub engine: EngineName,
}

impl SandboxSession {
    /// The expiry rule: a session is expired when `expires_at <= now` (the boundary is inclusive).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone, Utc};

    use super::*;

    fn session(expires_at: Timestamp) -> SandboxSession {
        SandboxSession {
            session_id: SessionId::parse("00000000-0000-0000-0000-000000000001").unwrap(),
            chat_id: ChatId::parse("11111111-1111-1111-1111-111111111111").unwrap(),
            container_id: ContainerId::new("container-1").unwrap(),
            status: SandboxStatus::Running,
            created_at: expires_at - TimeDelta::minutes(5),
            expires_at,
            engine: EngineName::default(),
        }
    }

    #[test]
    fn expiry_boundary_is_inclusive() {
        let now = Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap();
        assert!(session(now).is_expired(now));
        assert!(session(now - TimeDelta::seconds(1)).is_expired(now));
        assert!(!session(now + TimeDelta::seconds(1)).is_expired(now));
    }

    #[test]
    fn status_round_trips_and_rejects_unknown_spellings() {
        for status in SandboxStatus::ALL {
            assert_eq!(status.as_str().parse::<SandboxStatus>(), Ok(status));
        }
        assert_eq!("RUNNING".parse::<SandboxStatus>(), Ok(SandboxStatus::Running));
        let error = "paused".parse::<SandboxStatus>().unwrap_err();
        assert_eq!(error.to_string(), "status `paused` is not one of running, stopped, crashed");
        assert!(SandboxStatus::Crashed.is_terminal() && !SandboxStatus::Running.is_terminal());
    }
}
