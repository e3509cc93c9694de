//! The domain of sandkeeper: what a sandbox session is and the rules it obeys.
//!
//! Architecture invariant: this crate performs no IO, has no async code and never reads
//! the clock. Time is always passed in by the caller.

/// Gives a fieldless enum its stable spelling, one per variant: `as_str()` and a `Display`
/// that writes it. The spelling is what the store, the API and telemetry (metric labels, span
/// fields) show, whatever the variant is called in Rust.
///
/// ```
/// #[derive(Debug, Clone, Copy)]
/// enum Result { Created, Reused }
///
/// sandkeeper_domain::spelling!(Result { Created => "created", Reused => "reused" });
/// assert_eq!(Result::Reused.as_str(), "reused");
/// assert_eq!(Result::Created.to_string(), "created");
/// ```
#[macro_export]
macro_rules! spelling {
    ($name:ident { $($variant:ident => $spelling:literal),+ $(,)? }) => {
        impl $name {
            /// The stable spelling, as the store, the API and telemetry show it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $spelling,)+
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

mod engine;
mod ids;
mod session;

pub use engine::{ENGINE_NAME_MAX, EngineName, EngineNameError};
pub use ids::{ChatId, ContainerId, IdError, SessionId, SlotId};
pub use session::{SandboxSession, SandboxStatus, StatusError};

/// Timestamps are always UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
