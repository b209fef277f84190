//! Group-relative advantages with TRL's rule (`GRPOTrainer._generate_and_score_completions`,
//! `multi_objective_aggregation="sum_then_normalize"`, TRL 1.16):
//!
//! - mean per group of G consecutive rewards;
//! - `scale_rewards: group`: A = (r − group mean) / (group std + 1e-4), std Bessel-corrected
//!   (TRL's `nanstd`: n/(n−1) on the mean squared deviation);
//! - `batch`: the same numerator divided by (std of ALL the step's rewards + 1e-4);
//! - `none` (Dr. GRPO): A = r − group mean;
//! - `frac_reward_zero_std`: the fraction of completions whose divisor std is close to 0
//!   (`torch.isclose(std, 0)`: |std| ≤ 1e-8). In `group`/`none` mode that is the group std, so
//!   it is the fraction of flat groups; in `batch` mode it is the batch std, so it is 0 or 1.
//!
//! Differences from TRL, on purpose: everything is f64 (TRL runs in float32), and a group
//! whose rewards are all exactly equal gets advantages of exactly 0 and is flagged in
//! [`Advantages::group_all_equal`] so the learner can skip its forward/backward without
//! changing the maths. TRL's float32 mean of eight rewards of 0.2 is not exactly 0.2, which
//! gives those completions advantages of −1.5e-4 and leaves the group unflagged
//! (see `tests/fixtures/advantage`, case "g8 two groups"); we give 0.
//! Checked against TRL's own expressions by `scripts/trl_advantage_fixtures.py`.

use anyhow::{Result, bail};

use crate::config::ScaleRewards;

pub mod stage;

/// TRL's constant added to the std before dividing.
pub const STD_EPSILON: f64 = 1e-4;

/// `torch.isclose(std, 0)` with its default tolerances: |std| ≤ atol = 1e-8.
pub const ZERO_STD_ATOL: f64 = 1e-8;

/// One optimizer step's advantages, with what the learner and the metrics need.
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    /// One advantage per completion, in the order of the rewards.
    pub values: Vec<f64>,
    /// Completions per group (G).
    pub num_generations: usize,
    /// Mean reward of each group.
    pub group_mean: Vec<f64>,
    /// Bessel-corrected std of each group (0 when G = 1, as TRL).
    pub group_std: Vec<f64>,
    /// The std each group's advantages were (or, for `none`, would have been) divided by:
    /// the group std, or the batch std in `batch` mode. TRL's `std_rewards`.
    pub divisor_std: Vec<f64>,
    /// Groups whose rewards are all exactly equal: their advantages are exactly 0, so the
    /// learner may skip their work (their tokens still count in the loss normalizer).
    pub group_all_equal: Vec<bool>,
    /// TRL's `frac_reward_zero_std` (see the module doc for what it measures per mode).
    pub frac_reward_zero_std: f64,
}

/// Mean and Bessel-corrected std, as TRL's `torch.nanmean` and `nanstd` compute them
/// (std is NaN for one value; callers follow TRL in not asking for it then).
///
/// TRL's `nanstd` forms the correction n/(n−1) by dividing two int64 counts, which torch does
/// in float32 whatever the rewards' dtype; the factor is rounded to f32 here too, so that
/// the std matches TRL's to f64 precision rather than to 3e-8.
pub(crate) fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    let bessel = f64::from((n / (n - 1.0)) as f32);
    (mean, (var * bessel).sqrt())
}

/// The advantages of one optimizer step's rewards, laid out as consecutive groups of
/// `num_generations` completions of the same prompt (TRL's layout). `batch` scaling needs
/// the whole step, which is why this takes every group at once.
pub fn advantages(
    rewards: &[f64],
    num_generations: usize,
    scale: ScaleRewards,
) -> Result<Advantages> {
    let g = num_generations;
    if g == 0 || rewards.is_empty() || !rewards.len().is_multiple_of(g) {
        bail!(
            "advantages need whole groups: {} rewards are not a positive multiple of num_generations = {g}",
            rewards.len()
        );
    }
    if let Some(i) = rewards.iter().position(|r| !r.is_finite()) {
        bail!("reward {i} is {} (rewards must be finite)", rewards[i]);
    }
    let groups = rewards.len() / g;
    let mut group_mean = Vec::with_capacity(groups);
    let mut group_std = Vec::with_capacity(groups);
    let mut group_all_equal = Vec::with_capacity(groups);
    for chunk in rewards.chunks(g) {
        let (mean, std) = mean_std(chunk);
        group_mean.push(mean);
        group_std.push(if g > 1 { std } else { 0.0 });
        group_all_equal.push(chunk.iter().all(|&r| r == chunk[0]));
    }
    let divisor_std: Vec<f64> = match scale {
        ScaleRewards::Group | ScaleRewards::None => group_std.clone(),
        ScaleRewards::Batch => {
            let s = if rewards.len() > 1 {
                mean_std(rewards).1
            } else {
                0.0
            };
            vec![s; groups]
        }
    };
    let mut values = Vec::with_capacity(rewards.len());
    for (k, chunk) in rewards.chunks(g).enumerate() {
        for &r in chunk {
            let a = if group_all_equal[k] {
                0.0
            } else if scale == ScaleRewards::None {
                r - group_mean[k]
            } else {
                (r - group_mean[k]) / (divisor_std[k] + STD_EPSILON)
            };
            values.push(a);
        }
    }
    let zero = divisor_std
        .iter()
        .filter(|s| s.abs() <= ZERO_STD_ATOL)
        .count();
    Ok(Advantages {
        values,
        num_generations: g,
        group_mean,
        group_std,
        divisor_std,
        group_all_equal,
        frac_reward_zero_std: zero as f64 / groups as f64,
    })
}

#[cfg(test)]
mod tests;
