//! The learner's optimizer step over the model's trainable (LoRA) parameters: torch's global-norm
//! clipping, then [`adamw::AdamW`] per parameter, keyed by the parameter's module path so its
//! state can be saved in a checkpoint and restored in another process (burn's own optimizer keys
//! state by random parameter ids, which do not survive a restart).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use safetensors::tensor::TensorView;

use crate::config::TrainingConfig;
use crate::model::gemma3::Gemma3;
use adamw::{AdamW, ParamState, clip_coefficient, global_norm, squared_norm};

pub mod adamw;

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

/// Collects the squared norm of the gradient of every trainable float parameter of a module,
/// in module order.
struct GradNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    squared: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.squared.push(squared_norm(&g));
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

/// torch's `clip_grad_norm_`: the total norm over all gradients ([`global_norm`], one read-back),
/// and the gradients scaled by `min(1, max_norm / (norm + 1e-6))`. Returns the norm before
/// clipping.
pub fn clip_global_norm<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut v = GradNorm::<AB> {
        grads,
        squared: Vec::new(),
    };
    model.visit(&mut v);
    let norm = global_norm(v.squared);
    if let Some(coef) = clip_coefficient(norm, max_norm)
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

/// AdamW with torch semantics and named, checkpointable state.
pub struct NamedAdamW<AB: AutodiffBackend> {
    adamw: AdamW<AB::InnerBackend>,
    max_grad_norm: f64,
}

impl<AB: AutodiffBackend> NamedAdamW<AB> {
    /// From the run's AdamW settings and `max_grad_norm`.
    pub fn new(cfg: &TrainingConfig) -> Self {
        Self {
            adamw: AdamW::new(cfg),
            max_grad_norm: cfg.max_grad_norm,
        }
    }
}

/// Walks the model, updating every parameter that has a gradient.
struct Update<'a, AB: AutodiffBackend> {
    path: Vec<String>,
    seen: BTreeMap<String, usize>,
    grads: &'a GradientsParams,
    adamw: &'a mut AdamW<AB::InnerBackend>,
    lr: f64,
    error: Option<anyhow::Error>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Update<'_, AB> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let Some(grad) = self.grads.get::<AB::InnerBackend, D>(param.id) else {
            return param;
        };
        let base = self.path.join(".");
        let k = self.seen.entry(base.clone()).or_insert(0);
        let name = format!("{base}#{k}");
        *k += 1;
        let (id, tensor, mapper) = param.consume();
        match self
            .adamw
            .step(&name, tensor.clone().inner(), grad, self.lr)
        {
            Ok(updated) => {
                Param::from_mapped_value(id, Tensor::from_inner(updated).require_grad(), mapper)
            }
            Err(e) => {
                self.error.get_or_insert(e);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

impl<AB: AutodiffBackend> StepOptimizer<AB> for NamedAdamW<AB> {
    fn apply(
        &mut self,
        model: Gemma3<AB>,
        mut grads: GradientsParams,
        lr: f64,
    ) -> Result<(Gemma3<AB>, f64)> {
        let norm = clip_global_norm::<AB, _>(&model, &mut grads, self.max_grad_norm);
        if !norm.is_finite() {
            return Ok((model, norm));
        }
        let mut u = Update::<AB> {
            path: Vec::new(),
            seen: BTreeMap::new(),
            grads: &grads,
            adamw: &mut self.adamw,
            lr,
            error: None,
        };
        let model = model.map(&mut u);
        if let Some(e) = u.error {
            return Err(e);
        }
        Ok((model, norm))
    }

    fn save_state(&self, dir: &Path) -> Result<()> {
        let state = self.adamw.state();
        let mut bufs: Vec<(String, Vec<u8>, usize)> = Vec::new();
        let mut steps = BTreeMap::new();
        for (name, st) in &state {
            steps.insert(name.clone(), st.step);
            for (suffix, t) in [("exp_avg", &st.exp_avg), ("exp_avg_sq", &st.exp_avg_sq)] {
                let v = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                bufs.push((format!("{name}.{suffix}"), bytes, v.len()));
            }
        }
        let views: Vec<(String, TensorView<'_>)> = bufs
            .iter()
            .map(|(n, b, len)| {
                Ok((
                    n.clone(),
                    TensorView::new(safetensors::Dtype::F32, vec![*len], b)?,
                ))
            })
            .collect::<Result<_>>()?;
        safetensors::serialize_to_file(views, None, &dir.join("optimizer.safetensors"))?;
        std::fs::write(
            dir.join("optimizer_steps.json"),
            serde_json::to_string_pretty(&steps)?,
        )?;
        Ok(())
    }

    fn load_state(&mut self, dir: &Path, device: &AB::Device) -> Result<()> {
        let path = dir.join("optimizer.safetensors");
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)?;
        let steps: BTreeMap<String, usize> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("optimizer_steps.json"))?)?;
        let read = |key: &str| -> Result<Tensor<AB::InnerBackend, 1>> {
            let t = st
                .tensor(key)
                .with_context(|| format!("{} lacks {key}", path.display()))?;
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let n = v.len();
            Ok(Tensor::from_data(TensorData::new(v, [n]), device))
        };
        for (name, step) in steps {
            self.adamw.set_state(
                &name,
                ParamState {
                    step,
                    exp_avg: read(&format!("{name}.exp_avg"))?,
                    exp_avg_sq: read(&format!("{name}.exp_avg_sq"))?,
                },
            )?;
        }
        Ok(())
    }
}
