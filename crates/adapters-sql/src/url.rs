//! Database URLs: which backend a URL names, and how to show it without its password.
//!
//! [`redact_url`] is the one place where a database URL is made fit to be shown: every message,
//! log line and `Debug` output of sandkeeper that names a database URL goes through it.

use secrecy::SecretString;

use crate::Backend;

/// What `connect` accepts, for error messages.
pub(crate) const ACCEPTED_URLS: &str = "sqlite://PATH (add ?mode=rwc to create the file; \
     a relative PATH is relative to the working directory, sqlite:///abs/path is absolute), \
     sqlite::memory:, or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE \
     (add ?sslmode=verify-full&sslrootcert=CA.pem for TLS)";

/// The backend a URL names, from its scheme.
pub(crate) fn backend_of(url: &str) -> Result<Backend, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("the URL is empty".to_owned());
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("sqlite:") {
        return Ok(Backend::Sqlite);
    }
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(Backend::Postgres);
    }
    match url.split_once(':') {
        Some((scheme, _)) if !scheme.is_empty() && !scheme.contains('/') => {
            Err(format!("the scheme `{scheme}` is not supported"))
        }
        _ => Err("the URL has no scheme".to_owned()),
    }
}

/// The URL with its password replaced by `***`, both in the user-info part
/// (`postgres://user:***@host/db`) and in a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let mut masked = mask_userinfo(url);
    if let Some(query_start) = masked.find('?') {
        let (base, query) = masked.split_at(query_start + 1);
        let query = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        masked = format!("{base}{query}");
    }
    masked
}

fn mask_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    // The last `@` ends the user info: an unescaped `@` in a password is a typo we still hide.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!("{}{}:***{}", &url[..authority_start], &userinfo[..colon], &url[authority_start + at..])
}

/// The password of a URL, if it has one, so that it can be scrubbed from foreign error messages.
pub(crate) fn password_of(url: &str) -> Option<SecretString> {
    let scheme_end = url.find("://")?;
    let rest = &url[scheme_end + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then(|| SecretString::from(password))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn the_scheme_picks_the_backend() {
        assert_eq!(backend_of("sqlite://data/sandkeeper.db?mode=rwc"), Ok(Backend::Sqlite));
        assert_eq!(backend_of("sqlite::memory:"), Ok(Backend::Sqlite));
        assert_eq!(backend_of("postgres://u@h/db"), Ok(Backend::Postgres));
        assert_eq!(backend_of("PostgreSQL://u@h/db"), Ok(Backend::Postgres));
        assert_eq!(
            backend_of("mysql://u@h/db"),
            Err("the scheme `mysql` is not supported".to_owned())
        );
        assert_eq!(backend_of("/var/lib/x.db"), Err("the URL has no scheme".to_owned()));
        assert_eq!(backend_of("  "), Err("the URL is empty".to_owned()));
    }

    #[test]
    fn passwords_are_masked_wherever_they_are() {
        assert_eq!(
            redact_url("postgres://user:secret@db.example:5432/app"),
            "postgres://user:***@db.example:5432/app"
        );
        assert_eq!(redact_url("postgres://user:p@ss@host/db"), "postgres://user:***@host/db");
        assert_eq!(
            redact_url("postgres://user@host/db?sslmode=disable&password=secret"),
            "postgres://user@host/db?sslmode=disable&password=***"
        );
        assert_eq!(redact_url("postgres://user@host/db"), "postgres://user@host/db");
        assert_eq!(redact_url("sqlite://a@b:c/x.db"), "sqlite://a@b:c/x.db");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn the_password_is_found_for_scrubbing() {
        let password = password_of("postgres://u:secret@h/db").expect("a password");
        assert_eq!(password.expose_secret(), "secret");
        assert!(!format!("{password:?}").contains("secret"));
        assert!(password_of("postgres://u:@h/db").is_none());
        assert!(password_of("postgres://u@h/db").is_none());
    }
}
