//! The reward scorer as a pipeline stage: groups of G completions in, the same groups with
//! their reward breakdowns out. Stateless, so it can run on any number of workers.

use anyhow::{Result, bail};

use super::score;
use crate::config::RewardsConfig;
use crate::grpo::messages::{CompletionGroup, ScoredGroup};
use crate::stages::Stage;

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
