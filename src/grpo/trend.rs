//! Did the run learn? The mean of the per-step training figures over the first and the last
//! fifth of the steps, side by side: a single step's reward is the score of a handful of
//! sampled completions and swings widely, so only such windows show a trend.

use super::messages::StepLog;

/// The metrics compared, with the label shown.
pub const TREND_METRICS: [(&str, &str); 3] = [
    ("rewards/correct/mean", "accuracy"),
    ("reward", "reward"),
    ("rewards/format/mean", "format"),
];

/// Mean of the first and last fifth of the steps for one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendRow {
    /// Metric name as logged.
    pub metric: &'static str,
    /// Label for people.
    pub label: &'static str,
    /// Mean over the first fifth of the steps.
    pub first: f64,
    /// Mean over the last fifth.
    pub last: f64,
}

/// The first-fifth and last-fifth means of [`TREND_METRICS`]; empty with fewer than 5 steps
/// (a fifth would be less than one step).
pub fn trend(logs: &[StepLog]) -> Vec<TrendRow> {
    let window = logs.len() / 5;
    if window == 0 {
        return Vec::new();
    }
    let mean = |steps: &[StepLog], key: &str| {
        let v: Vec<f64> = steps
            .iter()
            .filter_map(|l| l.metrics.get(key).copied())
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    TREND_METRICS
        .iter()
        .map(|&(metric, label)| TrendRow {
            metric,
            label,
            first: mean(&logs[..window], metric),
            last: mean(&logs[logs.len() - window..], metric),
        })
        .filter(|r| r.first.is_finite() && r.last.is_finite())
        .collect()
}

/// The trend as a small table; accuracy and format in percent.
pub fn render(rows: &[TrendRow], steps: usize) -> String {
    let w = steps / 5;
    let mut s = format!(
        "{:<10} {:>14} {:>14} {:>10}\n",
        "training",
        format!("steps 1-{w}"),
        format!("steps {}-{steps}", steps - w + 1),
        "change"
    );
    for r in rows {
        let pct = r.metric != "reward";
        let f = |x: f64| {
            if pct {
                format!("{:.1}%", 100.0 * x)
            } else {
                format!("{x:.3}")
            }
        };
        let d = r.last - r.first;
        let change = if pct {
            format!("{:+.1} pts", 100.0 * d)
        } else {
            format!("{d:+.3}")
        };
        s.push_str(&format!(
            "{:<10} {:>14} {:>14} {:>10}\n",
            r.label,
            f(r.first),
            f(r.last),
            change
        ));
    }
    s
}

#[cfg(test)]
mod tests;
