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
    /// Whether the figure meets the goal.
    pub(crate) met: Verdict,
    /// How it was measured: samples, min/median/max of each side.
    pub(crate) detail: String,
}

impl Row {
    /// A row whose figure is a ratio, shown with `decimals` digits, that must be at most `goal`.
    pub(crate) fn ratio_at_most(
        name: impl Into<String>,
        ratio: f64,
        decimals: usize,
        goal: f64,
        detail: String,
    ) -> Self {
        Self {
            name: name.into(),
            figure: format!("{ratio:.decimals$}x"),
            goal: format!("<= {goal:.2}x"),
            met: Verdict::of(ratio <= goal),
            detail,
        }
    }

    /// A row whose figure is the [`Paired`] ratio, shown with `decimals` digits, that must be at
    /// most `goal`; its detail is the pair's.
    pub(crate) fn paired_at_most(
        name: impl Into<String>,
        decimals: usize,
        goal: f64,
        paired: Paired,
    ) -> Self {
        Self::ratio_at_most(name, paired.ratio, decimals, goal, paired.detail)
    }

    pub(crate) fn failed(name: &str, error: &str) -> Self {
        Self {
            name: name.to_owned(),
            figure: "-".to_owned(),
            goal: "-".to_owned(),
            met: Verdict::NotRun,
            detail: format!("could not run: {error}"),
        }
    }
}

/// How a row's figure compares with its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Met,
    Missed,
    /// The benchmark could not run.
    NotRun,
    /// A figure worth knowing that no goal judges.
    Reported,
}

impl Verdict {
    pub(crate) fn of(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
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

/// The order of a round's two sides, `true` for sandkeeper's: it alternates round by round, so
/// that drift on the machine falls on both sides equally.
pub(crate) fn sides(round: usize) -> [bool; 2] {
    let ours_first = round % 2 == 0;
    [ours_first, !ours_first]
}

/// Durations as seconds, for [`paired_ratio`].
pub(crate) fn seconds(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(Duration::as_secs_f64).collect()
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "no values");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 }
}

/// The median of the per-round ratios `numerators[i] / denominators[i]`: each round's two samples
/// were taken back to back, so a slow phase of the machine weighs on both sides of one ratio.
pub(crate) fn paired_ratio(numerators: &[f64], denominators: &[f64]) -> f64 {
    let ratios: Vec<f64> = numerators
        .iter()
        .zip(denominators)
        .map(|(numerator, denominator)| numerator / denominator.max(f64::MIN_POSITIVE))
        .collect();
    median(&ratios)
}

/// Two series of the same interleaved rounds (see [`sides`]) compared: the median of the
/// per-round ratios of the first to the second ([`paired_ratio`]), and the detail that says how
/// they were measured.
#[derive(Debug, Clone)]
pub(crate) struct Paired {
    pub(crate) ratio: f64,
    pub(crate) detail: String,
}

impl Paired {
    /// `ours` compared with `theirs`, each a label and its samples, one a round; `what` is what
    /// each round ran, as the detail says it after "paired ratios" (empty, or e.g. " of `true`").
    pub(crate) fn of(
        what: &str,
        (ours_label, ours): (&str, &[Duration]),
        (theirs_label, theirs): (&str, &[Duration]),
    ) -> Self {
        Self {
            ratio: paired_ratio(&seconds(ours), &seconds(theirs)),
            detail: format!(
                "median of {} interleaved paired ratios{what}; {ours_label} {}; {theirs_label} {}",
                ours.len(),
                Summary::of(ours),
                Summary::of(theirs)
            ),
        }
    }
}

/// Min, median and max of plain numbers, shown with `decimals` digits and a unit.
pub(crate) fn spread(values: &[f64], decimals: usize, unit: &str) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let median = median(values);
    format!(
        "min {min:.decimals$}{unit} / median {median:.decimals$}{unit} / max {max:.decimals$}{unit}"
    )
}

pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::from("| target | figure | goal | met | how |\n|---|---|---|---|---|\n");
    for row in rows {
        let met = match row.met {
            Verdict::Met => "yes",
            Verdict::Missed => "NO",
            Verdict::NotRun => "not run",
            Verdict::Reported => "-",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.name, row.figure, row.goal, met, row.detail
        ));
    }
    out
}

/// Where and how a run was made, for the head of `docs/benchmarks.md`.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    /// The command that reproduces the run.
    pub(crate) command: String,
    /// The Docker engine's version, or why it is unknown.
    pub(crate) docker: String,
    pub(crate) started: chrono::DateTime<chrono::Utc>,
    pub(crate) took: Duration,
}

/// The generated part of `docs/benchmarks.md` lies between these markers; whatever is outside
/// them (a hand-written analysis below) is kept by the next run.
const BEGIN: &str =
    "<!-- bench:begin (written by `cargo xtask bench`; edit outside these markers) -->";
const END: &str = "<!-- bench:end -->";

pub(crate) fn write(path: &str, table: &str, info: &RunInfo) -> std::io::Result<()> {
    let generated = format!("{BEGIN}\n{}{END}\n", generated(table, info));
    let body = match std::fs::read_to_string(path) {
        Ok(existing) => match (existing.find(BEGIN), existing.find(END)) {
            (Some(begin), Some(end)) if begin < end => {
                // The generated part ends its own line; the rest is kept byte for byte.
                let rest = &existing[end + END.len()..];
                let rest = rest.strip_prefix('\n').unwrap_or(rest);
                format!("{}{generated}{rest}", &existing[..begin])
            }
            _ => format!("# Benchmarks\n\n{generated}"),
        },
        Err(_) => format!("# Benchmarks\n\n{generated}"),
    };
    std::fs::write(path, body)
}

fn generated(table: &str, info: &RunInfo) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split(':').nth(1))
        .map_or_else(|| "unknown CPU".to_owned(), |name| name.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB RAM", kib / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown RAM".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |release| release.trim().to_owned());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |output| String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        );
    format!(
        "Every figure is a ratio of two measurements taken in the same run on the same machine\n\
         (or, for memory, an absolute peak), so that the noise of a shared machine cancels out.\n\
         `met` compares the figure with its goal (sandkeeper's performance targets;\n\
         `-` for a figure that is only reported). Reproduce with:\n\n\
         ```\n{command}\n```\n\n\
         - Machine: {cpu}, {cores} cores, {memory}, Linux {kernel}, Docker engine {docker}\n\
         - Run: {started}, took {took}, commit {commit}\n\n{table}",
        command = info.command,
        docker = info.docker,
        started = info.started.format("%Y-%m-%d %H:%M UTC"),
        took = format_duration(info.took),
    )
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 60 {
        format!("{}m {:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_row_shows_the_figure_and_the_goal_and_judges_at_most() {
        let row = Row::ratio_at_most("create", 1.23456, 3, 1.5, "detail".to_owned());
        assert_eq!((row.figure.as_str(), row.goal.as_str()), ("1.235x", "<= 1.50x"));
        assert_eq!(row.met, Verdict::Met);
        assert_eq!(Row::ratio_at_most("create", 1.5, 2, 1.5, String::new()).met, Verdict::Met);
        let missed = Row::ratio_at_most("exec", 2.004, 2, 2.0, String::new());
        assert_eq!((missed.figure.as_str(), missed.met), ("2.00x", Verdict::Missed));
    }

    #[test]
    fn a_paired_row_judges_the_median_ratio_and_says_how_it_was_measured() {
        let ms = |values: &[u64]| -> Vec<Duration> {
            values.iter().copied().map(Duration::from_millis).collect()
        };
        let (api, raw) = (ms(&[20, 30, 10]), ms(&[10, 30, 20]));
        let row = Row::paired_at_most(
            "create",
            2,
            1.5,
            Paired::of(" of `true`", ("API", &api), ("raw", &raw)),
        );
        assert_eq!((row.figure.as_str(), row.met), ("1.00x", Verdict::Met));
        assert_eq!(
            row.detail,
            format!(
                "median of 3 interleaved paired ratios of `true`; API {}; raw {}",
                Summary::of(&api),
                Summary::of(&raw)
            )
        );
    }

    fn info() -> RunInfo {
        RunInfo {
            command: "cargo xtask bench".to_owned(),
            docker: "20.10".to_owned(),
            started: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            took: Duration::from_secs(75),
        }
    }

    #[test]
    fn medians_and_paired_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        // Each round's ratio counts, not the ratio of the medians (which would be 2.0 / 2.0).
        assert_eq!(paired_ratio(&[2.0, 3.0, 1.0], &[1.0, 3.0, 2.0]), 1.0);
        assert_eq!(paired_ratio(&[2.0, 6.0, 1.0], &[1.0, 3.0, 2.0]), 2.0);
    }

    /// A report file's path in a directory of its own, removed with the directory.
    fn report_file() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("benchmarks.md").to_str().unwrap().to_owned();
        (dir, path)
    }

    /// Writes a run with `table` into the report at `path`, and reads the report back.
    fn write_and_read(path: &str, table: &str) -> String {
        write(path, table, &info()).unwrap();
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_new_file_gets_a_title_and_the_generated_part() {
        let (_dir, path) = report_file();
        let written = write_and_read(&path, "| the table |\n");
        assert!(written.starts_with("# Benchmarks\n\n"), "{written}");
        assert!(written.contains("| the table |"), "{written}");
        assert!(written.contains("cargo xtask bench"), "{written}");
        assert!(written.contains("took 1m 15s"), "{written}");
        assert!(written.trim_end().ends_with(END), "{written}");
    }

    #[test]
    fn a_rerun_replaces_the_generated_part_and_keeps_the_hand_written_text() {
        let (_dir, path) = report_file();
        let mut edited = write_and_read(&path, "| first run |\n");
        edited = edited.replace("# Benchmarks", "# Benchmarks of sandkeeper");
        edited.push_str("\n## Analysis\n\nWhy the figures are what they are.\n");
        std::fs::write(&path, edited).unwrap();

        let written = write_and_read(&path, "| second run |\n");
        assert!(written.starts_with("# Benchmarks of sandkeeper\n"), "{written}");
        assert!(written.contains("| second run |"), "{written}");
        assert!(!written.contains("| first run |"), "{written}");
        assert!(
            written.ends_with("## Analysis\n\nWhy the figures are what they are.\n"),
            "{written}"
        );
        assert_eq!(written.matches(BEGIN).count(), 1, "{written}");

        let again = write_and_read(&path, "| second run |\n");
        assert_eq!(again, written, "the same run, the same file");
    }
}
