//! `sandkeeper`: one Docker sandbox per chat.
//!
//! Architecture invariant: this is the only crate that knows HTTP and JSON, and the only one that
//! knows every other crate. It parses the configuration, wires the adapters into the use cases,
//! serves the API and runs the background loops.
//!
//! Exit codes: 0 success, 1 a failure at run time (store unreachable, a pass with errors),
//! 2 a configuration mistake (the message names the setting and the value).

mod config;
mod http;
mod loops;
mod serve;
mod services;
mod wiring;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use sandkeeper_adapters_observability::{InitError, LogFormat, Telemetry, TelemetryConfig};

use crate::config::{Cli, Command, ConfigError, LogArgs};
use crate::http::views::{CleanupReportView, MaintenanceReportView};
use crate::services::{ServiceSettings, Services};
use crate::wiring::StartError;

/// The TTL the one-shot commands give the use cases; they never create a sandbox.
const UNUSED_TTL: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|error| exit_on_parse_error(error));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    if let Err(Failure::Start(error)) = &outcome {
        tracing::error!(error.message = %error, "sandkeeper stopped");
    }
    // Every queued log line is out before the last words and the exit.
    sandkeeper_adapters_observability::flush_logs();
    match outcome {
        Ok(code) => code,
        Err(Failure::Config(error)) => {
            // Like clap's own errors, with the same exit code.
            eprintln!("error: {}\n\nFor more information, try '--help'.", with_origin(&error.0));
            ExitCode::from(2)
        }
        Err(Failure::Start(error)) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command-line error and exits with code 2 (or 0 for `--help` and `--version`).
/// A bad value is shown with the message of its parser, which names the setting and the value
/// (`--ttl: `abc` is not a duration like 30s or 5m`), instead of clap's longer wording.
fn exit_on_parse_error(error: clap::Error) -> ! {
    if error.kind() == clap::error::ErrorKind::ValueValidation {
        if let Some(cause) = std::error::Error::source(&error) {
            eprintln!(
                "error: {}\n\nFor more information, try '--help'.",
                with_origin(&cause.to_string())
            );
            std::process::exit(2);
        }
    }
    error.exit()
}

/// A message about `--setting: ...` with, when the value came from the setting's environment
/// variable rather than the command line, the variable named, since that is where to fix it.
fn with_origin(message: &str) -> String {
    let Some(flag) = message.strip_prefix("--").and_then(|rest| rest.split(':').next()) else {
        return message.to_owned();
    };
    let long = format!("--{flag}");
    let on_command_line =
        std::env::args().any(|arg| arg == long || arg.starts_with(&format!("{long}=")));
    let variable = format!("SANDKEEPER_{}", flag.replace('-', "_").to_uppercase());
    if !on_command_line && std::env::var_os(&variable).is_some() {
        format!("{message} (set by {variable})")
    } else {
        message.to_owned()
    }
}

pub(crate) enum Failure {
    Config(ConfigError),
    Start(StartError),
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Self {
        Self::Config(error)
    }
}

impl From<StartError> for Failure {
    fn from(error: StartError) -> Self {
        Self::Start(error)
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.validate()?;
            let telemetry = init_telemetry(&config.log)?;
            serve::serve(config, telemetry).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(args) => {
            init_telemetry(&args.log)?;
            let store = wiring::open_store(&args.store).await?;
            println!(
                "{}",
                serde_json::json!({ "migrated": true, "backend": store.backend().as_str() })
            );
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cleanup(args) => {
            init_telemetry(&args.log)?;
            let runtime = wiring::docker_runtime(&args.docker)?;
            let store = wiring::open_store(&args.store).await?;
            let services = Services::new(
                wiring::ports(&store, runtime),
                &one_shot_settings(&args.docker.instance_id, Duration::from_secs(60)),
            );
            let outcome = services.cleanup.execute().await;
            store.close().await;
            let report = outcome.map_err(|error| {
                StartError(format!("cleanup failed: {}", sandkeeper_ports::Report(&error)))
            })?;
            print_json(&CleanupReportView::new(&report));
            Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Maintain(args) => {
            init_telemetry(&args.log)?;
            let runtime = wiring::docker_runtime(&args.docker)?;
            let store = wiring::open_store(&args.store).await?;
            let services = Arc::new(Services::new(
                wiring::ports(&store, runtime),
                &one_shot_settings(&args.docker.instance_id, args.sweep.orphan_grace),
            ));
            let outcome = services.sweep_now().await;
            store.close().await;
            let report =
                outcome.map_err(|error| StartError(format!("maintenance sweep: {error}")))?;
            print_json(&MaintenanceReportView::new(&report));
            Ok(if report.errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn one_shot_settings(instance_id: &str, orphan_grace: Duration) -> ServiceSettings {
    ServiceSettings {
        ttl: UNUSED_TTL,
        max_sandboxes: None,
        instance_id: instance_id.to_owned(),
        orphan_grace,
        sweep_min_interval: Duration::ZERO,
        operations: services::OperationSettings::default(),
    }
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("error: cannot print the report: {error}"),
    }
}

fn init_telemetry(args: &LogArgs) -> Result<Telemetry, Failure> {
    let log_format = match args.log_format {
        config::LogFormat::Text => LogFormat::Human,
        config::LogFormat::Json => LogFormat::Json,
    };
    sandkeeper_adapters_observability::init(&TelemetryConfig {
        log_format,
        default_filter: "info".to_owned(),
    })
    .map_err(|error| match error {
        InitError::InvalidFilter { .. } => Failure::Config(ConfigError(error.to_string())),
        other => Failure::Start(StartError(other.to_string())),
    })
}
