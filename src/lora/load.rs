//! The one recipe for loading a model: a checkpoint with its base quantized as the config says
//! (NF4, bitsandbytes-identical, or dense) and LoRA adapters attached while it loads — none, a
//! PEFT adapter directory, or new ones for a training run. Every command (`pipeline`, `eval`,
//! `generate`, `logprobs`, `loss`) and the benchmarks load through [`ModelLoad`], so a model
//! is the same model wherever it is used.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::Backend;

use super::adapter::{Adapter, AdapterConfig};
use super::attach::{AdapterSource, QuantLoraLoad};
use super::targets::{ModuleMatch, TargetSelector, default_match};
use crate::config::{Config, LoraConfig, QuantizationConfig};
use crate::model::gemma3::Gemma3;
use crate::model::lora_linear::LoraSettings;
use crate::quant::nf4::Nf4Config;

/// Where a model's LoRA adapters come from.
#[derive(Debug, Clone)]
pub enum Adapters {
    /// The base model alone.
    None,
    /// A PEFT adapter directory (`--adapter`, or the checkpoint a run resumes from).
    Peft(PathBuf),
    /// New adapters with PEFT's initialisation, seeded: the start of a training run.
    New {
        /// The `lora:` section (rank, alpha, dropout, targets).
        lora: LoraConfig,
        /// Seed of the `A` initialisation.
        seed: u64,
    },
}

/// How to load a model: the base's quantization and the adapters.
#[derive(Debug, Clone)]
pub struct ModelLoad {
    /// NF4 settings of the base; `None` keeps it dense.
    pub nf4: Option<Nf4Config>,
    /// Quantize the vision tower's projections too (transformers' default).
    pub quantize_vision: bool,
    /// The adapters to attach.
    pub adapters: Adapters,
}

impl ModelLoad {
    /// The base as a `quantization:` section describes it, without adapters.
    pub fn base(q: &QuantizationConfig) -> Self {
        Self {
            nf4: q.load_in_4bit.then_some(Nf4Config {
                blocksize: q.blocksize,
                double_quant: q.bnb_4bit_use_double_quant,
            }),
            quantize_vision: q.quantize_vision_tower,
            adapters: Adapters::None,
        }
    }

    /// The same load with `adapters`.
    pub fn with_adapters(mut self, adapters: Adapters) -> Self {
        self.adapters = adapters;
        self
    }

    /// The policy of a training run of `config`: new adapters on `lora.target_modules`, or the
    /// adapter of the checkpoint it resumes from.
    pub fn policy(config: &Config, resume_dir: Option<&Path>) -> Self {
        Self::base(&config.quantization).with_adapters(match resume_dir {
            Some(dir) => Adapters::Peft(dir.to_path_buf()),
            None => Adapters::New {
                lora: config.lora.clone(),
                seed: config.seed,
            },
        })
    }

    /// Loads the checkpoint in `dir` on `device`. Fails when a PEFT adapter names layers the
    /// model lacks, or when new adapters match no layer.
    pub fn load<B: Backend>(&self, dir: &Path, device: &B::Device) -> Result<Gemma3<B>> {
        let mut hook = QuantLoraLoad::new(self.nf4, self.quantize_vision, self.source()?);
        let model = Gemma3::load_with(dir, device, &mut hook)
            .with_context(|| format!("loading model {}", dir.display()))?;
        hook.check_all_used()?;
        if let Adapters::New { lora, .. } = &self.adapters
            && hook.attached.is_empty()
        {
            bail!(
                "lora.target_modules {:?} matched no layer of {}",
                lora.target_modules,
                dir.display()
            );
        }
        Ok(model)
    }

    /// The attach hook's view of [`Self::adapters`].
    fn source(&self) -> Result<AdapterSource> {
        Ok(match &self.adapters {
            Adapters::None => AdapterSource::None,
            Adapters::Peft(dir) => AdapterSource::Peft(
                Adapter::load(dir).with_context(|| format!("loading adapter {}", dir.display()))?,
            ),
            Adapters::New { lora, seed } => {
                let (targets, exclude) = targets(lora);
                AdapterSource::New {
                    settings: settings(lora),
                    selector: TargetSelector::new(&targets, exclude.as_ref())?,
                    seed: *seed,
                }
            }
        })
    }
}

/// The PEFT `adapter_config.json` a training run of `config` writes into its checkpoints.
pub fn adapter_config(config: &Config) -> AdapterConfig {
    let (targets, exclude) = targets(&config.lora);
    AdapterConfig::new(
        &settings(&config.lora),
        targets,
        exclude,
        Some(config.model.path.clone()),
    )
}

/// Rank, alpha, dropout and rslora of a `lora:` section.
fn settings(l: &LoraConfig) -> LoraSettings {
    LoraSettings {
        r: l.r,
        alpha: l.lora_alpha,
        dropout: l.lora_dropout,
        use_rslora: l.use_rslora,
    }
}

/// The targeted module names and, unless the vision tower is included, its exclusion.
fn targets(l: &LoraConfig) -> (ModuleMatch, Option<ModuleMatch>) {
    let exclude = default_match(l.include_vision_tower).1;
    (ModuleMatch::List(l.target_modules.clone()), exclude)
}

/// The model of `config` for inference (evaluation, the demo's before/after): its base as the
/// `quantization:` section says — what the learner sees — with the PEFT adapter in `adapter`
/// when given, the base model alone otherwise.
pub fn inference_model<B: Backend>(
    config: &Config,
    adapter: Option<&Path>,
    device: &B::Device,
) -> Result<Gemma3<B>> {
    let adapters = adapter.map_or(Adapters::None, |a| Adapters::Peft(a.to_path_buf()));
    ModelLoad::base(&config.quantization)
        .with_adapters(adapters)
        .load(Path::new(&config.model.path), device)
}
