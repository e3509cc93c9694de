//! Parsers of single values (durations, sizes, addresses, names, tokens, URLs): each refuses a
//! bad value with a [`ConfigError`] naming its setting and the value (a secret is never echoed).

use std::net::SocketAddr;
use std::time::Duration;

use sandkeeper_adapters_docker::UidRange;
use sandkeeper_adapters_observability::OtlpEndpoint;

use super::secrets::{ApiToken, DatabaseUrl};
use super::setting::{
    ALLOWED_HOSTS, ConfigError, DATABASE_URL, Flag, INSTANCE_ID, LISTEN, OTLP_ENDPOINT,
    SANDBOX_UID_RANGE,
};

/// The base URL of an OpenTelemetry collector (`--otlp-endpoint`).
pub(crate) fn otlp_endpoint(value: &str) -> Result<OtlpEndpoint, ConfigError> {
    OtlpEndpoint::parse(value).map_err(|error| ConfigError::new(OTLP_ENDPOINT, error.to_string()))
}

/// Parses a human duration (`3s`, `10m`, `1h 30m`), naming the setting and the value on failure.
pub(crate) fn parse_duration(setting: Flag, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|_| {
        ConfigError::new(setting, format!("`{value}` is not a duration like 30s or 5m"))
    })
}

/// A duration of at least `minimum`.
pub(crate) fn duration_at_least(
    setting: Flag,
    minimum: Duration,
) -> impl Fn(&str) -> Result<Duration, ConfigError> + Clone + Send + Sync + 'static {
    move |value| {
        let duration = parse_duration(setting, value)?;
        if duration < minimum {
            return Err(ConfigError::new(
                setting,
                format!(
                    "`{value}` is too short; use at least {}",
                    humantime::format_duration(minimum)
                ),
            ));
        }
        Ok(duration)
    }
}

/// A size like `512m`, `1g`, `1.5GiB` or `1048576` (bytes), of at least `minimum` bytes. Units
/// are binary, as with `docker run --memory`.
pub(crate) fn size_at_least(
    setting: Flag,
    minimum: u64,
) -> impl Fn(&str) -> Result<u64, ConfigError> + Clone + Send + Sync + 'static {
    move |value| {
        let text = value.trim().to_ascii_lowercase();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let factor: u64 = match unit.trim() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => 0,
        };
        let bytes = match number.parse::<f64>() {
            Ok(number) if factor > 0 && number.is_finite() && number > 0.0 => {
                (number * factor as f64) as u64
            }
            _ => {
                return Err(ConfigError::new(
                    setting,
                    format!("`{value}` is not a size like 512m or 1g"),
                ));
            }
        };
        if bytes < minimum {
            let least = if minimum >= 1 << 20 {
                format!("{}m", minimum >> 20)
            } else {
                format!("{minimum} byte{}", if minimum == 1 { "" } else { "s" })
            };
            return Err(ConfigError::new(
                setting,
                format!("`{value}` is too small; use at least {least}"),
            ));
        }
        Ok(bytes)
    }
}

/// A text that is not empty once trimmed.
pub(crate) fn non_empty(
    setting: Flag,
) -> impl Fn(&str) -> Result<String, ConfigError> + Clone + Send + Sync + 'static {
    move |value| {
        let value = value.trim();
        if value.is_empty() {
            return Err(ConfigError::new(setting, "must not be empty"));
        }
        Ok(value.to_owned())
    }
}

pub(crate) fn listen(value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| {
        ConfigError::new(LISTEN, format!("`{value}` is not an address like 127.0.0.1:8080"))
    })
}

pub(crate) fn instance_id(value: &str) -> Result<String, ConfigError> {
    let valid = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && value.len() <= 63
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ConfigError::new(
            INSTANCE_ID,
            format!(
                "`{value}` must be 1 to 63 letters, digits, `-`, `_` or `.`, starting with a \
                 letter or digit"
            ),
        ))
    }
}

pub(crate) fn uid_range(value: &str) -> Result<UidRange, ConfigError> {
    UidRange::parse(value)
        .map_err(|error| ConfigError::new(SANDBOX_UID_RANGE, format!("`{value}` {}", error.reason)))
}

/// A host name for --allowed-hosts: letters, digits, `-` and `.`, without a port.
pub(crate) fn host_name(value: &str) -> Result<String, ConfigError> {
    let host = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if valid {
        Ok(host)
    } else {
        Err(ConfigError::new(
            ALLOWED_HOSTS,
            format!(
                "`{value}` is not a host name like sandkeeper.internal (letters, digits, `-` \
                 and `.`, no port)"
            ),
        ))
    }
}

/// A bearer token. The value is never echoed: it is a secret.
pub(crate) fn token(
    setting: Flag,
) -> impl Fn(&str) -> Result<ApiToken, ConfigError> + Clone + Send + Sync + 'static {
    move |value| {
        ApiToken::parse(value.trim())
            .map_err(|message| ConfigError::new(setting, format!("the token {message}")))
    }
}

/// A store URL: `postgres://...`, `postgresql://...` or `sqlite:...`.
pub(crate) fn database_url(value: &str) -> Result<DatabaseUrl, ConfigError> {
    DatabaseUrl::parse(value).map_err(|shown| {
        ConfigError::new(
            DATABASE_URL,
            format!(
                "`{shown}` is not a database URL; use postgres://user@host:port/db or \
                 sqlite://path/to/file.db"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::setting::{HTTP_HEADER_TIMEOUT, MEMORY_LIMIT};

    #[test]
    fn sizes_take_binary_units_and_refuse_nonsense() {
        let parse = |value: &str| size_at_least(MEMORY_LIMIT, 6 << 20)(value);
        assert_eq!(parse("512m"), Ok(512 << 20));
        assert_eq!(parse("1G"), Ok(1 << 30));
        assert_eq!(parse("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse("8388608"), Ok(8 << 20));
        let error = parse("1k").unwrap_err();
        assert_eq!(error.setting, MEMORY_LIMIT.into());
        assert_eq!(error.to_string(), "--memory-limit: `1k` is too small; use at least 6m");
        assert_eq!(
            parse("lots").unwrap_err().to_string(),
            "--memory-limit: `lots` is not a size like 512m or 1g"
        );
        assert!(parse("5x").is_err() && parse("-5m").is_err());
    }

    #[test]
    fn durations_are_human_and_bounded_below() {
        let parse = duration_at_least(HTTP_HEADER_TIMEOUT, Duration::from_millis(100));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        let error = parse("1ms").unwrap_err();
        assert_eq!(error.setting, HTTP_HEADER_TIMEOUT.into());
        assert_eq!(error.message, "`1ms` is too short; use at least 100ms");
        assert_eq!(parse("soon").unwrap_err().message, "`soon` is not a duration like 30s or 5m");
    }

    #[test]
    fn a_bad_token_is_described_but_never_echoed() {
        let error = token(crate::config::setting::API_TOKEN)("two words").unwrap_err();
        assert!(!error.to_string().contains("two"), "{error}");
        assert!(error.message.contains("whitespace"), "{error}");
    }
}
