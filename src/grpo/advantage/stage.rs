//! The advantage computation as a pipeline stage: scored groups in, whole optimizer steps
//! out (advantages + TRL metrics). It gathers `groups_per_step` groups because `batch`
//! scaling and the step metrics need the whole step; run it with one worker, ordered, so
//! steps are made of the same groups whatever the upstream parallelism.

use anyhow::Result;

use super::advantages;
use crate::config::ScaleRewards;
use crate::grpo::messages::{ScoredGroup, ScoredStep};
use crate::grpo::metrics::reward_metrics;
use crate::grpo::reward::RewardBreakdown;
use crate::stages::Stage;

/// Gathers groups into steps of `groups_per_step` and computes their advantages.
///
/// Steps are always full: a group skipped upstream shifts the boundary instead of making a
/// short step (TRL's batches are full too). Groups left over at the end of the stream, too
/// few for a step, are dropped with a warning on stderr, as TRL's `RepeatSampler` drops an
/// incomplete last batch.
#[derive(Debug)]
pub struct AdvantageStage<T> {
    groups_per_step: usize,
    num_generations: usize,
    scale: ScaleRewards,
    pending: Vec<ScoredGroup<T>>,
    next_step: u64,
}

impl<T> AdvantageStage<T> {
    /// `groups_per_step` = completions per optimizer step / num_generations
    /// ([`crate::config::TrainingConfig::prompts_per_step`]).
    pub fn new(groups_per_step: usize, num_generations: usize, scale: ScaleRewards) -> Self {
        Self {
            groups_per_step: groups_per_step.max(1),
            num_generations,
            scale,
            pending: Vec::new(),
            next_step: 0,
        }
    }
}

impl<T: Send + 'static> Stage for AdvantageStage<T> {
    type In = ScoredGroup<T>;
    type Out = ScoredStep<T>;

    fn process(&mut self, _seq: u64, group: ScoredGroup<T>) -> Result<Option<ScoredStep<T>>> {
        anyhow::ensure!(
            group.rewards.len() == self.num_generations,
            "question {}: {} rewards, expected num_generations = {}",
            group.group.question_id,
            group.rewards.len(),
            self.num_generations
        );
        self.pending.push(group);
        if self.pending.len() < self.groups_per_step {
            return Ok(None);
        }
        let groups = std::mem::take(&mut self.pending);
        let breakdowns: Vec<RewardBreakdown> = groups
            .iter()
            .flat_map(|g| g.rewards.iter().copied())
            .collect();
        let totals: Vec<f64> = breakdowns.iter().map(|b| b.total).collect();
        let advantages = advantages(&totals, self.num_generations, self.scale)?;
        let metrics = reward_metrics(&breakdowns, &advantages);
        let step = self.next_step;
        self.next_step += 1;
        Ok(Some(ScoredStep {
            step,
            groups,
            advantages,
            metrics,
        }))
    }

    fn finish(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            eprintln!(
                "warning: advantage: {} group(s) left at the end of the stream do not fill a step of {}; dropped",
                self.pending.len(),
                self.groups_per_step
            );
            self.pending.clear();
        }
        Ok(())
    }
}
