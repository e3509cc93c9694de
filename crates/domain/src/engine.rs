use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest engine name.
pub const ENGINE_NAME_MAX: usize = 32;

/// A Docker engine's name in a deployment (`--engine NAME=URL`): 1 to 32 characters of
/// `a-z`, `0-9`, `_` and `-`, starting with a letter or digit. Every session records the
/// engine its container runs on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EngineName(String);

/// A value given as an engine name could not be accepted. The message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "engine name `{0}` is not valid: use 1 to 32 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit"
)]
pub struct EngineNameError(pub String);

impl EngineName {
    /// The engine of a deployment without `--engine`, and of rows made before engines existed.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(value: &str) -> Result<Self, EngineNameError> {
        let valid = !value.is_empty()
            && value.len() <= ENGINE_NAME_MAX
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && value.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            let shown: String = value.chars().take(64).flat_map(char::escape_default).collect();
            Err(EngineNameError(shown))
        }
    }

    /// The engine named `default`.
    pub fn default_engine() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for EngineName {
    fn default() -> Self {
        Self::default_engine()
    }
}

impl fmt::Display for EngineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EngineName {
    type Err = EngineNameError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

impl<'de> Deserialize<'de> for EngineName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::parse(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_short_lowercase_names_and_refuses_the_rest() {
        for good in ["default", "a", "host-2", "gvisor_1", &"x".repeat(32)] {
            assert_eq!(EngineName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "Host", "-a", "_a", "a b", "a.b", "a/b", &"x".repeat(33)] {
            let error = EngineName::parse(bad).unwrap_err();
            assert!(error.to_string().contains("is not valid"), "{error}");
        }
        assert_eq!(EngineName::default().as_str(), "default");
    }
}
