//! Building the model's projections with NF4 and LoRA while the checkpoint loads: a
//! [`LoadHook`] for `Gemma3::load_with` that quantizes each Linear weight on the host (one
//! tensor at a time, so the bf16 model is never held whole) and attaches an adapter — a PEFT
//! file's (`--adapter DIR`) or a freshly initialised one for training — to the targeted layers.
//!
//! Which Linears are quantized follows transformers' bitsandbytes integration: every Linear of
//! both towers by default, or the language model's only (`quantize_vision = false`); the
//! embeddings, norms, patch conv, position embeddings and projector stay dense (they never reach
//! this hook).

use anyhow::{Context, Result, ensure};
use burn::prelude::*;

use super::adapter::{Adapter, LoraPair};
use super::targets::TargetSelector;
use crate::model::lora_linear::{LinearBase, LoraAdapter, LoraLinear, LoraSettings, stream_id};
use crate::model::weights::{HostTensor, LoadHook};
use crate::quant::nf4::{Nf4Config, WeightSlice};
use crate::quant::nf4_linear::Nf4Linear;

/// The PEFT module path (transformers ≥ 4.52 `Gemma3ForConditionalGeneration`) of a projection
/// named by the model loader: `language_model.layers.3.self_attn.q_proj` ->
/// `model.language_model.layers.3.self_attn.q_proj`, `vision_tower.encoder...` ->
/// `model.vision_tower.vision_model.encoder...`.
pub fn peft_module_path(loader_name: &str) -> String {
    match loader_name.strip_prefix("vision_tower.") {
        Some(rest) => format!("model.vision_tower.vision_model.{rest}"),
        None => format!("model.{loader_name}"),
    }
}

/// Where adapters come from.
pub enum AdapterSource {
    /// No adapters.
    None,
    /// A loaded PEFT adapter: its layers and settings (targets come from its weights).
    Peft(Adapter),
    /// New adapters (PEFT init) on the layers `selector` picks.
    New {
        /// Rank, alpha, dropout, rslora.
        settings: LoraSettings,
        /// Target selection.
        selector: TargetSelector,
        /// Seed of the `A` initialisation (each layer mixes in its own stream id).
        seed: u64,
    },
}

/// The load hook: NF4 (optional) + LoRA (optional).
pub struct QuantLoraLoad {
    /// NF4 settings; `None` keeps bases dense.
    pub nf4: Option<Nf4Config>,
    /// Quantize the vision tower's Linears too.
    pub quantize_vision: bool,
    /// Adapters to attach.
    pub adapters: AdapterSource,
    /// PEFT paths of the layers that received an adapter, in load order.
    pub attached: Vec<String>,
    /// Linear layers built, in load order (PEFT paths).
    pub seen: Vec<String>,
}

impl QuantLoraLoad {
    /// A hook with the given quantization and adapters.
    pub fn new(nf4: Option<Nf4Config>, quantize_vision: bool, adapters: AdapterSource) -> Self {
        Self {
            nf4,
            quantize_vision,
            adapters,
            attached: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// After loading: fails if a PEFT adapter named layers the model does not have, and warns
    /// about each part of `target_modules` that selected no layer (a typo would otherwise
    /// just leave layers without adapters).
    pub fn check_all_used(&self) -> Result<()> {
        let unmatched = match &self.adapters {
            AdapterSource::None => Vec::new(),
            AdapterSource::Peft(a) => a.config.selector()?.unmatched(&self.seen),
            AdapterSource::New { selector, .. } => selector.unmatched(&self.seen),
        };
        for t in unmatched {
            eprintln!("warning: LoRA target_modules entry `{t}` matches no layer of the model");
        }
        if let AdapterSource::Peft(a) = &self.adapters {
            let missing: Vec<&String> = a
                .layers
                .keys()
                .filter(|k| !self.attached.contains(k))
                .collect();
            ensure!(
                missing.is_empty(),
                "the adapter has weights for {} layers the model does not have, e.g. {}",
                missing.len(),
                missing[0]
            );
        }
        Ok(())
    }
}

fn matrix<B: Backend>(m: &super::adapter::HostMatrix, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(m.data.clone(), m.shape), device)
}

impl<B: Backend> LoadHook<B> for QuantLoraLoad {
    fn linear(
        &mut self,
        name: &str,
        weight: HostTensor,
        bias: Option<HostTensor>,
        device: &B::Device,
    ) -> Result<LoraLinear<B>> {
        ensure!(weight.shape.len() == 2, "{name}: weight is not 2-D");
        let (out, inp) = (weight.shape[0], weight.shape[1]);
        let path = peft_module_path(name);
        let quantize =
            self.nf4.is_some() && (self.quantize_vision || !name.starts_with("vision_tower."));
        let bias = bias.map(|b| b.to_tensor::<B, 1>(device));
        let base = match (quantize, self.nf4) {
            (true, Some(cfg)) => LinearBase::Nf4(
                Nf4Linear::quantize_from(WeightSlice::F32(&weight.data), [out, inp], bias, cfg)
                    .with_context(|| format!("quantizing {name}"))?,
            ),
            _ => LinearBase::Dense(crate::model::lora_linear::DenseLinear::new(
                weight.to_tensor::<B, 2>(device),
                bias,
            )),
        };
        let lora = match &self.adapters {
            AdapterSource::None => None,
            AdapterSource::Peft(a) => match a.layers.get(&path) {
                Some(LoraPair { a: la, b: lb }) => {
                    ensure!(
                        la.shape[1] == inp && lb.shape[0] == out,
                        "{path}: adapter A {:?} / B {:?} do not fit a [{out}, {inp}] layer",
                        la.shape,
                        lb.shape
                    );
                    let s = a.config.settings();
                    Some(LoraAdapter::from_tensors(
                        matrix::<B>(la, device),
                        matrix::<B>(lb, device),
                        s.scaling(),
                        s.dropout,
                        stream_id(&path),
                    ))
                }
                None => None,
            },
            AdapterSource::New {
                settings,
                selector,
                seed,
            } => selector
                .is_target(&path)
                .then(|| LoraAdapter::init(inp, out, settings, *seed, stream_id(&path), device)),
        };
        if lora.is_some() {
            self.attached.push(path.clone());
        }
        self.seen.push(path);
        Ok(LoraLinear { base, lora })
    }
}

#[cfg(test)]
mod tests;
