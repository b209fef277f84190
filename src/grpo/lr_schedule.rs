//! Learning-rate schedules of transformers' `get_scheduler` (linear, cosine, constant with
//! warmup), as the HF `Trainer` steps them: the update of optimizer step `k` (0-based) uses
//! `peak * lambda(k)`, and transformers 5 logs that same value as `learning_rate`.
//! Checked against transformers' own schedulers (`scripts/trl_loss_fixtures.py`).

use crate::config::{SchedulerType, TrainingConfig};

/// Warmup steps of a run of `total_steps` optimizer steps: `warmup_steps` when > 0, else
/// `ceil(total_steps * warmup_ratio)` (transformers `TrainingArguments.get_warmup_steps`, where
/// a `warmup_steps` below 1 is the ratio).
pub fn warmup_steps(total_steps: usize, cfg: &TrainingConfig) -> usize {
    if cfg.warmup_steps > 0 {
        cfg.warmup_steps
    } else {
        (total_steps as f64 * cfg.warmup_ratio).ceil() as usize
    }
}

/// The multiplier of the peak learning rate for the update of optimizer step `step` (0-based),
/// transformers' `lr_lambda`: warmup `step / max(1, warmup)`, then
/// - linear: `max(0, (total - step) / max(1, total - warmup))`,
/// - cosine (`num_cycles = 0.5`): `max(0, 0.5 (1 + cos(pi progress)))` with
///   `progress = (step - warmup) / max(1, total - warmup)`,
/// - constant: 1 (transformers' `constant_with_warmup`; with no warmup this is its `constant`).
pub fn lr_factor(kind: SchedulerType, step: usize, total_steps: usize, warmup: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let after = (total_steps as f64 - warmup as f64).max(1.0);
    match kind {
        SchedulerType::Linear => ((total_steps as f64 - step as f64) / after).max(0.0),
        SchedulerType::Cosine => {
            let progress = (step - warmup) as f64 / after;
            (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
        }
        SchedulerType::Constant => 1.0,
    }
}

/// Learning rate for the update of optimizer step `step` (0-based) of a `total_steps` run.
pub fn lr_at(step: usize, total_steps: usize, cfg: &TrainingConfig) -> f64 {
    let warmup = warmup_steps(total_steps, cfg);
    cfg.learning_rate * lr_factor(cfg.lr_scheduler_type, step, total_steps, warmup)
}

#[cfg(test)]
mod tests;
