use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A value given as an identifier could not be accepted. The message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} `{value}` is not a UUID (expected e.g. 11111111-1111-1111-1111-111111111111)")]
    NotAUuid { kind: &'static str, value: String },
    #[error("container id must not be empty")]
    EmptyContainerId,
}

/// How many characters of a bad value an error quotes.
const SHOWN_CHARS: usize = 64;

/// A value cut short enough to quote in an error, control characters escaped.
fn shown(value: &str) -> String {
    let cut = value.char_indices().nth(SHOWN_CHARS).map_or(value.len(), |(cut, _)| cut);
    let mut text: String = value[..cut].chars().flat_map(char::escape_default).collect();
    if cut < value.len() {
        text.push_str("...");
    }
    text
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Parses any UUID spelling (hyphenated, simple, upper case, braced, urn)
            /// into the canonical lower-case hyphenated form. The value must be exactly that:
            /// surrounding whitespace is refused. The error quotes at most the first 64
            /// characters of a bad value.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                Uuid::parse_str(value)
                    .map(Self)
                    .map_err(|_| IdError::NotAUuid { kind: $kind, value: shown(value) })
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

uuid_id!(
    /// The conversation a sandbox belongs to.
    ChatId,
    "chat id"
);
uuid_id!(
    /// One sandbox session: one container's lifetime for one chat.
    SessionId,
    "session id"
);

impl SessionId {
    /// A fresh random (version 4) session id.
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }
}

uuid_id!(
    /// One place in the warm pool of started, never-used sandboxes.
    SlotId,
    "pool slot id"
);

impl SlotId {
    /// A fresh random (version 4) slot id.
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }
}

/// The runtime's identifier of a container. Opaque to the domain, never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

impl ContainerId {
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        if value.trim().is_empty() {
            return Err(IdError::EmptyContainerId);
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ContainerId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ContainerId> for String {
    fn from(id: ContainerId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANONICAL: &str = "11111111-1111-1111-1111-111111111111";

    #[test]
    fn chat_id_canonicalises_every_uuid_spelling() {
        for spelling in [
            CANONICAL,
            "11111111111111111111111111111111",
            "{11111111-1111-1111-1111-111111111111}",
            "urn:uuid:11111111-1111-1111-1111-111111111111",
        ] {
            assert_eq!(ChatId::parse(spelling).unwrap().to_string(), CANONICAL, "{spelling}");
        }
        let upper = "ABCDEFAB-1111-1111-1111-111111111111";
        assert_eq!(
            ChatId::parse(upper).unwrap().to_string(),
            "abcdefab-1111-1111-1111-111111111111"
        );
    }

    #[test]
    fn chat_id_error_names_the_bad_value() {
        let error = ChatId::parse("not-a-chat").unwrap_err();
        assert_eq!(error, IdError::NotAUuid { kind: "chat id", value: "not-a-chat".into() });
        assert!(error.to_string().contains("`not-a-chat`"), "{error}");
        assert!(error.to_string().starts_with("chat id"), "{error}");
    }

    #[test]
    fn ids_are_exact_and_errors_bounded() {
        for spaced in [
            format!(" {CANONICAL}"),
            format!("{CANONICAL} "),
            format!("{CANONICAL}\t"),
            format!("\n{CANONICAL}"),
            format!("\u{a0}{CANONICAL}"),
        ] {
            assert!(ChatId::parse(&spaced).is_err(), "{spaced:?}");
        }
        let error = ChatId::parse(&"x".repeat(50_000)).unwrap_err().to_string();
        assert!(error.len() < 300, "{error}");
        assert!(error.contains(&format!("`{}...`", "x".repeat(SHOWN_CHARS))), "{error}");
        let error = ChatId::parse("a\nb").unwrap_err().to_string();
        assert!(error.contains("`a\\nb`"), "{error}");
    }

    #[test]
    fn session_id_error_says_session() {
        let error = SessionId::parse("").unwrap_err();
        assert!(error.to_string().starts_with("session id ``"), "{error}");
    }

    #[test]
    fn container_id_must_not_be_empty() {
        assert_eq!(ContainerId::new("  "), Err(IdError::EmptyContainerId));
        assert_eq!(ContainerId::new("abc").unwrap().as_str(), "abc");
    }
}
