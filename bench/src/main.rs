//! `cargo xtask bench`: measures sandkeeper against the floor it stands on, in one run on one
//! machine, so that the noise of a shared machine cancels out in the ratios.
//!
//! Each benchmark is a module with `async fn run() -> Result<Vec<Row>, String>`; this file runs
//! them in turn, prints a table and writes `docs/benchmarks.md`. The API benchmarks drive the
//! release `sandkeeper` binary (built by `cargo xtask bench`) against the real Docker engine.

mod api;
mod cleanup;
mod docker;
mod docker_floor;
mod engines;
mod exec;
mod expiry_scan;
mod gvisor;
mod pool;
mod report;
mod rss;
mod server;
mod streams;
mod workspace;

use std::process::ExitCode;
use std::time::Instant;

use report::{Row, Verdict};

type BenchFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Row>, String>>>>;

/// A benchmark's name (what a filter matches) and how to start it.
type Bench = (&'static str, fn() -> BenchFuture);

/// Every benchmark, in the order it runs.
const BENCHES: &[Bench] = &[
    ("docker-floor", || Box::pin(docker_floor::run())),
    ("api", || Box::pin(api::run())),
    ("engines", || Box::pin(engines::run())),
    ("exec", || Box::pin(exec::run())),
    ("cleanup", || Box::pin(cleanup::run())),
    ("expiry-scan", || Box::pin(expiry_scan::run())),
    ("rss", || Box::pin(rss::run())),
    ("workspace", || Box::pin(workspace::run())),
    ("streams", || Box::pin(streams::run())),
    ("gvisor", || Box::pin(gvisor::run())),
    ("pool", || Box::pin(pool::run())),
];

const USAGE: &str = "\
usage: sandkeeper-bench [--out PATH] [NAME...]

Runs sandkeeper's benchmarks and prints a table; with --out, also writes it to
PATH (docs/benchmarks.md), keeping whatever is written outside the generated part. NAMEs run only
the benchmarks whose name contains one of them (a partial run never writes PATH):
  docker-floor  the Docker adapter vs raw bollard (create+start, remove)
  api           cold create through the API vs raw bollard; reuse vs /healthz throughput
  engines       cold create with two engines (placement) vs one engine, both on one socket
  exec          exec round trip through the API vs raw bollard exec; 10 MiB upload/download;
                on the default image, then on sandkeeper/python:bookworm
  cleanup       cleanup of 500 expired sandboxes vs force-removing 500 containers directly
  expiry-scan   the expiry scan at 100k vs 1k rows (SQLite; PostgreSQL when DATABASE_URL is set)
  rss           the server's peak RSS with 10k running sessions in the store
  workspace     a create that restores a 10 MiB workspace vs a cold create plus raw tar x;
                the workspace archive through the API vs a raw tar c
  streams       a streamed exec's first output byte vs raw bollard; 16 background processes
                writing 1 MiB/s each, followed: the server's CPU and peak RSS
  gvisor        cold create and exec round trip with sandboxes under gVisor (runsc) vs runc on
                the engine SANDKEEPER_GVISOR_HOST names (cargo xtask bench starts one)
  pool          a new chat's PUT from a full warm pool (--pool-size 8) vs raw bollard
                create+start; a burst of 8 new chats from the pool, and the refill time

The servers run the release binary next to this one (target/release/sandkeeper; SANDKEEPER_BIN
overrides it) with RUST_LOG=info, their default; BENCH_SERVER_LOG overrides that level.";

#[tokio::main]
async fn main() -> ExitCode {
    let mut out = None;
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => match args.next() {
                Some(path) => out = Some(path),
                None => return usage_error("--out needs a path"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            flag if flag.starts_with('-') => return usage_error(&format!("unknown flag `{flag}`")),
            name => filters.push(name.to_owned()),
        }
    }
    let selected: Vec<_> = BENCHES
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if selected.is_empty() {
        return usage_error(&format!("no benchmark matches {filters:?}"));
    }

    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let docker = docker_version().await;
    let mut rows: Vec<Row> = Vec::new();
    let mut failed = 0;
    for (name, bench) in selected {
        eprintln!("bench: {name} ...");
        let bench_started = Instant::now();
        match bench().await {
            Ok(mut found) => rows.append(&mut found),
            Err(error) => {
                eprintln!("bench: {name} could not run: {error}");
                failed += 1;
                rows.push(Row::failed(name, &error));
            }
        }
        eprintln!("bench: {name} took {:.1?}", bench_started.elapsed());
    }
    let table = report::table(&rows);
    println!("{table}");

    let count = |verdict: Verdict| rows.iter().filter(|row| row.met == verdict).count();
    eprintln!(
        "bench: {} targets met, {} missed, {} not run, {} figures reported",
        count(Verdict::Met),
        count(Verdict::Missed),
        count(Verdict::NotRun),
        count(Verdict::Reported)
    );
    match out {
        Some(path) if filters.is_empty() => {
            let info = report::RunInfo {
                command: command_line(),
                docker,
                started: started_at,
                took: started.elapsed(),
            };
            if let Err(error) = report::write(&path, &table, &info) {
                eprintln!("bench: cannot write {path}: {error}");
                return ExitCode::FAILURE;
            }
            eprintln!("bench: wrote {path}");
        }
        Some(path) => {
            eprintln!("bench: a filtered run is not a full run: {path} is left as it was");
        }
        None => {}
    }
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("sandkeeper-bench: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

/// The command that reproduces this run, with the environment that changes what it measures.
fn command_line() -> String {
    let postgres = std::env::var("DATABASE_URL").is_ok_and(|url| !url.is_empty());
    if postgres {
        "DATABASE_URL=postgres://... cargo xtask bench   # DATABASE_URL adds the PostgreSQL row"
            .to_owned()
    } else {
        "cargo xtask bench   # DATABASE_URL=postgres://... adds the PostgreSQL row".to_owned()
    }
}

async fn docker_version() -> String {
    let docker = match docker::connect().await {
        Ok(docker) => docker,
        Err(error) => return format!("unreachable ({error})"),
    };
    match docker.version().await {
        Ok(version) => format!(
            "{} (API {})",
            version.version.unwrap_or_else(|| "?".to_owned()),
            version.api_version.unwrap_or_else(|| "?".to_owned())
        ),
        Err(error) => format!("unknown ({error})"),
    }
}
