//! The learner as the chain's last stage: one optimizer step per scored step, a checkpoint every
//! `save_steps` and at the end (the flush hook, which also runs after Ctrl-C), so the last
//! completed step is never lost.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;

use super::Learner;
use crate::config::Config;
use crate::grpo::checkpoint::{self, TrainerState};
use crate::grpo::epochs::Cursor;
use crate::grpo::messages::{SampledGroup, ScoredStep, StepLog};
use crate::lora::adapter::AdapterConfig;
use crate::lora::extract::adapter_of;
use crate::stages::Stage;

/// The learner stage of a training run.
pub struct LearnerStage<AB: AutodiffBackend> {
    learner: Learner<AB>,
    run_dir: PathBuf,
    config: Config,
    adapter_config: AdapterConfig,
    total_steps: u64,
    /// The last step done and the data position after it.
    last: Option<(u64, Cursor)>,
    /// The step of the newest checkpoint.
    saved: u64,
}

impl<AB: AutodiffBackend> LearnerStage<AB> {
    /// A stage writing checkpoints of `learner` (which starts at `start_step` of
    /// `total_steps`) into `run_dir`, with PEFT's `adapter_config`.
    pub fn new(
        learner: Learner<AB>,
        config: &Config,
        adapter_config: AdapterConfig,
        total_steps: u64,
        start_step: u64,
    ) -> Self {
        Self {
            learner,
            run_dir: PathBuf::from(&config.output_dir),
            config: config.clone(),
            adapter_config,
            total_steps,
            last: None,
            saved: start_step,
        }
    }

    /// Writes the checkpoint of the last step, unless it is already saved: the adapter (PEFT
    /// files), the optimizer state, the trainer state and the resolved config.
    fn save(&mut self) -> Result<()> {
        let Some((step, cursor)) = self.last else {
            return Ok(());
        };
        if step == self.saved {
            return Ok(());
        }
        let state = TrainerState {
            global_step: step,
            cursor,
            seed: self.config.seed,
            total_steps: self.total_steps,
        };
        let config = &self.config;
        let adapter = adapter_of(self.learner.model(), self.adapter_config.clone());
        let optimizer = self.learner.optimizer();
        checkpoint::save(
            &self.run_dir,
            step,
            config.training.save_total_limit,
            |dir| {
                adapter.save(dir)?;
                optimizer.save_state(dir)?;
                state.write(dir)?;
                config.write_resolved(dir)?;
                Ok(())
            },
        )?;
        self.saved = step;
        Ok(())
    }
}

impl<AB: AutodiffBackend> Stage for LearnerStage<AB> {
    type In = ScoredStep<SampledGroup>;
    type Out = StepLog;

    fn process(&mut self, _seq: u64, step: ScoredStep<SampledGroup>) -> Result<Option<StepLog>> {
        let log = self.learner.step(&step)?;
        self.last = Some((log.step, log.cursor));
        if log
            .step
            .is_multiple_of(self.config.training.save_steps as u64)
        {
            self.save()?;
        }
        Ok(Some(log))
    }

    fn finish(&mut self) -> Result<()> {
        self.save()
    }
}
