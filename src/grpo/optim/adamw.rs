//! The learner's optimizer: AdamW with `torch.optim.AdamW` semantics (TRL's default optimizer is
//! `adamw_torch_fused`) and global-norm gradient clipping as `torch.nn.utils.clip_grad_norm_`,
//! applied in the HF `Trainer` order: clip, AdamW step with the schedule's lr, next lr.
//!
//! burn 0.21's `AdamW` (burn-optim) does the same arithmetic as torch's, so it is used as is:
//! moments `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2` (from zero), update
//! `lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)` (epsilon outside the square root, after
//! bias correction), decoupled weight decay `p (1 - lr wd)` applied to the parameter before the
//! update, as torch. Checked against torch (fused and for-each) on fixtures, including a large
//! epsilon with tiny gradients (where epsilon goes) and weight decay. burn's own gradient clipping
//! (`GradientClipping::Norm`) clips each tensor by its own norm, which is not torch's global norm,
//! so clipping is done here ([`clip_coefficient`]).
//!
//! State is kept per parameter name, flattened (AdamW is elementwise), so a checkpoint can save it
//! as named tensors (`<name>.exp_avg`, `<name>.exp_avg_sq`, and the step count) and restore it
//! exactly ([`AdamW::state`], [`AdamW::set_state`]).

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use burn::optim::{AdamWConfig, AdamWState, AdaptiveMomentumState, SimpleOptimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::config::TrainingConfig;

/// torch's `clip_grad_norm_` adds this to the norm before dividing.
pub const CLIP_EPS: f64 = 1e-6;

/// Sum of squares of one gradient tensor (any rank), a `[1]` tensor; feed all of them to
/// [`global_norm`].
pub fn squared_norm<B: Backend, const D: usize>(grad: &Tensor<B, D>) -> Tensor<B, 1> {
    grad.clone().square().sum()
}

/// The total L2 norm over all gradients (torch: the norm of the per-tensor norms; the same
/// number up to rounding), read back as `f64`. This is what TRL logs as `grad_norm` (before
/// clipping).
pub fn global_norm<B: Backend>(squared_norms: Vec<Tensor<B, 1>>) -> f64 {
    if squared_norms.is_empty() {
        return 0.0;
    }
    let total: f64 = Tensor::cat(squared_norms, 0)
        .into_data()
        .convert::<f64>()
        .iter::<f64>()
        .sum();
    total.sqrt()
}

/// The factor every gradient is multiplied by: `min(1, max_norm / (total_norm + 1e-6))`, or
/// `None` when the norm is not finite: the learner then skips the step (torch would write NaN
/// into the weights). `max_norm <= 0` disables clipping (HF `Trainer`), giving `Some(1.0)`.
pub fn clip_coefficient(total_norm: f64, max_norm: f64) -> Option<f64> {
    if !total_norm.is_finite() {
        return None;
    }
    if max_norm <= 0.0 {
        return Some(1.0);
    }
    Some((max_norm / (total_norm + CLIP_EPS)).min(1.0))
}

/// The saved state of one parameter (torch's `exp_avg`, `exp_avg_sq`, `step`), flattened.
#[derive(Debug, Clone)]
pub struct ParamState<B: Backend> {
    /// Optimizer steps taken for this parameter.
    pub step: usize,
    /// First moment, flattened.
    pub exp_avg: Tensor<B, 1>,
    /// Second moment, flattened.
    pub exp_avg_sq: Tensor<B, 1>,
}

/// AdamW over named parameters, with torch semantics (see the module doc).
#[derive(Clone)]
pub struct AdamW<B: Backend> {
    inner: burn::optim::AdamW,
    state: BTreeMap<String, AdamWState<B, 1>>,
}

impl<B: Backend> AdamW<B> {
    /// From the run's `adam_beta1`, `adam_beta2`, `adam_epsilon` and `weight_decay`.
    pub fn new(cfg: &TrainingConfig) -> Self {
        let inner = AdamWConfig::new()
            .with_beta_1(cfg.adam_beta1 as f32)
            .with_beta_2(cfg.adam_beta2 as f32)
            .with_epsilon(cfg.adam_epsilon as f32)
            .with_weight_decay(cfg.weight_decay as f32)
            .build();
        Self {
            inner,
            state: BTreeMap::new(),
        }
    }

    /// One AdamW update of parameter `name` with its (already clipped) gradient at learning
    /// rate `lr`; returns the new value. The first call for a name starts its moments at zero.
    pub fn step<const D: usize>(
        &mut self,
        name: &str,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        lr: f64,
    ) -> Result<Tensor<B, D>> {
        let shape = param.shape();
        ensure!(
            grad.shape() == shape,
            "gradient of {name} is {:?}, parameter is {:?}",
            grad.shape(),
            shape
        );
        let n = shape.num_elements();
        let state = self.state.remove(name);
        if let Some(s) = &state {
            ensure!(
                s.momentum.moment_1.dims()[0] == n,
                "optimizer state of {name} has {} elements, parameter has {n}",
                s.momentum.moment_1.dims()[0]
            );
        }
        let (updated, new_state) =
            self.inner
                .step(lr, param.reshape([n]), grad.reshape([n]), state);
        if let Some(s) = new_state {
            self.state.insert(name.to_string(), s);
        }
        Ok(updated.reshape(shape))
    }

    /// The state of every parameter stepped so far, by name (for checkpoints).
    pub fn state(&self) -> BTreeMap<String, ParamState<B>> {
        self.state
            .iter()
            .map(|(k, s)| {
                let m = &s.momentum;
                let st = ParamState {
                    step: m.time,
                    exp_avg: m.moment_1.clone(),
                    exp_avg_sq: m.moment_2.clone(),
                };
                (k.clone(), st)
            })
            .collect()
    }

    /// Restores the state of parameter `name` (from a checkpoint).
    pub fn set_state(&mut self, name: &str, st: ParamState<B>) -> Result<()> {
        ensure!(
            st.exp_avg.dims() == st.exp_avg_sq.dims(),
            "optimizer state of {name}: exp_avg {:?} and exp_avg_sq {:?} differ",
            st.exp_avg.dims(),
            st.exp_avg_sq.dims()
        );
        let momentum = AdaptiveMomentumState {
            time: st.step,
            moment_1: st.exp_avg,
            moment_2: st.exp_avg_sq,
            max_moment_2: None,
        };
        self.state
            .insert(name.to_string(), AdamWState::new(momentum));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
