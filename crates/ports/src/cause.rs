//! What lies under a port error: the adapter's own error, kept whole.
//!
//! A port error says what failed in the port's words ("the session store is unavailable");
//! its [`Cause`] is why, in the words of whatever was underneath (a driver, the engine, the
//! operating system), with that error's own `source()` chain. Port errors are cloned (a
//! failed call can be reported to several waiters), so the cause is shared, not copied.
//! [`Report`] writes a whole chain on one line, for logs and for the edges that show it.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The cause of a port error: an error from below, shared so that it survives `Clone`.
///
/// Two causes are equal when they read the same; that is all a test of a port's error
/// contract can compare across a clone.
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

impl Cause {
    /// Keeps `error` as the cause, with its own chain.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// A cause that is only a message: what an adapter found wrong by itself.
    pub fn message(message: impl Into<String>) -> Self {
        Self(Arc::new(Message { text: message.into(), source: None }))
    }

    /// `message`, caused by this cause: adds what the adapter was doing in front of it.
    #[must_use]
    pub fn context(self, message: impl Into<String>) -> Self {
        Self(Arc::new(Message { text: message.into(), source: Some(self) }))
    }

    /// The same chain with each message rewritten by `rewrite`, for an adapter that must keep
    /// something out of every message (a password a driver may echo). The rewritten chain
    /// keeps its links but not the original types.
    #[must_use]
    pub fn rewritten(&self, rewrite: &dyn Fn(&str) -> String) -> Self {
        let mut messages = Vec::new();
        let mut next: Option<&(dyn Error + 'static)> = Some(self.0.as_ref());
        while let Some(error) = next {
            messages.push(rewrite(&error.to_string()));
            next = error.source();
        }
        let mut rebuilt: Option<Cause> = None;
        for text in messages.into_iter().rev() {
            rebuilt = Some(Self(Arc::new(Message { text, source: rebuilt })));
        }
        rebuilt.unwrap_or_else(|| Self::message(""))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, formatter)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", Report(self))
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Report(self).to_string() == Report(other).to_string()
    }
}

impl Eq for Cause {}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::message(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::message(message)
    }
}

/// A message with an optional cause under it.
#[derive(Debug)]
struct Message {
    text: String,
    source: Option<Cause>,
}

impl fmt::Display for Message {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl Error for Message {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_ref().map(|cause| cause as &(dyn Error + 'static))
    }
}

/// An error and every cause under it on one line, `outer: inner: innermost`. A link whose
/// text the line already says (an error that both shows and returns its source) is written
/// once; a link that says nothing is left out.
pub struct Report<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Report<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = self.0.to_string();
        let mut next = self.0.source();
        while let Some(error) = next {
            let text = error.to_string();
            if !text.is_empty() && !written.contains(&text) {
                written.push_str(": ");
                written.push_str(&text);
            }
            next = error.source();
        }
        formatter.write_str(&written)
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Refused;

    #[derive(Debug, thiserror::Error)]
    #[error("pool timed out")]
    struct Outer(#[source] Refused);

    #[test]
    fn a_cause_keeps_the_chain_of_the_error_under_it_across_a_clone() {
        let cause = Cause::new(Outer(Refused)).context("database at `db`");
        let copy = cause.clone();
        assert_eq!(copy.to_string(), "database at `db`");
        let inner = copy.source().expect("the driver's error");
        assert_eq!(inner.to_string(), "pool timed out");
        assert_eq!(inner.source().expect("its own cause").to_string(), "connection refused");
        assert_eq!(
            Report(&copy).to_string(),
            "database at `db`: pool timed out: connection refused"
        );
        assert_eq!(cause, copy);
    }

    #[test]
    fn a_rewritten_chain_keeps_its_links_without_the_hidden_text() {
        let cause = Cause::message("login as user:hunter2 failed").context("database at `db`");
        let clean = cause.rewritten(&|text: &str| text.replace("hunter2", "***"));
        assert_eq!(Report(&clean).to_string(), "database at `db`: login as user:*** failed");
        assert!(clean.source().is_some());
    }

    #[test]
    fn a_report_writes_a_link_that_repeats_its_source_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("store failed: connection refused")]
        struct Showing(#[source] Refused);
        assert_eq!(Report(&Showing(Refused)).to_string(), "store failed: connection refused");
    }
}
