//! The settings that hold a secret: the API token and the database URL (whose password is
//! one). Both are kept in `secrecy`'s `SecretString`, so that no `Debug` output (of the
//! command line, of a validated configuration, of a log line) shows them.

use std::fmt;
use std::path::Path;

use sandkeeper_adapters_sql::{Backend, redact_url};
use secrecy::{ExposeSecret, SecretString};

/// The bearer token every request must carry.
#[derive(Clone)]
pub(crate) struct ApiToken(SecretString);

impl ApiToken {
    /// A token: at least one character, no whitespace or control characters. The error says
    /// what is wrong without the value.
    pub(crate) fn parse(value: &str) -> Result<Self, &'static str> {
        if value.is_empty() {
            return Err("is empty; a token must have at least one character");
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(
                "contains whitespace or control characters, which a bearer token cannot carry",
            );
        }
        Ok(Self(SecretString::from(value)))
    }

    #[cfg(test)]
    pub(crate) fn for_tests(token: &str) -> Self {
        Self(SecretString::from(token))
    }

    /// The token, for the constant-time comparison with what a request carries.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// A store URL. Its `Debug` and `Display` show it with any password as `***`.
#[derive(Clone)]
pub(crate) struct DatabaseUrl {
    url: SecretString,
    /// The URL as it may be shown.
    shown: String,
    backend: Backend,
}

impl DatabaseUrl {
    /// A `postgres://`, `postgresql://` or `sqlite:` URL; else the error is the URL as it may
    /// be shown.
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let backend = if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Backend::Postgres
        } else if value.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(redact_url(value));
        };
        Ok(Self::new(value, backend))
    }

    /// The SQLite file in the data dir.
    pub(crate) fn default_sqlite(data_dir: &Path) -> Self {
        let url = format!("sqlite://{}", data_dir.join("sandkeeper.db").display());
        Self::new(&url, Backend::Sqlite)
    }

    fn new(url: &str, backend: Backend) -> Self {
        Self { url: SecretString::from(url), shown: redact_url(url), backend }
    }

    /// The URL itself, password included: for connecting only.
    pub(crate) fn expose(&self) -> &str {
        self.url.expose_secret()
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.shown)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_recognised_and_passwords_hidden() {
        let url = DatabaseUrl::parse("postgres://app:hunter2@db:5432/sandkeeper").unwrap();
        assert_eq!(url.backend(), Backend::Postgres);
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/sandkeeper");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.expose(), "postgres://app:hunter2@db:5432/sandkeeper");
        let url = DatabaseUrl::parse("postgres://app@db/x?sslmode=disable&password=hunter2");
        assert_eq!(url.unwrap().to_string(), "postgres://app@db/x?sslmode=disable&password=***");
        assert_eq!(
            DatabaseUrl::parse("mysql://root:hunter2@db/x").unwrap_err(),
            "mysql://root:***@db/x"
        );
    }

    #[test]
    fn a_token_is_never_shown() {
        let token = ApiToken::parse("s3cret").unwrap();
        assert_eq!(token.as_bytes(), b"s3cret");
        assert_eq!(format!("{token:?}"), "ApiToken(<redacted>)");
        assert!(ApiToken::parse("").is_err());
        assert!(ApiToken::parse("a b").is_err());
    }
}
