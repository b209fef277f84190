//! The learner stage: one optimizer step per [`ScoredStep`]: teacher-forced log-probs of
//! every completion (prompt once per group, the G completions attending to it), TRL's loss
//! with the step-level normalizer, gradient accumulation over groups, global-norm clipping,
//! AdamW with the schedule's learning rate, then the new weights published to the sampler.
//!
//! Groups whose rewards are all equal have zero advantage: with `beta == 0` their loss and
//! gradient are exactly zero, so their forward/backward is skipped while their tokens still
//! count in the normalizer (the maths is unchanged, see `grpo::loss`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::advantage::stage::ScoredStep;
use super::loss::{LossInputs, LossMetrics, Normalizer, grpo_loss};
use super::policy::PolicyStore;
use crate::config::TrainingConfig;
use crate::model::gemma3::Gemma3;
use crate::model::generate::Prompt;

/// What the sampler hands to the learner for one group, carried through scoring untouched.
#[derive(Debug, Clone)]
pub struct SampledGroup {
    /// Prompt ids exactly as the processor expanded them.
    pub prompt_ids: Vec<u32>,
    /// Projector output `[n_image_tokens, hidden]` as host data, computed once by the sampler
    /// (the vision tower is frozen), so the learner never runs the tower.
    pub image_features: Option<(Vec<f32>, [usize; 2])>,
    /// The G completions' ids (stop token included when one ended them).
    pub completion_ids: Vec<Vec<u32>>,
    /// Per-token log-probs the sampler saw, used as old log-probs when sampling ran ahead.
    pub sampled_logprobs: Vec<Vec<f32>>,
    /// Whether each completion ended on an eos id (false = truncated).
    pub stopped: Vec<bool>,
    /// Policy version the completions were sampled with.
    pub policy_version: u64,
    /// Data position just after this group's record: a checkpoint taken after the step
    /// resumes from the last group's cursor.
    pub cursor: super::epochs::Cursor,
}

/// What one optimizer step produced: TRL's metric names and values.
#[derive(Debug, Clone)]
pub struct StepLog {
    /// Optimizer steps done, counting this one (TRL's `global_step`).
    pub step: u64,
    /// Data position after the step's last group.
    pub cursor: super::epochs::Cursor,
    /// Metric name → value (`loss`, `reward`, `grad_norm`, `learning_rate`, …).
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// Whether the step's update was applied (false: NaN/inf loss or gradient, skipped).
    pub applied: bool,
}

/// The optimizer seam: applies one step's accumulated gradients and returns the new module
/// and the gradient norm before clipping.
pub trait StepOptimizer<AB: AutodiffBackend>: Send {
    /// Clip (global norm) and update with learning rate `lr`.
    fn apply(
        &mut self,
        model: Gemma3<AB>,
        grads: GradientsParams,
        lr: f64,
    ) -> Result<(Gemma3<AB>, f64)>;
    /// Writes the optimizer state into a checkpoint directory.
    fn save_state(&self, dir: &std::path::Path) -> Result<()>;
    /// Restores the state written by [`StepOptimizer::save_state`].
    fn load_state(&mut self, dir: &std::path::Path, device: &AB::Device) -> Result<()>;
}

/// Collects the gradients of every trainable float parameter of a module.
struct GradNorm<'a, B: Backend> {
    grads: &'a GradientsParams,
    sum_sq: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s: f64 = g.square().sum().into_scalar().elem::<f64>();
            self.sum_sq += s;
        }
    }
}

/// Multiplies the gradients of a module's float parameters by `coef`.
struct ScaleGrads<'a, B: Backend> {
    grads: &'a mut GradientsParams,
    coef: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScaleGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.coef));
        }
    }
}

/// torch's `clip_grad_norm_`: the total norm over all gradients, and the gradients scaled by
/// `min(1, max_norm / (norm + 1e-6))`. Returns the norm before clipping.
pub fn clip_global_norm<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut v = GradNorm::<AB> {
        grads,
        sum_sq: 0.0,
        _b: std::marker::PhantomData,
    };
    model.visit(&mut v);
    let norm = v.sum_sq.sqrt();
    if let Some(coef) = super::optim::clip_coefficient(norm, max_norm)
        && coef < 1.0
    {
        model.visit(&mut ScaleGrads::<AB> {
            grads,
            coef,
            _b: std::marker::PhantomData,
        });
    }
    norm
}

/// The learner: owns the trainable model and the optimizer.
pub struct Learner<AB: AutodiffBackend> {
    model: Option<Gemma3<AB>>,
    optimizer: Box<dyn StepOptimizer<AB>>,
    cfg: TrainingConfig,
    policy: Arc<PolicyStore<Gemma3<AB::InnerBackend>>>,
    total_steps: u64,
    steps_done: u64,
}

impl<AB: AutodiffBackend> Learner<AB> {
    /// A learner starting at `steps_done` (non-zero when resuming) of `total_steps`.
    pub fn new(
        model: Gemma3<AB>,
        optimizer: Box<dyn StepOptimizer<AB>>,
        cfg: TrainingConfig,
        policy: Arc<PolicyStore<Gemma3<AB::InnerBackend>>>,
        total_steps: u64,
        steps_done: u64,
    ) -> Self {
        Self {
            model: Some(model),
            optimizer,
            cfg,
            policy,
            total_steps,
            steps_done,
        }
    }

    /// The optimizer (its state goes into checkpoints).
    pub fn optimizer(&self) -> &dyn StepOptimizer<AB> {
        self.optimizer.as_ref()
    }

    /// The current model (for checkpoints and evaluation).
    pub fn model(&self) -> &Gemma3<AB> {
        self.model
            .as_ref()
            .expect("the model is only taken during a step")
    }

    /// Runs one optimizer step on a scored step.
    pub fn step(&mut self, scored: &ScoredStep<SampledGroup>) -> Result<StepLog> {
        let started = Instant::now();
        let cfg = &self.cfg;
        let g = scored.advantages.num_generations;
        ensure!(g > 0, "a step without generations");
        if cfg.beta != 0.0 {
            bail!(
                "training.beta > 0 needs the reference model (adapters disabled), which this build does not run yet; use beta: 0 (the original's setting)"
            );
        }
        let tokens: Vec<usize> = scored
            .groups
            .iter()
            .flat_map(|sg| sg.group.payload.completion_ids.iter().map(Vec::len))
            .collect();
        let normalizer = Normalizer::for_step(cfg, &tokens)?;
        let model = self.model.take().expect("model present between steps");
        let device = model.device();
        let mut accumulator = GradientsAccumulator::<Gemma3<AB>>::new();
        let mut metrics = LossMetrics::default();
        let mut any_grad = false;
        for (gi, sg) in scored.groups.iter().enumerate() {
            let p = &sg.group.payload;
            let rows: Vec<usize> = (gi * g..(gi + 1) * g).collect();
            let group_tokens: usize = rows.iter().map(|&r| tokens[r]).sum();
            if scored.advantages.group_all_equal[gi] {
                metrics.add_skipped(g, group_tokens, cfg.importance_sampling_level);
                continue;
            }
            let image_features = p.image_features.as_ref().map(|(v, shape)| {
                Tensor::<AB, 2>::from_data(TensorData::new(v.clone(), *shape), &device)
            });
            let prompt = Prompt {
                ids: p.prompt_ids.clone(),
                image_features,
                seed: 0,
            };
            // LoRA dropout on, as in PEFT training mode; masks seeded by (step, group) so a
            // resumed run draws the same ones.
            let dropout_seed = (self.steps_done << 20) ^ gi as u64 ^ 0xD80_0F00;
            let logps = crate::lora::layer::with_train_dropout(dropout_seed, || {
                model.completion_logprobs(&prompt, &p.completion_ids, cfg.temperature)
            })
            .with_context(|| format!("log-probs of question {}", sg.group.question_id))?;
            let [_, len] = logps.dims();
            let mut mask = Vec::with_capacity(g * len);
            let mut old = Vec::with_capacity(g * len);
            for (c, lp) in p.completion_ids.iter().zip(&p.sampled_logprobs) {
                for j in 0..len {
                    mask.push(if j < c.len() { 1.0f32 } else { 0.0 });
                    old.push(lp.get(j).copied().unwrap_or(0.0));
                }
            }
            let behind = self.steps_done > p.policy_version;
            let old_logps =
                behind.then(|| Tensor::<AB, 2>::from_data(TensorData::new(old, [g, len]), &device));
            let adv: Vec<f32> = rows
                .iter()
                .map(|&r| scored.advantages.values[r] as f32)
                .collect();
            let inputs = LossInputs {
                logps,
                old_logps,
                ref_logps: None,
                entropy: None,
                advantages: Tensor::from_data(TensorData::new(adv, [g]), &device),
                mask: Tensor::from_data(TensorData::new(mask, [g, len]), &device),
                rows,
            };
            let (loss, m) = grpo_loss(inputs, cfg, &normalizer)?;
            metrics.merge(&m);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            accumulator.accumulate(&model, grads);
            any_grad = true;
        }
        let lr = super::schedule::lr_at(self.steps_done as usize, self.total_steps as usize, cfg);
        let mut applied = true;
        let (model, grad_norm) = if any_grad {
            let grads = accumulator.grads();
            let (new_model, norm) = if metrics.loss.is_finite() {
                self.optimizer.apply(model.clone(), grads, lr)?
            } else {
                (model.clone(), f64::NAN)
            };
            if norm.is_finite() && metrics.loss.is_finite() {
                (new_model, norm)
            } else {
                eprintln!(
                    "warning: step {}: non-finite loss or gradient (loss {}, grad_norm {norm}); update skipped",
                    self.steps_done + 1,
                    metrics.loss
                );
                applied = false;
                (model, norm)
            }
        } else {
            (model, 0.0)
        };
        self.steps_done += 1;
        self.policy.publish(self.steps_done, model.valid());
        self.model = Some(model);

        let mut out = scored.metrics.clone();
        out.insert("loss".into(), metrics.loss);
        out.insert("grad_norm".into(), grad_norm);
        out.insert("learning_rate".into(), lr);
        out.insert("clip_ratio/low_mean".into(), metrics.clip_low_mean());
        out.insert("clip_ratio/high_mean".into(), metrics.clip_high_mean());
        out.insert("clip_ratio/region_mean".into(), metrics.clip_region_mean());
        if let Some(kl) = metrics.kl_mean() {
            out.insert("kl".into(), kl);
        }
        let lens: Vec<f64> = tokens.iter().map(|&t| t as f64).collect();
        let stopped: Vec<bool> = scored
            .groups
            .iter()
            .flat_map(|sg| sg.group.payload.stopped.iter().copied())
            .collect();
        let n = lens.len().max(1) as f64;
        out.insert(
            "completions/mean_length".into(),
            lens.iter().sum::<f64>() / n,
        );
        out.insert(
            "completions/clipped_ratio".into(),
            stopped.iter().filter(|s| !**s).count() as f64 / n,
        );
        let terminated: Vec<f64> = lens
            .iter()
            .zip(&stopped)
            .filter(|(_, s)| **s)
            .map(|(l, _)| *l)
            .collect();
        out.insert(
            "completions/mean_terminated_length".into(),
            if terminated.is_empty() {
                0.0
            } else {
                terminated.iter().sum::<f64>() / terminated.len() as f64
            },
        );
        out.insert("step_time".into(), started.elapsed().as_secs_f64());
        let cursor = scored
            .groups
            .last()
            .map(|sg| sg.group.payload.cursor)
            .unwrap_or_default();
        Ok(StepLog {
            step: self.steps_done,
            cursor,
            metrics: out,
            applied,
        })
    }
}

impl<AB: AutodiffBackend> Drop for Learner<AB> {
    /// A learner that ends (normally or on abort) releases a sampler waiting for weights.
    fn drop(&mut self) {
        self.policy.close();
    }
}
