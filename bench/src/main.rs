//! `cargo xtask bench`: measures sandkeeper against the floor it stands on, in one run on one
//! machine, so that the noise of a shared machine cancels out in the ratios.
//!
//! Each benchmark is a module with `async fn run() -> Result<Vec<Row>, String>`; this file runs
//! them in turn, prints a table and writes `docs/benchmarks.md`.

mod docker_floor;
mod expiry_scan;
mod report;

use report::Row;

#[tokio::main]
async fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "docs/benchmarks.md".to_owned());
    let mut rows: Vec<Row> = Vec::new();
    let benches: Vec<(&str, BenchFuture)> = vec![
        ("docker floor", Box::pin(docker_floor::run())),
        ("expiry scan", Box::pin(expiry_scan::run())),
    ];
    for (name, bench) in benches {
        eprintln!("bench: {name} ...");
        match bench.await {
            Ok(mut found) => rows.append(&mut found),
            Err(error) => rows.push(Row::failed(name, &error)),
        }
    }
    let table = report::table(&rows);
    println!("{table}");
    if let Err(error) = report::write(&out, &table) {
        eprintln!("bench: cannot write {out}: {error}");
        std::process::exit(1);
    }
}

type BenchFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Row>, String>>>>;
