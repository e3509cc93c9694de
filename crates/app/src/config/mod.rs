//! The configuration: the command line, and what validation makes of it.
//!
//! One path: clap parses the flags and their `SANDKEEPER_*` variables ([`flags`]), each single
//! value by its parser ([`values`]); validation checks what involves several settings and makes
//! the settings of every part in that part's own types ([`validate`] into [`settings`]), which
//! the wiring hands over as they are. Every error names its setting as a typed field
//! ([`setting`]); a bad value exits 2. Secrets (the API token, the database URL) are held so
//! that no `Debug` output shows them ([`secrets`]).

mod engines;
mod flags;
mod secrets;
pub(crate) mod setting;
mod settings;
mod validate;
mod values;
mod workspace;

pub(crate) use engines::EngineConfig;
pub(crate) use flags::{Cli, Command, LogFormat, TtlMode};
pub(crate) use secrets::ApiToken;
pub(crate) use setting::{ConfigError, Setting};
pub(crate) use settings::{ServeConfig, ServiceSettings, StoreConfig};
pub(crate) use validate::docker_error;
pub(crate) use workspace::{WorkspaceBackend, WorkspaceConfig};
