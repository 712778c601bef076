//! Helpers of the `zone-bench` probe: argument parsing and summaries.

/// Parsed `zone-bench` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchArgs {
    /// Row label.
    pub label: String,
    /// Text whose first appearance on stdout stops the "marker" clock.
    pub marker: String,
    /// Measured runs.
    pub runs: usize,
    /// Unmeasured warm-up runs.
    pub warmup: usize,
    /// Kill the command as soon as the marker is seen (for guests that
    /// cannot finish on this host); start → exit is then start → kill.
    pub kill_at_marker: bool,
    /// The command.
    pub command: Vec<String>,
}

/// Parses `--label L --marker M [--runs N] [--warmup N] -- CMD...`.
pub fn parse_args(mut it: impl Iterator<Item = String>) -> Result<BenchArgs, String> {
    let (mut label, mut marker, mut runs, mut warmup, mut kill_at_marker) = (None, None, 10usize, 1usize, false);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--label" => label = Some(value("--label")?),
            "--marker" => marker = Some(value("--marker")?),
            "--runs" => runs = value("--runs")?.parse().map_err(|_| "--runs is not a number")?,
            "--warmup" => warmup = value("--warmup")?.parse().map_err(|_| "--warmup is not a number")?,
            "--kill-at-marker" => kill_at_marker = true,
            "--" => break,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let command: Vec<String> = it.collect();
    if command.is_empty() {
        return Err("no command after --".into());
    }
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(BenchArgs {
        label: label.ok_or("--label is required")?,
        marker: marker.ok_or("--marker is required")?,
        runs,
        warmup,
        kill_at_marker,
        command,
    })
}

/// min / median / max of a series.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Smallest value.
    pub min: f64,
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `values` (must not be empty).
    pub fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Self { min: v[0], median, max: v[n - 1] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_and_even_series() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]), Summary { min: 1.0, median: 2.0, max: 3.0 });
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn args_are_parsed_and_checked() {
        let a = parse_args(
            ["--label", "x", "--marker", "READY", "--runs", "3", "--", "vmm", "-a"].map(String::from).into_iter(),
        )
        .unwrap();
        assert_eq!((a.runs, a.warmup, a.command.len()), (3, 1, 2));
        assert!(parse_args(["--label", "x", "--marker", "m"].map(String::from).into_iter()).is_err());
        assert!(parse_args(["--runs", "0", "--label", "x", "--marker", "m", "--", "c"].map(String::from).into_iter()).is_err());
    }
}
