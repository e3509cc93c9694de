//! Contract test suites: one per port, run against every implementation of it (in-process,
//! SQLite, PostgreSQL), so that they all keep the promises the port's docs make.
//!
//! Each suite is a module of `pub async fn` cases. A case takes a fresh, empty implementation
//! wrapped in a [`Subject`] (or a [`LeaseSubject`]), and panics when the implementation breaks
//! the contract. A macro per suite writes one `#[tokio::test]` per case for a given factory,
//! an async closure that returns the subject:
//!
//! ```text
//! sandkeeper_ports::session_repository_contract!(|| async {
//!     Subject::new(Arc::new(InMemorySessionRepository::new()) as Arc<dyn SessionRepository>)
//! });
//! ```
//!
//! For a backend that may be missing, add a condition evaluated at the start of every test
//! (it may `.await`); when it is false the test returns at once, after the condition has said
//! why (and it should panic instead when the backend is required):
//!
//! ```text
//! sandkeeper_ports::session_repository_contract!(postgres_repository, when = postgres_reachable().await);
//! ```
//!
//! The test crate needs `tokio` with the `macros` and `rt-multi-thread` features.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::MaintenanceLeases;

pub mod leases;
pub mod locker;
pub mod pool;
pub mod repository;
pub mod workspaces;

/// A fresh implementation of a port for one case, with whatever must live as long as the case
/// (a temporary directory, a scratch schema); that is dropped when the case ends, also when it
/// fails.
pub struct Subject<P: ?Sized> {
    port: Arc<P>,
    _keep: Box<dyn Send + Sync>,
}

impl<P: ?Sized> Subject<P> {
    pub fn new(port: Arc<P>) -> Self {
        Self { port, _keep: Box::new(()) }
    }

    /// A subject that keeps `keep` alive until the case ends.
    pub fn keeping(port: Arc<P>, keep: impl Send + Sync + 'static) -> Self {
        Self { port, _keep: Box::new(keep) }
    }

    pub fn port(&self) -> &Arc<P> {
        &self.port
    }
}

impl<P: ?Sized> fmt::Debug for Subject<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subject")
    }
}

/// Makes a lease look older, as if `by` had passed since it was last written: its
/// `lease_expires_at` and `last_completed_at` move back by `by` (or the clock that judges them
/// moves forward by `by`). How a stale or long-completed lease is made without waiting.
#[async_trait]
pub trait LeaseAging: Send + Sync {
    async fn age(&self, name: &str, by: Duration);
}

/// Leases under test, and the means to age them.
pub struct LeaseSubject {
    pub leases: Subject<dyn MaintenanceLeases>,
    pub aging: Arc<dyn LeaseAging>,
}

impl LeaseSubject {
    pub fn new(leases: Subject<dyn MaintenanceLeases>, aging: Arc<dyn LeaseAging>) -> Self {
        Self { leases, aging }
    }
}

impl fmt::Debug for LeaseSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseSubject")
    }
}

/// Declares a suite: its macro `$name`, whose invocation `$name!(factory)` or
/// `$name!(factory, when = condition)` writes one `#[tokio::test]` per case listed here, each
/// calling the `pub async fn` of the same name in the suite module `$suite`.
macro_rules! contract_suite {
    ($(#[$doc:meta])* $name:ident for $suite:ident: [$($case:ident),* $(,)?]) => {
        $crate::testkit::contract::contract_suite!(
            @with_dollar ($) $(#[$doc])* $name for $suite: [$($case),*]
        );
    };
    // `$d` is a literal `$`, so that the macro written here can have metavariables of its own.
    (@with_dollar ($d:tt) $(#[$doc:meta])* $name:ident for $suite:ident: [$($case:ident),*]) => {
        $(#[$doc])*
        #[macro_export]
        macro_rules! $name {
            ($d($d subject:tt)*) => {
                $crate::__contract_tests!($suite, [$($case),*], $d($d subject)*);
            };
        }
    };
}
pub(crate) use contract_suite;

/// Writes one `#[tokio::test]` per case of a suite module. Each test calls the factory and
/// hands the case the subject, unless `available` (evaluated at the start of the test, may
/// `.await`) is false. Used by the suites' own macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ($suite:ident, [$($case:ident),* $(,)?], $factory:expr) => {
        $crate::__contract_tests!($suite, [$($case),*], $factory, when = true);
    };
    ($suite:ident, [$($case:ident),* $(,)?], $factory:expr, when = $available:expr) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !$available {
                    return;
                }
                let subject = $factory().await;
                $crate::testkit::contract::$suite::$case(&subject).await;
            }
        )*
    };
}
