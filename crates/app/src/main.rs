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

use clap::Parser;
use sandkeeper_adapters_observability::{
    InitError, LogFormat, OtlpEndpoint, Telemetry, TelemetryConfig,
};

use crate::config::setting::Flag;
use crate::config::{Cli, Command, ConfigError, Setting};
use crate::http::views::{CleanupReportView, MaintenanceReportView};
use crate::services::Services;
use crate::wiring::StartError;

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
            print_config_error(&error);
            ExitCode::from(2)
        }
        Err(Failure::Start(error)) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command-line error and exits with code 2 (or 0 for `--help` and `--version`).
/// A value refused by one of our parsers is shown with its [`ConfigError`] (which clap keeps
/// as the cause), naming the setting and the value (`--ttl: `abc` is not a duration like 30s or
/// 5m`), instead of clap's longer wording.
fn exit_on_parse_error(error: clap::Error) -> ! {
    let ours = std::error::Error::source(&error).and_then(|cause| cause.downcast_ref());
    if let Some(cause) = ours {
        print_config_error(cause);
        std::process::exit(2);
    }
    error.exit()
}

/// Like clap's own errors: the message, with the variable named when the value came from it.
fn print_config_error(error: &ConfigError) {
    let origin = match error.setting {
        Setting::Flag(flag) => set_by(flag, std::env::args(), std::env::var_os(flag.env).is_some()),
        Setting::Variable(_) => None,
    };
    let origin = origin.map(|variable| format!(" (set by {variable})")).unwrap_or_default();
    eprintln!("error: {error}{origin}\n\nFor more information, try '--help'.");
}

/// The variable that gave `flag` its value: when it is set and the flag is not on the command
/// line, since that is where to fix it.
fn set_by(
    flag: Flag,
    mut args: impl Iterator<Item = String>,
    variable_set: bool,
) -> Option<&'static str> {
    let long = flag.to_string();
    let on_command_line = args.any(|arg| {
        arg == long || arg.strip_prefix(&long).is_some_and(|rest| rest.starts_with('='))
    });
    (variable_set && !on_command_line).then_some(flag.env)
}

/// Why a command did not run: its settings (exit 2) or the start (exit 1).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.validate()?;
            let telemetry = init_telemetry(config.log_format, config.otlp_endpoint.clone())?;
            serve::serve(config, telemetry).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(args) => {
            init_telemetry(args.log.log_format, None)?;
            let store = wiring::open_store(&args.store.config()).await?;
            println!(
                "{}",
                serde_json::json!({ "migrated": true, "backend": store.backend().as_str() })
            );
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cleanup(args) => {
            let config = args.validate()?;
            init_telemetry(config.log_format, None)?;
            let (engines, _) = wiring::engines(&config.engines)?;
            let store = wiring::open_store(&config.store).await?;
            let services = Services::new(
                wiring::ports(&store, engines, &config.services).await?,
                &config.services,
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
            let config = args.validate()?;
            init_telemetry(config.log_format, None)?;
            let (engines, _) = wiring::engines(&config.engines)?;
            let store = wiring::open_store(&config.store).await?;
            let services = Arc::new(Services::new(
                wiring::ports(&store, engines, &config.services).await?,
                &config.services,
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

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("error: cannot print the report: {error}"),
    }
}

fn init_telemetry(
    format: config::LogFormat,
    otlp_endpoint: Option<OtlpEndpoint>,
) -> Result<Telemetry, Failure> {
    let log_format = match format {
        config::LogFormat::Text => LogFormat::Human,
        config::LogFormat::Json => LogFormat::Json,
    };
    sandkeeper_adapters_observability::init(&TelemetryConfig {
        log_format,
        default_filter: "info".to_owned(),
        otlp_endpoint,
    })
    .map_err(|error| match error {
        InitError::InvalidFilter { setting, value, reason } => Failure::Config(ConfigError::new(
            Setting::Variable(setting),
            format!(
                "`{value}` is not a valid log filter ({reason}); use e.g. `info` or \
                 `warn,sandkeeper=debug`"
            ),
        )),
        other => Failure::Start(StartError(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::setting::TTL;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn the_variable_is_named_only_when_it_gave_the_value() {
        assert_eq!(set_by(TTL, args(&["sandkeeper", "serve"]), true), Some("SANDKEEPER_TTL"));
        assert_eq!(set_by(TTL, args(&["sandkeeper", "serve"]), false), None);
        assert_eq!(set_by(TTL, args(&["sandkeeper", "serve", "--ttl", "2h"]), true), None);
        assert_eq!(set_by(TTL, args(&["sandkeeper", "serve", "--ttl=2h"]), true), None);
        // Another flag that starts like it is not it.
        let other = args(&["sandkeeper", "serve", "--ttl-mode", "fixed"]);
        assert_eq!(set_by(TTL, other, true), Some("SANDKEEPER_TTL"));
    }
}
