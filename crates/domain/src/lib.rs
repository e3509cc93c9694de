//! The domain of sandkeeper: what a sandbox session is and the rules it obeys.
//!
//! Architecture invariant: this crate performs no IO, has no async code and never reads
//! the clock. Time is always passed in by the caller.

/// Gives a fieldless enum its stable spelling, one per variant: `as_str()`, a `Display` that
/// writes it and `from_spelling()`, which reads it back. The spelling is what the store, the
/// API and telemetry (metric labels, span fields) show, whatever the variant is called in Rust.
///
/// ```
/// #[derive(Debug, Clone, Copy, PartialEq)]
/// enum Result { Created, Reused }
///
/// sandkeeper_domain::spelling!(Result { Created => "created", Reused => "reused" });
/// assert_eq!(Result::Reused.as_str(), "reused");
/// assert_eq!(Result::Created.to_string(), "created");
/// assert_eq!(Result::from_spelling("reused"), Some(Result::Reused));
/// assert_eq!(Result::from_spelling("Reused"), None);
/// ```
///
/// With `else Error` after the list, the enum also gets a `FromStr` for what people type:
/// surrounding white space and ASCII case are forgiven, and anything else is `Error(value)`.
#[macro_export]
macro_rules! spelling {
    ($name:ident { $($variant:ident => $spelling:literal),+ $(,)? } else $error:ident) => {
        $crate::spelling!($name { $($variant => $spelling),+ });

        impl ::core::str::FromStr for $name {
            type Err = $error;
            fn from_str(value: &str) -> ::core::result::Result<Self, $error> {
                let typed = value.trim();
                $(
                    if typed.eq_ignore_ascii_case($spelling) {
                        return Ok(Self::$variant);
                    }
                )+
                Err($error(value.to_owned()))
            }
        }
    };
    ($name:ident { $($variant:ident => $spelling:literal),+ $(,)? }) => {
        impl $name {
            /// The stable spelling, as the store, the API and telemetry show it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $spelling,)+
                }
            }

            /// The variant spelled exactly `value`, if any.
            #[allow(dead_code, reason = "not every enum reads its spelling back")]
            pub fn from_spelling(value: &str) -> Option<Self> {
                match value {
                    $($spelling => Some(Self::$variant),)+
                    _ => None,
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
