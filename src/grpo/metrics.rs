//! Per-step reward metrics with TRL's names and TRL's meaning, so that curves from this
//! program and from a TRL run can be read side by side:
//!
//! - `rewards/<name>/mean`, `rewards/<name>/std`: mean and Bessel-corrected std of each
//!   UNWEIGHTED component over every completion of the step (TRL logs each reward
//!   function's raw output; the weights only enter the total);
//! - `reward`, `reward_std`: mean and Bessel-corrected std of the weighted total over every
//!   completion of the step (not an average of per-group stds);
//! - `frac_reward_zero_std`: from the advantage computation (see [`crate::grpo::advantage`]).
//!
//! Checked against TRL's own expressions (grpo_trainer.py, lines 2820-2830) through
//! `tests/fixtures/advantage/trl_metrics.json`. As in TRL, a std over a single completion is
//! NaN (serialized as `null` by serde_json).

use std::collections::BTreeMap;

use super::advantage::{Advantages, mean_std};
use super::reward::{COMPONENT_NAMES, RewardBreakdown};

/// One step's reward metrics, keyed by TRL's metric names (sorted, serializable as is).
pub type StepMetrics = BTreeMap<String, f64>;

/// The reward metrics of one optimizer step: `breakdowns` are every completion of the step,
/// `advantages` the result of [`crate::grpo::advantage::advantages`] on their totals.
pub fn reward_metrics(breakdowns: &[RewardBreakdown], advantages: &Advantages) -> StepMetrics {
    let mut m = StepMetrics::new();
    for (k, name) in COMPONENT_NAMES.iter().enumerate() {
        let xs: Vec<f64> = breakdowns.iter().map(|b| b.components()[k]).collect();
        let (mean, std) = mean_std(&xs);
        m.insert(format!("rewards/{name}/mean"), mean);
        m.insert(format!("rewards/{name}/std"), std);
    }
    let totals: Vec<f64> = breakdowns.iter().map(|b| b.total).collect();
    let (mean, std) = mean_std(&totals);
    m.insert("reward".into(), mean);
    m.insert("reward_std".into(), std);
    m.insert(
        "frac_reward_zero_std".into(),
        advantages.frac_reward_zero_std,
    );
    m
}

#[cfg(test)]
mod tests;
