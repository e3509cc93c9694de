//! How many calls of a test double are in progress at once.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the calls in progress, and keeps the most there were at the same time.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl InFlight {
    /// Runs `call`, counted as in progress until it ends.
    pub(crate) async fn run<T>(&self, call: impl Future<Output = T>) -> T {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let output = call.await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        output
    }

    /// The most calls that were in progress at the same time.
    pub(crate) fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}
