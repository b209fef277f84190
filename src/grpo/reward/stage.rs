//! The reward scorer as a pipeline stage: groups of G completions in, the same groups with
//! their reward breakdowns out. Stateless, so it can run on any number of workers.

use std::sync::Arc;

use anyhow::{Result, bail};

use super::{Reference, RewardBreakdown, score};
use crate::config::RewardsConfig;
use crate::stages::Stage;

/// What the sampler hands on: the G completions of one prompt, with the question's answer
/// key and whatever the learner will need later (`payload`: token ids, log-probs, the
/// prompt…), which this stage and the advantage stage carry through untouched.
#[derive(Debug, Clone)]
pub struct CompletionGroup<T> {
    /// Question id, for error messages and logs.
    pub question_id: String,
    /// The question's answer key, prepared once (shared with the prompt's other uses).
    pub reference: Arc<Reference>,
    /// The completions, decoded with special tokens skipped.
    pub completions: Vec<String>,
    /// The sampler's data for the learner.
    pub payload: T,
}

/// A group after scoring: `rewards[i]` belongs to `group.completions[i]`.
#[derive(Debug, Clone)]
pub struct ScoredGroup<T> {
    /// The group as it arrived.
    pub group: CompletionGroup<T>,
    /// One breakdown per completion; `total` is what the advantage uses.
    pub rewards: Vec<RewardBreakdown>,
}

/// Scores every completion of a group with [`score`].
#[derive(Debug, Clone)]
pub struct RewardStage<T> {
    cfg: RewardsConfig,
    num_generations: usize,
    _payload: std::marker::PhantomData<fn(T)>,
}

impl<T> RewardStage<T> {
    /// A scorer with the run's reward settings, expecting groups of `num_generations`.
    pub fn new(cfg: RewardsConfig, num_generations: usize) -> Self {
        Self {
            cfg,
            num_generations,
            _payload: std::marker::PhantomData,
        }
    }
}

impl<T: Send + 'static> Stage for RewardStage<T> {
    type In = CompletionGroup<T>;
    type Out = ScoredGroup<T>;

    fn process(&mut self, _seq: u64, group: CompletionGroup<T>) -> Result<Option<ScoredGroup<T>>> {
        if group.completions.len() != self.num_generations {
            bail!(
                "question {}: {} completions, expected num_generations = {}",
                group.question_id,
                group.completions.len(),
                self.num_generations
            );
        }
        let rewards = group
            .completions
            .iter()
            .map(|c| score(c, &group.reference, &self.cfg))
            .collect();
        Ok(Some(ScoredGroup { group, rewards }))
    }
}
