//! The GRPO loss and LoRA gradients of one group (or one optimizer step of several groups)
//! described in a JSON file, through the learner's own code path ([`loss_and_grads`]):
//! what `medgrpo loss` prints, checked against TRL (`scripts/trl_vlm_fixtures.py` writes such
//! files).
//!
//! `--group FILE.json`:
//! ```json
//! {"training": {"loss_type": "dapo", "beta": 0.04, "epsilon": 0.2, "epsilon_high": null,
//!               "use_bias_correction_kl": true, "importance_sampling_level": "token",
//!               "temperature": 0.9, "scale_rewards": "group", "per_device_train_batch_size": 4,
//!               "num_generations": 4, "max_completion_length": 7},
//!  "groups": [{"prompt_ids": [2, 5, ...], "image": "image.png",
//!              "completion_ids": [[17, 42, 1], ...], "rewards": [1.0, 0.0, ...],
//!              "old_logps": [[-5.1, ...], ...], "ref_logps": null}],
//!  "expected": {...}}
//! ```
//! `training` takes any `training:` key of the pipeline YAML (TRL's GRPOConfig names; omitted =
//! default); `image` is relative to the JSON file (`null`/absent: text only); per group either
//! `rewards` (advantages computed over the whole step as the pipeline does) or `advantages`;
//! `old_logps` absent = on-policy; `ref_logps` absent with `beta > 0` = computed with the
//! adapters disabled, as the learner does. `expected` is not read (reference values live there).
//! The loss forward runs without LoRA dropout (PEFT eval mode, equal to training mode when
//! `lora_dropout` is 0).
//!
//! Output (`--json`): `{"loss", "advantages", "groups": [{"logps", "entropy", "ref_logps"}],
//! "metrics": {"kl", "entropy", "clip_ratio/low_mean", ...}, "grads"}`, per-token values unpadded.
//! `--grads FILE` writes d(loss)/d(LoRA weights) as safetensors under PEFT's key names
//! (`base_model.model.model.language_model.layers.N.self_attn.q_proj.lora_A.weight`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Deserialize;

use super::advantage::advantages;
use super::learner::{GroupInput, GroupValues, loss_and_grads};
use super::loss::{LossMetrics, Normalizer};
use crate::config::TrainingConfig;
use crate::lora::extract::{NamedMatrix, lora_grads};
use crate::model::gemma3::Gemma3;
use crate::model::generate::Prompt;
use crate::model::processor::Gemma3Processor;
use crate::model::user_prompt::load_pixels;

/// The `--group` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// Loss settings (GRPOConfig names; omitted keys take the pipeline defaults).
    #[serde(default)]
    pub training: TrainingConfig,
    /// The step's groups, in step order.
    pub groups: Vec<GroupSpec>,
    /// Reference values kept next to the input (fixtures); not read.
    #[serde(default)]
    pub expected: Option<serde_json::Value>,
}

/// One group of the `--group` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Prompt ids exactly as the processor expands them (image block included).
    pub prompt_ids: Vec<u32>,
    /// Image file (relative to the JSON file), when the prompt has an image block.
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// The G completions' ids.
    pub completion_ids: Vec<Vec<u32>>,
    /// Rewards, one per completion (or give `advantages`).
    #[serde(default)]
    pub rewards: Option<Vec<f64>>,
    /// Advantages, one per completion (or give `rewards`).
    #[serde(default)]
    pub advantages: Option<Vec<f64>>,
    /// Log-probs of the sampling policy (off-policy); absent = on-policy.
    #[serde(default)]
    pub old_logps: Option<Vec<Vec<f32>>>,
    /// Reference log-probs; absent with `beta > 0` = adapters disabled.
    #[serde(default)]
    pub ref_logps: Option<Vec<Vec<f32>>>,
}

impl GroupFile {
    /// Reads and checks a `--group` file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: GroupFile = serde_json::from_str(&text)
            .with_context(|| format!("parsing the group file {}", path.display()))?;
        ensure!(!f.groups.is_empty(), "{}: no groups", path.display());
        let g = f.groups[0].completion_ids.len();
        for (i, gr) in f.groups.iter().enumerate() {
            ensure!(
                gr.completion_ids.len() == g && g > 0,
                "{}: group {i} has {} completions, group 0 has {g} (every group needs the same G > 0)",
                path.display(),
                gr.completion_ids.len()
            );
            ensure!(
                gr.rewards.is_some() != gr.advantages.is_some(),
                "{}: group {i} needs exactly one of `rewards` and `advantages`",
                path.display()
            );
            ensure!(
                f.groups[0].rewards.is_some() == gr.rewards.is_some(),
                "{}: give `rewards` for every group or `advantages` for every group",
                path.display()
            );
        }
        Ok(f)
    }

    /// The advantages of every completion, in step order: given, or computed from the rewards
    /// with `training.scale_rewards` over the whole step.
    pub fn advantages(&self) -> Result<Vec<f64>> {
        let g = self.groups[0].completion_ids.len();
        let mut out = Vec::new();
        if self.groups[0].rewards.is_some() {
            let rewards: Vec<f64> = self
                .groups
                .iter()
                .flat_map(|gr| gr.rewards.clone().unwrap_or_default())
                .collect();
            ensure!(
                rewards.len() == g * self.groups.len(),
                "every group needs one reward per completion"
            );
            return Ok(advantages(&rewards, g, self.training.scale_rewards)?.values);
        }
        for (i, gr) in self.groups.iter().enumerate() {
            let a = gr.advantages.as_ref().expect("checked on load");
            ensure!(
                a.len() == g,
                "group {i}: {} advantages for {g} completions",
                a.len()
            );
            out.extend(a);
        }
        Ok(out)
    }
}

/// What `medgrpo loss` computes.
#[derive(Debug, Clone)]
pub struct LossReport {
    /// The step loss (what backward sees).
    pub loss: f64,
    /// Advantages, step order.
    pub advantages: Vec<f64>,
    /// Per group: log-probs, entropies, reference log-probs.
    pub groups: Vec<GroupValues>,
    /// Loss and metric sums.
    pub metrics: LossMetrics,
    /// LoRA gradients by PEFT key name (empty without adapters).
    pub grads: BTreeMap<String, NamedMatrix>,
}

impl LossReport {
    /// TRL-named metrics.
    pub fn metric_map(&self) -> BTreeMap<String, f64> {
        let m = &self.metrics;
        let mut out = BTreeMap::from([
            ("loss".to_string(), self.loss),
            ("clip_ratio/low_mean".to_string(), m.clip_low_mean()),
            ("clip_ratio/high_mean".to_string(), m.clip_high_mean()),
            ("clip_ratio/region_mean".to_string(), m.clip_region_mean()),
        ]);
        if let Some(kl) = m.kl_mean() {
            out.insert("kl".into(), kl);
        }
        if let Some(e) = m.entropy_mean() {
            out.insert("entropy".into(), e);
        }
        out
    }
}

/// Runs the learner's loss and gradient computation on a group file (`base` resolves image
/// paths). The image goes through the processor and the frozen tower once, as the sampler does.
pub fn compute<B: AutodiffBackend>(
    model: &Gemma3<B>,
    model_dir: &Path,
    file: &GroupFile,
    base: &Path,
) -> Result<LossReport> {
    let cfg = &file.training;
    let adv = file.advantages()?;
    let g = file.groups[0].completion_ids.len();
    let tokens: Vec<usize> = file
        .groups
        .iter()
        .flat_map(|gr| gr.completion_ids.iter().map(Vec::len))
        .collect();
    let normalizer = Normalizer::for_step(cfg, &tokens)?;
    let inner = model.valid();
    let mut processor = None;
    let mut inputs = Vec::with_capacity(file.groups.len());
    for (gi, gr) in file.groups.iter().enumerate() {
        let image_features = match &gr.image {
            None => None,
            Some(img) => {
                if processor.is_none() {
                    processor = Some(Gemma3Processor::from_dir(model_dir)?);
                }
                let proc = processor.as_ref().expect("set above");
                let path = base.join(img);
                let px = load_pixels::<B::InnerBackend>(&path, proc, &inner.device())?;
                let f = inner
                    .image_features(px)
                    .with_context(|| format!("image features of {}", path.display()))?;
                let [n, t, d] = f.dims();
                Some(Tensor::<B, 2>::from_inner(f.reshape([n * t, d])))
            }
        };
        let rows: Vec<usize> = (gi * g..(gi + 1) * g).collect();
        inputs.push(GroupInput {
            label: format!("group {gi}"),
            prompt: Prompt {
                ids: gr.prompt_ids.clone(),
                image_features,
                seed: 0,
            },
            completion_ids: &gr.completion_ids,
            old_logps: gr.old_logps.as_deref(),
            ref_logps: gr.ref_logps.as_deref(),
            advantages: rows.iter().map(|&r| adv[r] as f32).collect(),
            rows,
            skip: false,
            dropout_seed: None,
        });
    }
    let out = loss_and_grads(model, &inputs, cfg, &normalizer, true)?;
    let grads = match &out.grads {
        Some(grads) => lora_grads(model, grads),
        None => BTreeMap::new(),
    };
    Ok(LossReport {
        loss: out.metrics.loss,
        advantages: adv,
        groups: out.values.into_iter().map(|v| v.expect("kept")).collect(),
        metrics: out.metrics,
        grads,
    })
}

#[cfg(test)]
mod tests;
