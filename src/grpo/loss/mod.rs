//! The GRPO loss, exactly as TRL 1.16 `GRPOTrainer._compute_loss` computes it, defined over one
//! optimizer step that the learner may split into any micro-batches (or single groups).
//!
//! Maths (TRL names; `M` = completion mask, `A_i` = advantage of completion `i`):
//! - `logp_t = log_softmax(logits / temperature)[token_t]` ([`token_logps_and_entropy`]).
//! - `log_ratio = logp - old_logp`, `old_logp = logp.detach()` when on-policy (`old_logps: None`).
//!   Token level: `w_t = exp(log_ratio_t)`; sequence level (GSPO):
//!   `w_i = exp(sum_t(log_ratio M) / max(1, sum_t M))` shared by every token of the sequence.
//! - `l = -min(w A, clamp(w, 1 - epsilon, 1 + epsilon_high) A)`.
//! - `beta != 0`: `kl_t = exp(ref - logp) - (ref - logp) - 1`, times `w` when
//!   `use_bias_correction_kl` (TRL 1.16's default: `True`); `l += beta * kl`.
//! - step loss `= sum_i c_i sum_t l_it M_it`, with the per-completion coefficients `c_i` of
//!   [`Normalizer`] (the loss type's normalizer, computed over the whole step).
//!
//! Because the step loss is a plain sum over completions with step-level coefficients, the loss
//! and gradient of a step are the sums of the losses and gradients of any partition of its
//! completions into calls of [`grpo_loss`]; with `beta == 0` a completion with `A_i = 0` has zero
//! loss and zero gradient (both arms of the `min` are `0 * w`), so groups with equal rewards can
//! be skipped without changing anything. With `beta != 0` they still carry the KL gradient and
//! must not be skipped. Checked against TRL on fixtures from `scripts/trl_loss_fixtures.py`.
//!
//! TRL 1.16 options that are off by default and not implemented here: `delta` (upper clamp of
//! the ratio, `None`), `top_entropy_quantile` (1.0: no entropy mask), `entropy_coef` (0: no
//! entropy bonus), `off_policy_mask_threshold` (`None`), vLLM importance-sampling correction (only
//! with `use_vllm`), and the `cispo`, `sapo`, `vespo`, `luspo` loss types. `mask_truncated_completions`
//! (default `False`) would act on the mask and the token counts given to [`Normalizer::for_step`].
//! With `W` data-parallel learners that average gradients, TRL's `dapo` denominator is the token
//! count of all ranks: pass every rank's counts, or scale the coefficients by `W`.

use anyhow::{Result, bail, ensure};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::config::{ImportanceSamplingLevel, LossType, TrainingConfig};

#[cfg(test)]
mod tests;

/// Per-token log-probabilities of the chosen tokens and the entropies of the next-token
/// distributions, both of `logits / temperature` (TRL's `selective_log_softmax` and
/// `entropy_from_logits`; TRL 1.16's fused LM head computes the same quantities).
///
/// `logits`: `[N, T, V]`, the logits that predict completion token `t` (position `prompt + t - 1`);
/// `completion_ids`: `[N, T]`. Returns `(logps [N, T], entropy [N, T])`. The entropy is detached:
/// it only feeds metrics (TRL's entropy bonus, `entropy_coef`, is 0 by default and not
/// implemented). Values at padded positions are whatever the logits give; [`grpo_loss`] masks them.
pub fn token_logps_and_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    completion_ids: Tensor<B, 2, Int>,
    temperature: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let scaled = if temperature == 1.0 {
        logits
    } else {
        logits.div_scalar(temperature)
    };
    let logp_all = log_softmax(scaled, 2);
    let detached = logp_all.clone().detach();
    let entropy = detached
        .clone()
        .exp()
        .mul(detached)
        .sum_dim(2)
        .neg()
        .squeeze_dim::<2>(2);
    let logps = logp_all
        .gather(2, completion_ids.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2);
    (logps, entropy)
}

/// Per-completion loss coefficients for one optimizer step: the loss types' normalizers of TRL,
/// computed once over every completion of the step, so that the learner can compute the loss
/// group by group (skipping zero-advantage groups) and still get TRL's step loss exactly.
///
/// TRL splits a step (its generation batch, `per_device_train_batch_size x
/// gradient_accumulation_steps` rows) into `GA` micro-batches of `b` consecutive rows, calls
/// `_compute_loss` on each and backpropagates the sum (`loss_is_scaled_for_ga = True`). The
/// coefficient `c_i` of completion `i` in micro-batch `k` (`n_k` rows, `m_i = sum_t M_it`):
/// - `grpo`: `1 / (max(1, m_i) n_k GA)` (per-sequence mean, mean over the micro-batch, / GA),
/// - `bnpo`: `1 / (max(1, sum_{j in k} m_j) GA)` (token mean of the micro-batch, / GA),
/// - `dr_grpo`: `1 / (n_k max_completion_length GA)`,
/// - `dapo`: `1 / max(1, sum_j m_j)` over the whole step (TRL's `num_items_in_batch`, which spans
///   the generation batch, rescaled by `GA / steps_per_generation` = 1).
///
/// Only `bnpo` depends on the micro-batch partition; here micro-batch `k` is rows
/// `k b .. (k + 1) b` of the step order (TRL shuffles the rows before splitting; any fixed
/// order is an equally valid draw).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalizer {
    coefficients: Vec<f64>,
}

impl Normalizer {
    /// Builds the coefficients of a step from the loss-token count (`sum_t M`) of each of its
    /// completions, in step order, including completions the learner will skip.
    pub fn for_step(cfg: &TrainingConfig, tokens: &[usize]) -> Result<Self> {
        let b = cfg.per_device_train_batch_size;
        ensure!(b > 0, "training.per_device_train_batch_size must be > 0");
        let n = tokens.len();
        let ga = n.div_ceil(b).max(1) as f64;
        let total: usize = tokens.iter().sum();
        let mut coefficients = Vec::with_capacity(n);
        for (k, chunk) in tokens.chunks(b).enumerate() {
            let n_k = chunk.len() as f64;
            let micro_tokens: usize = chunk.iter().sum();
            for (j, &m) in chunk.iter().enumerate() {
                let c = match cfg.loss_type {
                    LossType::Grpo => 1.0 / ((m.max(1) as f64) * n_k * ga),
                    LossType::Bnpo => 1.0 / ((micro_tokens.max(1) as f64) * ga),
                    LossType::DrGrpo => {
                        ensure!(
                            cfg.max_completion_length > 0,
                            "training.max_completion_length must be > 0 for loss_type dr_grpo"
                        );
                        1.0 / (n_k * cfg.max_completion_length as f64 * ga)
                    }
                    LossType::Dapo => 1.0 / (total.max(1) as f64),
                };
                debug_assert_eq!(coefficients.len(), k * b + j);
                coefficients.push(c);
            }
        }
        Ok(Self { coefficients })
    }

    /// Number of completions in the step.
    pub fn len(&self) -> usize {
        self.coefficients.len()
    }

    /// Whether the step has no completions.
    pub fn is_empty(&self) -> bool {
        self.coefficients.is_empty()
    }

    /// The coefficient of completion `row` (step order).
    pub fn coefficient(&self, row: usize) -> f64 {
        self.coefficients[row]
    }

    /// The coefficients of `rows` as a tensor `[rows.len()]`.
    pub fn coefficients<B: Backend>(
        &self,
        rows: &[usize],
        device: &B::Device,
    ) -> Result<Tensor<B, 1>> {
        let mut v = Vec::with_capacity(rows.len());
        for &r in rows {
            match self.coefficients.get(r) {
                Some(&c) => v.push(c as f32),
                None => bail!(
                    "loss row {r} is outside the step's {} completions",
                    self.len()
                ),
            }
        }
        Ok(Tensor::from_data(TensorData::new(v, [rows.len()]), device))
    }
}

/// The inputs of [`grpo_loss`] for some completions of one optimizer step.
#[derive(Debug, Clone)]
pub struct LossInputs<B: Backend> {
    /// Current policy log-probs `[N, T]` of the completion tokens (with gradient).
    pub logps: Tensor<B, 2>,
    /// Log-probs `[N, T]` of the policy that sampled the completions; `None` when on-policy
    /// (TRL then uses `logps.detach()`: ratio 1, gradient of the ratio = gradient of `logps`).
    pub old_logps: Option<Tensor<B, 2>>,
    /// Reference-model log-probs `[N, T]`; required when `beta != 0`.
    pub ref_logps: Option<Tensor<B, 2>>,
    /// Entropies `[N, T]` for the `entropy` metric (optional: the loss does not use them).
    pub entropy: Option<Tensor<B, 2>>,
    /// Advantages `[N]`.
    pub advantages: Tensor<B, 1>,
    /// Completion (loss) mask `[N, T]`, 1.0 for real tokens, 0.0 for padding.
    pub mask: Tensor<B, 2>,
    /// Positions of these `N` completions in the step order of the [`Normalizer`].
    pub rows: Vec<usize>,
}

/// Metric sums of one [`grpo_loss`] call, to be merged over calls; the `*_mean` accessors give
/// TRL's values (`kl`, `entropy`, `clip_ratio/low_mean`, `clip_ratio/high_mean`,
/// `clip_ratio/region_mean`) for the union of the merged calls. TRL logs, per micro-batch, these
/// means over that micro-batch, and averages the micro-batch values at logging time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossMetrics {
    /// This call's share of the step loss (the returned loss value).
    pub loss: f64,
    /// Completions.
    pub rows: f64,
    /// Loss tokens `sum M`.
    pub tokens: f64,
    /// `sum kl M` (bias-corrected when configured, as TRL logs it); `None` when `beta == 0`.
    pub kl_sum: Option<f64>,
    /// `sum entropy M`; `None` when no entropy was given.
    pub entropy_sum: Option<f64>,
    /// `sum M` of the calls that gave entropies (skipped groups have none: the learner's
    /// `entropy` is the mean over the groups it ran).
    pub entropy_tokens: f64,
    /// Count of low-clipped units: ratio `< 1 - epsilon` with `A < 0`.
    pub clip_low: f64,
    /// Count of high-clipped units: ratio `> 1 + epsilon_high` with `A > 0`.
    pub clip_high: f64,
    /// Count of units clipped either way.
    pub clip_region: f64,
    /// Units the clip counts are over: masked tokens (token level) or completions (sequence
    /// level, every row, as TRL counts them).
    pub clip_units: f64,
}

impl LossMetrics {
    /// Adds another call's sums (same step, other completions).
    pub fn merge(&mut self, o: &LossMetrics) {
        fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
            match (a, b) {
                (Some(x), Some(y)) => Some(x + y),
                (x, None) => x,
                (None, y) => y,
            }
        }
        self.loss += o.loss;
        self.rows += o.rows;
        self.tokens += o.tokens;
        self.kl_sum = add(self.kl_sum, o.kl_sum);
        self.entropy_sum = add(self.entropy_sum, o.entropy_sum);
        self.entropy_tokens += o.entropy_tokens;
        self.clip_low += o.clip_low;
        self.clip_high += o.clip_high;
        self.clip_region += o.clip_region;
        self.clip_units += o.clip_units;
    }

    /// Counts completions the learner skipped (zero advantage): they are never clipped, but TRL
    /// counts them in the clip ratios' denominators. (Their `kl`/`entropy` would need a forward
    /// pass; `entropy_mean` leaves them out, and with `beta != 0` nothing is skipped.)
    pub fn add_skipped(&mut self, rows: usize, tokens: usize, level: ImportanceSamplingLevel) {
        self.rows += rows as f64;
        self.tokens += tokens as f64;
        self.clip_units += match level {
            ImportanceSamplingLevel::Token => tokens as f64,
            ImportanceSamplingLevel::Sequence => rows as f64,
        };
    }

    /// TRL `kl`: masked mean of the (bias-corrected) per-token KL.
    pub fn kl_mean(&self) -> Option<f64> {
        self.kl_sum.map(|s| s / self.tokens.max(1.0))
    }

    /// TRL `entropy`: masked mean of the per-token entropy (over the calls that gave one).
    pub fn entropy_mean(&self) -> Option<f64> {
        self.entropy_sum.map(|s| s / self.entropy_tokens.max(1.0))
    }

    /// TRL `clip_ratio/low_mean`.
    pub fn clip_low_mean(&self) -> f64 {
        self.clip_low / self.clip_units.max(1.0)
    }

    /// TRL `clip_ratio/high_mean`.
    pub fn clip_high_mean(&self) -> f64 {
        self.clip_high / self.clip_units.max(1.0)
    }

    /// TRL `clip_ratio/region_mean`.
    pub fn clip_region_mean(&self) -> f64 {
        self.clip_region / self.clip_units.max(1.0)
    }
}

impl<B: Backend> LossInputs<B> {
    /// Checks that every tensor has the log-probs' `[n, t]` shape (advantages `[n]`); returns it.
    fn check(&self) -> Result<[usize; 2]> {
        let [n, t] = self.logps.dims();
        ensure!(
            self.mask.dims() == [n, t],
            "loss mask is {:?}, log-probs are [{n}, {t}]",
            self.mask.dims()
        );
        ensure!(
            self.advantages.dims() == [n],
            "advantages are {:?}, expected [{n}]",
            self.advantages.dims()
        );
        ensure!(
            self.rows.len() == n,
            "{} loss rows for {n} completions",
            self.rows.len()
        );
        for (name, x) in [
            ("old", &self.old_logps),
            ("ref", &self.ref_logps),
            ("entropy", &self.entropy),
        ] {
            if let Some(x) = x {
                ensure!(
                    x.dims() == [n, t],
                    "{name} tensor is {:?}, expected [{n}, {t}]",
                    x.dims()
                );
            }
        }
        Ok([n, t])
    }
}

/// The importance ratio of a loss computation and what its clip metrics need.
struct Ratio<B: Backend> {
    /// `exp(log ratio)`, detached: `[N, T]` (token level) or `[N, 1]` (sequence level).
    coef_1: Tensor<B, 2>,
    /// Advantages `[N, 1]`.
    adv: Tensor<B, 2>,
    eps_low: f64,
    eps_high: f64,
}

/// The metric sums of a loss computation, in one read-back: loss, tokens, KL and entropy sums,
/// and TRL's clip counts (low: ratio below `1 - eps_low` with a negative advantage; high: above
/// `1 + eps_high` with a positive one; region: either) over tokens or sequences.
fn read_metrics<B: Backend>(
    loss: &Tensor<B, 1>,
    mask: Tensor<B, 2>,
    r: Ratio<B>,
    kl_masked: Option<Tensor<B, 2>>,
    entropy: Option<Tensor<B, 2>>,
    cfg: &TrainingConfig,
) -> Result<LossMetrics> {
    let device = mask.device();
    let n = mask.dims()[0];
    let low = r.coef_1.clone().lower_elem(1.0 - r.eps_low).float()
        * r.adv.clone().lower_elem(0.0).float();
    let high = r.coef_1.greater_elem(1.0 + r.eps_high).float() * r.adv.greater_elem(0.0).float();
    let region = (low.clone() + high.clone()).clamp_max(1.0);
    let (clip_units, clip_sums) = match cfg.importance_sampling_level {
        ImportanceSamplingLevel::Token => (
            mask.clone().sum(),
            [
                low * mask.clone(),
                high * mask.clone(),
                region * mask.clone(),
            ]
            .map(|x| x.sum()),
        ),
        ImportanceSamplingLevel::Sequence => (
            Tensor::<B, 1>::from_data(TensorData::new(vec![n as f32], [1]), &device),
            [low, high, region].map(|x| x.sum()),
        ),
    };
    let zero = || Tensor::<B, 1>::zeros([1], &device);
    let has_kl = kl_masked.is_some();
    let has_entropy = entropy.is_some();
    let [cl, ch, cr] = clip_sums;
    let parts = vec![
        loss.clone().detach(),
        mask.clone().sum(),
        kl_masked.map(|k| k.sum()).unwrap_or_else(zero),
        entropy
            .map(|e| (e.detach() * mask).sum())
            .unwrap_or_else(zero),
        cl,
        ch,
        cr,
        clip_units,
    ];
    let vals = Tensor::cat(parts, 0)
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .map_err(|e| anyhow::anyhow!("reading loss metrics back: {e:?}"))?;
    Ok(LossMetrics {
        loss: vals[0],
        rows: n as f64,
        tokens: vals[1],
        kl_sum: has_kl.then_some(vals[2]),
        entropy_sum: has_entropy.then_some(vals[3]),
        entropy_tokens: if has_entropy { vals[1] } else { 0.0 },
        clip_low: vals[4],
        clip_high: vals[5],
        clip_region: vals[6],
        clip_units: vals[7],
    })
}

/// The GRPO loss of some completions of a step: their share of TRL's step loss (see the module
/// doc), as a `[1]` tensor to backpropagate, and the metric sums.
///
/// Uses `cfg.loss_type` only through `normalizer`, and `cfg.beta`, `cfg.epsilon`,
/// `cfg.epsilon_high()`, `cfg.importance_sampling_level`, `cfg.use_bias_correction_kl`.
pub fn grpo_loss<B: Backend>(
    inp: LossInputs<B>,
    cfg: &TrainingConfig,
    normalizer: &Normalizer,
) -> Result<(Tensor<B, 1>, LossMetrics)> {
    inp.check()?;
    let device = inp.logps.device();
    let coef = normalizer.coefficients::<B>(&inp.rows, &device)?;
    let mask = inp.mask;
    let logps = inp.logps;
    let eps_low = cfg.epsilon;
    let eps_high = cfg.epsilon_high();

    // Masked log-ratio: padded positions contribute exactly 0 whatever the old log-probs hold there.
    let old = inp.old_logps.unwrap_or_else(|| logps.clone().detach());
    let log_ratio = (logps.clone() - old) * mask.clone();
    let seq_tokens = mask.clone().sum_dim(1); // [N, 1]
    let log_w = match cfg.importance_sampling_level {
        ImportanceSamplingLevel::Token => log_ratio, // [N, T]
        ImportanceSamplingLevel::Sequence => {
            log_ratio.sum_dim(1) / seq_tokens.clone().clamp_min(1.0)
        } // [N, 1]
    };
    let coef_1 = log_w.exp();
    let coef_2 = coef_1.clone().clamp(1.0 - eps_low, 1.0 + eps_high);
    let adv = inp.advantages.unsqueeze_dim::<2>(1); // [N, 1]
    let loss_1 = coef_1.clone() * adv.clone();
    let loss_2 = coef_2 * adv.clone();
    let mut per_token = loss_1.min_pair(loss_2).neg(); // [N, T] or [N, 1]

    let mut kl_masked = None;
    if cfg.beta != 0.0 {
        let Some(ref_logps) = inp.ref_logps else {
            bail!("training.beta = {} needs reference log-probs", cfg.beta);
        };
        let d = (ref_logps - logps.clone()) * mask.clone();
        let mut kl = d.clone().exp() - d - 1.0; // exactly 0 at padded positions
        if cfg.use_bias_correction_kl {
            kl = kl * coef_1.clone();
        }
        per_token = per_token + kl.clone().mul_scalar(cfg.beta);
        kl_masked = Some(kl.detach() * mask.clone());
    }

    let weighted = per_token * mask.clone() * coef.unsqueeze_dim::<2>(1);
    let loss = weighted.sum();

    let ratio = Ratio {
        coef_1: coef_1.detach(),
        adv,
        eps_low,
        eps_high,
    };
    let metrics = read_metrics(&loss, mask, ratio, kl_masked, inp.entropy, cfg)?;
    Ok((loss, metrics))
}
