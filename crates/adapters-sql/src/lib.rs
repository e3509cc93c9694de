//! sandkeeper's SQL stores, on SQLite (the embedded default, one replica) and PostgreSQL
//! (several replicas): the session repository, the maintenance leases and, on PostgreSQL,
//! the cross-replica chat lock. See `docs/storage.md` for the schema and what the lease and
//! the lock guarantee.
//!
//! [`SqlStore`] is the one entry point: connect by URL, migrate, then hand the ports to the
//! use cases.
//!
//! API boundary: no sqlx type crosses this crate's public surface; sqlx errors are translated
//! into the ports' errors here, and passwords never reach an error message.

mod advisory;
mod dialect;
mod error;
mod leases;
mod pool;
mod postgres;
mod rows;
mod sessions;
mod sqlite;
mod sqlite_inline;
mod store;
mod url;
mod workspaces;

pub use error::ConnectError;
pub use store::{Backend, SqlStore, StoreOptions};
pub use url::redact_url;
