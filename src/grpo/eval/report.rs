//! What an evaluation reports: one [`Prediction`] per question (the predictions JSONL), and the
//! [`EvalReport`] they add up to (accuracy, format rate, reward means, per-category and
//! per-task accuracy, what was left out), as text, as JSON, and side by side for two models.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Split;
use crate::grpo::reward::{COMPONENT_NAMES, RewardBreakdown};

/// One line of the predictions JSONL: what the model answered and how it scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Question id.
    pub id: String,
    /// The correct letter (as the prompt builder normalized it).
    pub correct_answer: String,
    /// The letter read from the completion's SOLUTION, or null.
    pub predicted: Option<String>,
    /// The completion, decoded with special tokens skipped (what the scorer saw).
    pub completion: String,
    /// Generated tokens (the stop token included).
    pub tokens: usize,
    /// Whether an eos id ended it (false: cut at max_completion_length).
    pub stopped: bool,
    /// The reward components (unweighted, each in [0, 1]) and the weighted total.
    pub rewards: RewardBreakdown,
    /// The record's `category`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The record's `task_name`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
}

/// Accuracy of a group of questions (one category or task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupAccuracy {
    /// Questions evaluated.
    pub n: usize,
    /// Questions answered with the correct letter.
    pub correct: usize,
}

impl GroupAccuracy {
    /// correct / n (0 for an empty group).
    pub fn accuracy(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.correct as f64 / self.n as f64
        }
    }
}

/// A record left out of the figures, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Question id.
    pub id: String,
    /// Where it failed: `reader`, `loader` or `prompt`.
    pub stage: String,
    /// The reason.
    pub reason: String,
}

/// The figures of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Split evaluated.
    pub split: Split,
    /// Records evaluated (the denominator of every rate).
    pub n: usize,
    /// Records answered with the correct letter.
    pub correct: usize,
    /// correct / n.
    pub accuracy: f64,
    /// Share of completions earning the format reward (exactly one well-formed working-out +
    /// SOLUTION pair).
    pub format_rate: f64,
    /// Share of completions from which an answer letter could be read.
    pub answered_rate: f64,
    /// Mean of each reward component (unweighted) and of the weighted total.
    pub rewards: RewardBreakdown,
    /// Mean completion length in tokens.
    pub mean_completion_tokens: f64,
    /// Share of completions cut at max_completion_length (TRL's `completions/clipped_ratio`).
    pub truncated_rate: f64,
    /// Accuracy per `category` (empty when no record has one).
    pub by_category: BTreeMap<String, GroupAccuracy>,
    /// Accuracy per `task_name` (empty when no record has one).
    pub by_task: BTreeMap<String, GroupAccuracy>,
    /// Records the dataset reader rejected (malformed).
    pub rejected: usize,
    /// Valid records that could not be evaluated (image, prompt).
    pub failed: usize,
    /// The rejected and failed records with their reasons (the first 10 000 failures).
    pub failures: Vec<Failure>,
    /// Wall-clock seconds of the evaluation (not part of the deterministic figures).
    pub seconds: f64,
}

/// Running sums behind an [`EvalReport`].
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) n: usize,
    pub(super) correct: usize,
    answered: usize,
    pub(super) rewards: RewardBreakdown,
    tokens: usize,
    truncated: usize,
    by_category: BTreeMap<String, GroupAccuracy>,
    by_task: BTreeMap<String, GroupAccuracy>,
}

impl Tally {
    /// Counts one prediction.
    pub(super) fn add(&mut self, p: &Prediction) {
        let ok = p.predicted.as_deref() == Some(p.correct_answer.as_str());
        self.n += 1;
        self.correct += usize::from(ok);
        self.answered += usize::from(p.predicted.is_some());
        self.rewards.add(&p.rewards);
        self.tokens += p.tokens;
        self.truncated += usize::from(!p.stopped);
        for (key, map) in [
            (&p.category, &mut self.by_category),
            (&p.task_name, &mut self.by_task),
        ] {
            if let Some(k) = key {
                let g = map.entry(k.clone()).or_default();
                g.n += 1;
                g.correct += usize::from(ok);
            }
        }
    }

    /// The report of the counted predictions, with the records left out and the time taken.
    pub(super) fn report(
        self,
        split: Split,
        (rejected, failed): (usize, usize),
        failures: Vec<Failure>,
        seconds: f64,
    ) -> EvalReport {
        let rate = |k: usize| {
            if self.n == 0 {
                0.0
            } else {
                k as f64 / self.n as f64
            }
        };
        let rewards = self.rewards.mean(self.n);
        EvalReport {
            split,
            n: self.n,
            correct: self.correct,
            accuracy: rate(self.correct),
            format_rate: rewards.format,
            answered_rate: rate(self.answered),
            rewards,
            mean_completion_tokens: rate(self.tokens),
            truncated_rate: rate(self.truncated),
            by_category: self.by_category,
            by_task: self.by_task,
            rejected,
            failed,
            failures,
            seconds,
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

impl EvalReport {
    /// A human-readable summary: headline rates, reward means, per-category and per-task
    /// accuracy, and the first few failures.
    pub fn render(&self) -> String {
        let mut s = format!(
            "eval on {}: {} questions ({} rejected, {} failed), {:.1} s\n",
            self.split.name(),
            self.n,
            self.rejected,
            self.failed,
            self.seconds
        );
        let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<22} {v:>16}\n"));
        line(
            "accuracy",
            format!("{} ({}/{})", pct(self.accuracy), self.correct, self.n),
        );
        line("format rate", pct(self.format_rate));
        line("answered (letter)", pct(self.answered_rate));
        line("reward total", format!("{:.4}", self.rewards.total));
        for (name, v) in COMPONENT_NAMES.iter().zip(self.rewards.components()) {
            line(&format!("rewards/{name}"), format!("{v:.4}"));
        }
        line(
            "completion tokens",
            format!("{:.1}", self.mean_completion_tokens),
        );
        line("truncated", pct(self.truncated_rate));
        for (title, map) in [
            ("category", &self.by_category),
            ("task_name", &self.by_task),
        ] {
            if map.is_empty() {
                continue;
            }
            s.push_str(&format!("  per {title}:\n"));
            for (k, g) in map {
                s.push_str(&format!(
                    "    {k:<30} n={:<6} {:>7}\n",
                    g.n,
                    pct(g.accuracy())
                ));
            }
        }
        for f in self.failures.iter().take(5) {
            s.push_str(&format!("  skipped {} ({}): {}\n", f.id, f.stage, f.reason));
        }
        if self.failures.len() > 5 {
            s.push_str(&format!(
                "  ... and {} more skipped\n",
                self.failures.len() - 5
            ));
        }
        s
    }

    /// The report as JSON (what `eval.json` holds): every field, accuracy per group included.
    pub fn to_json(&self) -> serde_json::Value {
        let groups = |m: &BTreeMap<String, GroupAccuracy>| -> serde_json::Value {
            m.iter()
                .map(|(k, g)| {
                    (
                        k.clone(),
                        serde_json::json!({"n": g.n, "correct": g.correct, "accuracy": g.accuracy()}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        serde_json::json!({
            "split": self.split.name(),
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "format_rate": self.format_rate,
            "answered_rate": self.answered_rate,
            "rewards": self.rewards,
            "mean_completion_tokens": self.mean_completion_tokens,
            "truncated_rate": self.truncated_rate,
            "by_category": groups(&self.by_category),
            "by_task": groups(&self.by_task),
            "rejected": self.rejected,
            "failed": self.failed,
            "failures": self.failures,
            "seconds": self.seconds,
        })
    }
}

/// One table comparing two evaluations of the same split: base | adapter | Δ (percentage
/// points for rates), with per-category and per-task accuracy.
pub fn compare(base: &EvalReport, adapted: &EvalReport) -> String {
    let mut s = format!(
        "{:<38} {:>10} {:>10} {:>10}\n",
        format!("eval on {}", adapted.split.name()),
        "base",
        "adapter",
        "Δ"
    );
    let mut rate = |k: &str, a: f64, b: f64| {
        s.push_str(&format!(
            "{k:<38} {:>10} {:>10} {:>+9.1}pt\n",
            pct(a),
            pct(b),
            100.0 * (b - a)
        ))
    };
    rate("accuracy", base.accuracy, adapted.accuracy);
    rate("format rate", base.format_rate, adapted.format_rate);
    rate(
        "answered (letter)",
        base.answered_rate,
        adapted.answered_rate,
    );
    rate("truncated", base.truncated_rate, adapted.truncated_rate);
    let mut value = |k: &str, a: f64, b: f64| {
        s.push_str(&format!("{k:<38} {a:>10.4} {b:>10.4} {:>+10.4}\n", b - a))
    };
    value("reward total", base.rewards.total, adapted.rewards.total);
    let components = base.rewards.components().into_iter();
    for ((name, a), b) in COMPONENT_NAMES
        .iter()
        .zip(components)
        .zip(adapted.rewards.components())
    {
        value(&format!("rewards/{name}"), a, b);
    }
    value(
        "completion tokens",
        base.mean_completion_tokens,
        adapted.mean_completion_tokens,
    );
    for (title, a, b) in [
        ("category", &base.by_category, &adapted.by_category),
        ("task_name", &base.by_task, &adapted.by_task),
    ] {
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let (ga, gb) = (
                a.get(k).copied().unwrap_or_default(),
                b.get(k).copied().unwrap_or_default(),
            );
            s.push_str(&format!(
                "{:<38} {:>10} {:>10} {:>+9.1}pt\n",
                format!("{title} {k} (n={})", gb.n.max(ga.n)),
                pct(ga.accuracy()),
                pct(gb.accuracy()),
                100.0 * (gb.accuracy() - ga.accuracy())
            ));
        }
    }
    s.push_str(&format!(
        "{:<38} {:>10} {:>10}\n",
        "questions (rejected+failed)",
        format!("{} ({})", base.n, base.rejected + base.failed),
        format!("{} ({})", adapted.n, adapted.rejected + adapted.failed)
    ));
    s.push_str(&format!(
        "{:<38} {:>10.1} {:>10.1}\n",
        "seconds", base.seconds, adapted.seconds
    ));
    s
}
