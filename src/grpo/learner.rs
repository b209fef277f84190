//! The learner stage: one optimizer step per [`ScoredStep`]: teacher-forced log-probs of
//! every completion (prompt once per group, the G completions attending to it), TRL's loss
//! with the step-level normalizer, gradient accumulation over groups, global-norm clipping,
//! AdamW with the schedule's learning rate, then the new weights published to the sampler.
//!
//! Groups whose rewards are all equal have zero advantage: with `beta == 0` their loss and
//! gradient are exactly zero, so their forward/backward is skipped while their tokens still
//! count in the normalizer (the maths is unchanged, see `grpo::loss`). With `beta > 0` the KL
//! term against the reference model (the same weights with the LoRA adapters disabled, computed
//! without autodiff) has a gradient at zero advantage too, so no group is skipped.
//!
//! The loss and gradients of a step come from [`loss_and_grads`], which `medgrpo loss` also
//! calls, so the TRL reference checks of that command check the learner's own code path.
//! Logged like TRL: `loss`, `kl` (beta > 0), `entropy` (mean token entropy of the groups the
//! learner ran: exact when none was skipped), clip ratios, `grad_norm`, `learning_rate`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::loss::{LossInputs, LossMetrics, Normalizer, grpo_loss};
use super::messages::{SampledGroup, ScoredStep, StepLog};
use super::optim::StepOptimizer;
use super::policy::PolicyStore;
use crate::config::TrainingConfig;
use crate::model::gemma3::Gemma3;
use crate::model::generate::Prompt;

/// The LoRA dropout seed of group `group` in the step after `steps_done` optimizer steps, so a
/// resumed run draws the same masks.
pub fn dropout_seed(steps_done: u64, group: usize) -> u64 {
    (steps_done << 20) ^ group as u64 ^ 0xD80_0F00
}

/// Whether the learner skips a group's forward/backward: only when its rewards are all equal
/// (zero advantages) and `beta == 0`; with `beta > 0` the KL term has a gradient even at zero
/// advantage.
pub fn skip_group(rewards_all_equal: bool, cfg: &TrainingConfig) -> bool {
    rewards_all_equal && cfg.beta == 0.0
}

/// One group of an optimizer step as [`loss_and_grads`] takes it.
pub struct GroupInput<'a, B: Backend> {
    /// Names the group in errors (e.g. the question id).
    pub label: String,
    /// Prompt ids and the image features (projector output), on the training backend.
    pub prompt: Prompt<B>,
    /// The G completions (stop token included when one ended them).
    pub completion_ids: &'a [Vec<u32>],
    /// Log-probs of the sampling policy per completion token; `None` when on-policy (TRL then
    /// uses the detached current log-probs: ratio 1).
    pub old_logps: Option<&'a [Vec<f32>]>,
    /// Reference log-probs given by the caller; `None` computes them (adapters disabled) when
    /// `beta != 0`.
    pub ref_logps: Option<&'a [Vec<f32>]>,
    /// One advantage per completion.
    pub advantages: Vec<f32>,
    /// Positions of the completions in the step order of the [`Normalizer`].
    pub rows: Vec<usize>,
    /// Skip forward and backward (zero reward spread with `beta == 0`: zero loss and gradient);
    /// the tokens still count in the clip-ratio denominators.
    pub skip: bool,
    /// LoRA dropout seed of the loss forward (PEFT training mode); `None` = no dropout.
    pub dropout_seed: Option<u64>,
}

/// Per-token values of one group that [`loss_and_grads`] ran, unpadded (`[G][len_i]`).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupValues {
    /// `log_softmax(logits / temperature)` of each completion token, current policy.
    pub logps: Vec<Vec<f32>>,
    /// Entropy of each next-token distribution (of `logits / temperature`).
    pub entropy: Vec<Vec<f32>>,
    /// Reference log-probs used by the KL term (`beta != 0`).
    pub ref_logps: Option<Vec<Vec<f32>>>,
}

/// What [`loss_and_grads`] returns for a step.
pub struct StepGrads {
    /// The step loss's gradients, summed over groups; `None` when every group was skipped.
    pub grads: Option<GradientsParams>,
    /// Loss and metric sums over the step.
    pub metrics: LossMetrics,
    /// Per group: its per-token values when asked for (and not skipped).
    pub values: Vec<Option<GroupValues>>,
}

/// Bound on `rows × tokens × vocab` of one batched forward of the learner: groups are scored
/// together up to this size, so a small model runs a whole step in one forward/backward while
/// MedGemma (262k vocabulary) runs about one group per forward. The logits themselves are never
/// materialized (`model::token_logps`); the bound keeps the activations a batch holds for
/// backward in proportion.
pub const LOGITS_BUDGET: usize = 1 << 28;

/// Right-pads per-completion values into a `[G, len]` tensor (0 at padding).
fn padded<B: Backend>(
    rows: &[Vec<f32>],
    completions: &[Vec<u32>],
    len: usize,
    what: &str,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    ensure!(
        rows.len() == completions.len(),
        "{} {what} rows for {} completions",
        rows.len(),
        completions.len()
    );
    let mut v = Vec::with_capacity(rows.len() * len);
    for (i, (r, c)) in rows.iter().zip(completions).enumerate() {
        ensure!(
            r.len() >= c.len(),
            "completion {i}: {} {what} values for {} tokens",
            r.len(),
            c.len()
        );
        v.extend((0..len).map(|j| if j < c.len() { r[j] } else { 0.0 }));
    }
    Ok(Tensor::from_data(
        TensorData::new(v, [rows.len(), len]),
        device,
    ))
}

/// Host rows of a `[G, len]` tensor, each cut to its completion's length.
fn unpadded<B: Backend>(t: Tensor<B, 2>, completions: &[&Vec<u32>]) -> Result<Vec<Vec<f32>>> {
    let [_, len] = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading per-token values back: {e:?}"))?;
    Ok(completions
        .iter()
        .enumerate()
        .map(|(i, c)| v[i * len..i * len + c.len()].to_vec())
        .collect())
}

/// The loss and LoRA gradients of one optimizer step (each prompt run once, its G completions
/// attending to it), with TRL's step-level normalizer: what the learner runs for each step and
/// what `medgrpo loss` prints, so checking the command checks training.
///
/// The groups that are not skipped run in batches of consecutive groups (as many as fit
/// [`LOGITS_BUDGET`]; a small model scores the whole step in one forward/backward): logits of
/// the completion tokens (`Gemma3::completion_token_stats`) under `with_train_dropout` with the
/// batch's first group's seed (when it has one), log-probs and entropies of
/// `logits / temperature`, reference log-probs when `beta != 0` (given, or computed per group
/// without autodiff on the same weights inside [`crate::model::lora_linear::with_adapters_disabled`] —
/// TRL's reference for a PEFT model), then [`grpo_loss`] over the batch's rows, backward, and the
/// batch's gradients added to the step's. The step loss is a sum over completions with
/// step-level coefficients, so any split into batches gives the same loss and gradients.
/// `keep_values` returns every ran group's per-token values.
pub fn loss_and_grads<AB: AutodiffBackend>(
    model: &Gemma3<AB>,
    groups: &[GroupInput<'_, AB>],
    cfg: &TrainingConfig,
    normalizer: &Normalizer,
    keep_values: bool,
) -> Result<StepGrads> {
    let needs_ref = cfg.beta != 0.0 && groups.iter().any(|g| !g.skip && g.ref_logps.is_none());
    let reference = needs_ref.then(|| model.valid());
    let mut accumulator = GradientsAccumulator::<Gemma3<AB>>::new();
    let mut metrics = LossMetrics::default();
    let mut values: Vec<Option<GroupValues>> = (0..groups.len()).map(|_| None).collect();
    let mut any_grad = false;
    let vocab = model.config.text.vocab_size;
    let mut batch: Vec<usize> = Vec::new();
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let (mut rows, mut longest) = (0usize, 0usize);
    for (i, gr) in groups.iter().enumerate() {
        let ids = gr.completion_ids;
        let n = ids.len();
        ensure!(
            gr.advantages.len() == n && gr.rows.len() == n,
            "{}: {} completions, {} advantages, {} rows",
            gr.label,
            n,
            gr.advantages.len(),
            gr.rows.len()
        );
        if gr.skip {
            let tokens = ids.iter().map(Vec::len).sum();
            metrics.add_skipped(n, tokens, cfg.importance_sampling_level);
            continue;
        }
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        let (r2, l2) = (rows + n, longest.max(len));
        if !batch.is_empty() && r2 * l2 * vocab > LOGITS_BUDGET {
            batches.push(std::mem::take(&mut batch));
            (rows, longest) = (n, len);
        } else {
            (rows, longest) = (r2, l2);
        }
        batch.push(i);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    for batch in batches {
        let members: Vec<&GroupInput<'_, AB>> = batch.iter().map(|&i| &groups[i]).collect();
        let (m, grads, kept) = batch_loss(
            model,
            &members,
            reference.as_ref(),
            cfg,
            normalizer,
            keep_values,
        )
        .with_context(|| {
            let labels: Vec<&str> = members.iter().map(|g| g.label.as_str()).collect();
            format!("loss of {}", labels.join(", "))
        })?;
        metrics.merge(&m);
        accumulator.accumulate(model, grads);
        any_grad = true;
        if keep_values {
            for (&i, v) in batch.iter().zip(kept) {
                values[i] = Some(v);
            }
        }
    }
    Ok(StepGrads {
        grads: any_grad.then(|| accumulator.grads()),
        metrics,
        values,
    })
}

/// Pads a `[rows, width]` tensor with zero columns up to `len`.
fn pad_columns<B: Backend>(t: Tensor<B, 2>, len: usize) -> Tensor<B, 2> {
    let [rows, width] = t.dims();
    if width >= len {
        return t;
    }
    let zeros = Tensor::zeros([rows, len - width], &t.device());
    Tensor::cat(vec![t, zeros], 1)
}

/// The 0/1 mask `[n, len]` of a batch's completion tokens, right-padded to the longest.
struct TokenGrid<B: Backend> {
    mask: Tensor<B, 2>,
    len: usize,
}

impl<B: Backend> TokenGrid<B> {
    fn new(all: &[&Vec<u32>], device: &B::Device) -> Result<Self> {
        let n = all.len();
        let len = all.iter().map(|c| c.len()).max().unwrap_or(0);
        ensure!(len > 0, "no completion tokens to score");
        let mask: Vec<f32> = all
            .iter()
            .flat_map(|c| (0..len).map(|j| if j < c.len() { 1.0 } else { 0.0 }))
            .collect();
        Ok(Self {
            mask: Tensor::from_data(TensorData::new(mask, [n, len]), device),
            len,
        })
    }
}

/// Old log-probs of a batch: those given per group (sampling ran ahead of the learner), the
/// detached current ones where a group gave none (on-policy: ratio 1), `None` when no group
/// gave any.
fn old_logps<AB: AutodiffBackend>(
    members: &[&GroupInput<'_, AB>],
    logps: &Tensor<AB, 2>,
    len: usize,
) -> Result<Option<Tensor<AB, 2>>> {
    if members.iter().all(|g| g.old_logps.is_none()) {
        return Ok(None);
    }
    let device = logps.device();
    let mut parts = Vec::with_capacity(members.len());
    for g in members {
        parts.push(match g.old_logps {
            Some(o) => padded::<AB>(o, g.completion_ids, len, "old log-prob", &device)?,
            None => Tensor::zeros([g.completion_ids.len(), len], &device),
        });
    }
    let given = Tensor::cat(parts, 0);
    if members.iter().all(|g| g.old_logps.is_some()) {
        return Ok(Some(given));
    }
    let from_given: Vec<f32> = members
        .iter()
        .flat_map(|g| {
            let v = if g.old_logps.is_some() { 1.0 } else { 0.0 };
            std::iter::repeat_n(v, g.completion_ids.len() * len)
        })
        .collect();
    let n = logps.dims()[0];
    let w = Tensor::<AB, 2>::from_data(TensorData::new(from_given, [n, len]), &device);
    let current = logps.clone().detach();
    Ok(Some(given * w.clone() + current * w.neg().add_scalar(1.0)))
}

/// Reference log-probs of a batch when `beta != 0`: given per group, or computed on the same
/// weights with the adapters disabled and without autodiff (TRL's reference for a PEFT model).
fn ref_logps<AB: AutodiffBackend>(
    members: &[&GroupInput<'_, AB>],
    reference: Option<&Gemma3<AB::InnerBackend>>,
    cfg: &TrainingConfig,
    len: usize,
    device: &AB::Device,
) -> Result<Option<Tensor<AB, 2>>> {
    if cfg.beta == 0.0 {
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(members.len());
    for g in members {
        let part = match g.ref_logps {
            Some(r) => padded::<AB>(r, g.completion_ids, len, "reference log-prob", device)?,
            None => {
                let reference = reference.expect("reference model built");
                let prompt = Prompt {
                    ids: g.prompt.ids.clone(),
                    image_features: g.prompt.image_features.clone().map(|f| f.inner()),
                    seed: 0,
                };
                let r = crate::model::lora_linear::with_adapters_disabled(|| {
                    reference.completion_logprobs(&prompt, g.completion_ids, cfg.temperature)
                })
                .with_context(|| format!("reference log-probs of {}", g.label))?;
                pad_columns(Tensor::from_inner(r), len)
            }
        };
        parts.push(part);
    }
    Ok(Some(Tensor::cat(parts, 0)))
}

/// Per-group values cut from a batch's `[n, len]` rows (one read-back per tensor).
fn group_values<B: Backend>(
    members: &[&GroupInput<'_, impl AutodiffBackend>],
    all: &[&Vec<u32>],
    (logps, entropy, refs): (Tensor<B, 2>, Tensor<B, 2>, Option<Tensor<B, 2>>),
) -> Result<Vec<GroupValues>> {
    let lp = unpadded(logps, all)?;
    let ent = unpadded(entropy, all)?;
    let rf = refs.map(|r| unpadded(r, all)).transpose()?;
    let mut out = Vec::with_capacity(members.len());
    let mut start = 0;
    for g in members {
        let end = start + g.completion_ids.len();
        out.push(GroupValues {
            logps: lp[start..end].to_vec(),
            entropy: ent[start..end].to_vec(),
            ref_logps: rf.as_ref().map(|r| r[start..end].to_vec()),
        });
        start = end;
    }
    Ok(out)
}

/// Loss, gradients and per-group values of one batch of groups of [`loss_and_grads`].
fn batch_loss<AB: AutodiffBackend>(
    model: &Gemma3<AB>,
    members: &[&GroupInput<'_, AB>],
    reference: Option<&Gemma3<AB::InnerBackend>>,
    cfg: &TrainingConfig,
    normalizer: &Normalizer,
    keep: bool,
) -> Result<(LossMetrics, GradientsParams, Vec<GroupValues>)> {
    let device = model.device();
    let all: Vec<&Vec<u32>> = members
        .iter()
        .flat_map(|g| g.completion_ids.iter())
        .collect();
    let grid = TokenGrid::<AB>::new(&all, &device)?;
    let prompts: Vec<Prompt<AB>> = members.iter().map(|g| g.prompt.clone()).collect();
    let ids: Vec<&[Vec<u32>]> = members.iter().map(|g| g.completion_ids).collect();
    let stats = || model.completion_token_stats(&prompts, &ids, cfg.temperature);
    let (logps, entropy) = match members[0].dropout_seed {
        Some(seed) => crate::model::lora_linear::with_train_dropout(seed, stats),
        None => stats(),
    }?;
    // The entropy only feeds metrics (TRL computes it without gradient).
    let logps = logps * grid.mask.clone();
    let entropy = entropy.detach() * grid.mask.clone();
    let old_logps = old_logps(members, &logps, grid.len)?;
    let ref_logps = ref_logps(members, reference, cfg, grid.len, &device)?;
    let kept = keep.then(|| (logps.clone().detach(), entropy.clone(), ref_logps.clone()));
    let advantages: Vec<f32> = members
        .iter()
        .flat_map(|g| g.advantages.iter().copied())
        .collect();
    let rows: Vec<usize> = members
        .iter()
        .flat_map(|g| g.rows.iter().copied())
        .collect();
    let inputs = LossInputs {
        logps,
        old_logps,
        ref_logps,
        entropy: Some(entropy),
        advantages: Tensor::from_data(TensorData::new(advantages, [all.len()]), &device),
        mask: grid.mask,
        rows,
    };
    let (loss, m) = grpo_loss(inputs, cfg, normalizer)?;
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let values = match kept {
        Some(kept) => group_values(members, &all, kept)?,
        None => Vec::new(),
    };
    Ok((m, grads, values))
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

    /// The learner's view of a step's groups: prompt, completions, advantages, whether sampling
    /// ran ahead (then the sampled log-probs are the old ones), whether to skip, the dropout
    /// seed.
    fn group_inputs<'a>(
        &self,
        scored: &'a ScoredStep<SampledGroup>,
        device: &AB::Device,
    ) -> Vec<GroupInput<'a, AB>> {
        let g = scored.advantages.num_generations;
        let mut inputs = Vec::with_capacity(scored.groups.len());
        for (gi, sg) in scored.groups.iter().enumerate() {
            let p = &sg.group.payload;
            let rows: Vec<usize> = (gi * g..(gi + 1) * g).collect();
            let image_features = p.image_features.as_ref().map(|(v, shape)| {
                Tensor::<AB, 2>::from_data(TensorData::new(v.clone(), *shape), device)
            });
            let behind = self.steps_done > p.policy_version;
            inputs.push(GroupInput {
                label: format!("question {}", sg.group.question_id),
                prompt: Prompt {
                    ids: p.prompt_ids.clone(),
                    image_features,
                    seed: 0,
                },
                completion_ids: &p.completion_ids,
                old_logps: behind.then_some(p.sampled_logprobs.as_slice()),
                ref_logps: None,
                advantages: rows
                    .iter()
                    .map(|&r| scored.advantages.values[r] as f32)
                    .collect(),
                rows,
                skip: skip_group(scored.advantages.group_all_equal[gi], &self.cfg),
                dropout_seed: Some(dropout_seed(self.steps_done, gi)),
            });
        }
        inputs
    }

    /// Applies a step's gradients with learning rate `lr`, unless the loss or the gradient is
    /// not finite. Returns the model, the gradient norm and whether the update was applied.
    fn update(
        &mut self,
        model: Gemma3<AB>,
        grads: Option<GradientsParams>,
        loss: f64,
        lr: f64,
    ) -> Result<(Gemma3<AB>, f64, bool)> {
        let Some(grads) = grads else {
            return Ok((model, 0.0, true));
        };
        let (new_model, norm) = if loss.is_finite() {
            self.optimizer.apply(model.clone(), grads, lr)?
        } else {
            (model.clone(), f64::NAN)
        };
        if norm.is_finite() && loss.is_finite() {
            return Ok((new_model, norm, true));
        }
        eprintln!(
            "warning: step {}: non-finite loss or gradient (loss {loss}, grad_norm {norm}); update skipped",
            self.steps_done + 1
        );
        Ok((model, norm, false))
    }

    /// Runs one optimizer step on a scored step.
    pub fn step(&mut self, scored: &ScoredStep<SampledGroup>) -> Result<StepLog> {
        let started = Instant::now();
        ensure!(
            scored.advantages.num_generations > 0,
            "a step without generations"
        );
        let tokens: Vec<usize> = scored
            .groups
            .iter()
            .flat_map(|sg| sg.group.payload.completion_ids.iter().map(Vec::len))
            .collect();
        let normalizer = Normalizer::for_step(&self.cfg, &tokens)?;
        let model = self.model.take().expect("model present between steps");
        let inputs = self.group_inputs(scored, &model.device());
        let out = loss_and_grads(&model, &inputs, &self.cfg, &normalizer, false);
        drop(inputs);
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        let lr = super::lr_schedule::lr_at(
            self.steps_done as usize,
            self.total_steps as usize,
            &self.cfg,
        );
        let (model, grad_norm, applied) = self.update(model, out.grads, out.metrics.loss, lr)?;
        self.steps_done += 1;
        self.policy.publish(self.steps_done, model.valid());
        self.model = Some(model);
        let mut metrics = scored.metrics.clone();
        metrics.extend(loss_metrics(&out.metrics, grad_norm, lr));
        metrics.extend(completion_metrics(scored));
        metrics.insert("step_time".into(), started.elapsed().as_secs_f64());
        let cursor = scored
            .groups
            .last()
            .map(|sg| sg.group.payload.cursor)
            .unwrap_or_default();
        Ok(StepLog {
            step: self.steps_done,
            cursor,
            metrics,
            applied,
        })
    }
}

/// TRL's loss-side metrics of a step: loss, gradient norm, learning rate, clip ratios, and KL
/// and entropy when they were computed.
fn loss_metrics(m: &LossMetrics, grad_norm: f64, lr: f64) -> Vec<(String, f64)> {
    let mut out = vec![
        ("loss".to_string(), m.loss),
        ("grad_norm".to_string(), grad_norm),
        ("learning_rate".to_string(), lr),
        ("clip_ratio/low_mean".to_string(), m.clip_low_mean()),
        ("clip_ratio/high_mean".to_string(), m.clip_high_mean()),
        ("clip_ratio/region_mean".to_string(), m.clip_region_mean()),
    ];
    if let Some(kl) = m.kl_mean() {
        out.push(("kl".into(), kl));
    }
    if let Some(entropy) = m.entropy_mean() {
        out.push(("entropy".into(), entropy));
    }
    out
}

/// TRL's completion metrics of a step: mean length, the share cut at the length limit, and
/// the mean length of those that ended on an eos id.
fn completion_metrics(scored: &ScoredStep<SampledGroup>) -> Vec<(String, f64)> {
    let (mut lens, mut stopped) = (Vec::new(), Vec::new());
    for sg in &scored.groups {
        let p = &sg.group.payload;
        lens.extend(p.completion_ids.iter().map(|c| c.len() as f64));
        stopped.extend(p.stopped.iter().copied());
    }
    let n = lens.len().max(1) as f64;
    let terminated: Vec<f64> = lens
        .iter()
        .zip(&stopped)
        .filter(|(_, s)| **s)
        .map(|(l, _)| *l)
        .collect();
    let mean_terminated = if terminated.is_empty() {
        0.0
    } else {
        terminated.iter().sum::<f64>() / terminated.len() as f64
    };
    vec![
        (
            "completions/mean_length".into(),
            lens.iter().sum::<f64>() / n,
        ),
        (
            "completions/clipped_ratio".into(),
            stopped.iter().filter(|s| !**s).count() as f64 / n,
        ),
        ("completions/mean_terminated_length".into(), mean_terminated),
    ]
}

impl<AB: AutodiffBackend> Drop for Learner<AB> {
    /// A learner that ends (normally or on abort) releases a sampler waiting for weights.
    fn drop(&mut self) {
        self.policy.close();
    }
}

pub mod stage;

#[cfg(test)]
mod tests;
