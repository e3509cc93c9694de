//! One row per target, and the Markdown that `docs/benchmarks.md` is made of.

use std::time::Duration;

/// One measured target.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// What was measured, e.g. "expiry scan, 100k vs 1k rows (SQLite)".
    pub(crate) name: String,
    /// The figure that the goal judges, e.g. "1.31x" or "41.2 MiB".
    pub(crate) figure: String,
    /// The goal, e.g. "<= 2.00x".
    pub(crate) goal: String,
    /// Whether the figure meets the goal; `None` when the benchmark could not run.
    pub(crate) met: Option<bool>,
    /// How it was measured: samples, min/median/max of each side.
    pub(crate) detail: String,
}

impl Row {
    pub(crate) fn failed(name: &str, error: &str) -> Self {
        Self {
            name: name.to_owned(),
            figure: "-".to_owned(),
            goal: "-".to_owned(),
            met: None,
            detail: format!("could not run: {error}"),
        }
    }
}

/// Min, median and max of a set of samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) min: Duration,
    pub(crate) median: Duration,
    pub(crate) max: Duration,
}

impl Summary {
    pub(crate) fn of(samples: &[Duration]) -> Self {
        assert!(!samples.is_empty(), "no samples");
        let mut sorted = samples.to_vec();
        sorted.sort();
        let mid = sorted.len() / 2;
        let median =
            if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2 };
        Self { min: sorted[0], median, max: sorted[sorted.len() - 1] }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "min {:.2?} / median {:.2?} / max {:.2?}", self.min, self.median, self.max)
    }
}

pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::from("| target | figure | goal | met | how |\n|---|---|---|---|---|\n");
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "not run",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.name, row.figure, row.goal, met, row.detail
        ));
    }
    out
}

pub(crate) fn write(path: &str, table: &str) -> std::io::Result<()> {
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let body = format!(
        "# Benchmarks\n\n\
         Every figure is a ratio of two measurements taken in the same run on the same machine,\n\
         so that the noise of a shared machine cancels out. Reproduce with:\n\n\
         ```\ncargo xtask bench\n```\n\n\
         Machine: {machine}, {cores} cores.\n\n{table}\n"
    );
    std::fs::write(path, body)
}
