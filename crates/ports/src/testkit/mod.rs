//! Test doubles shared by the test suites of the workspace (feature `testkit`).
//!
//! These are fakes for unit tests of use cases; the real parts are tested against the real
//! SQLite file, PostgreSQL server and Docker engine.

mod clock;
pub mod contract;
mod repository;
mod runtime;

pub use clock::ManualClock;
pub use repository::DelegatingRepository;
pub use runtime::{FakeRuntime, RuntimeCall};
