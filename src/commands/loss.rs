//! `medgrpo loss`: the GRPO loss and LoRA gradients of one group (or one optimizer step of
//! several groups) through the learner's own code path (`grpo::learner::loss_and_grads`), for
//! checking against TRL (`scripts/trl_vlm_fixtures.py` writes such checks).
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

use anyhow::{Context, Result, bail, ensure};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use serde::Deserialize;

use super::generate::load_pixels;
use crate::config::Device;
use crate::config::TrainingConfig;
use crate::device::{OnBackend, run_on};
use crate::grpo::advantage::advantages;
use crate::grpo::learner::{GroupInput, GroupValues, loss_and_grads};
use crate::grpo::loss::{LossMetrics, Normalizer};
use crate::lora::adapter::peft_key;
use crate::lora::attach::peft_module_path;
use crate::model::gemma3::Gemma3;
use crate::model::generate::Prompt;
use crate::model::processor::Gemma3Processor;

/// Arguments of `medgrpo loss`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo loss --model DIR --adapter DIR --group group.json --json"
)]
pub struct LossArgs {
    /// Hugging Face snapshot directory (config.json, safetensors, processor config).
    #[arg(long)]
    pub model: PathBuf,
    /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors): the policy.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Quantize the base as the learner sees it (`nf4`, bitsandbytes-identical).
    #[arg(long, value_parser = ["nf4"])]
    pub quant: Option<String>,
    /// With `--quant nf4`: also quantize the absmax statistics (bnb_4bit_use_double_quant).
    #[arg(long, requires = "quant")]
    pub double_quant: bool,
    /// The group (or step) and the loss settings, as JSON (see the module doc).
    #[arg(long)]
    pub group: PathBuf,
    /// Write the LoRA gradients here (safetensors, PEFT key names); needs `--adapter`.
    #[arg(long)]
    pub grads: Option<PathBuf>,
    /// Print the full JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Where the model runs: `cpu` (burn flex) or `cuda` (a binary built with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
}

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
    pub grads: BTreeMap<String, ([usize; 2], Vec<f32>)>,
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

/// Loads the model on autodiff backend `AB`, with a PEFT adapter and/or an NF4 base, as the
/// learner holds it.
pub fn load_policy<AB: AutodiffBackend>(
    dir: &Path,
    adapter: Option<&Path>,
    nf4: bool,
    double_quant: bool,
) -> Result<Gemma3<AB>> {
    super::generate::load_model::<AB>(dir, adapter, nf4, double_quant)
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

/// Collects the gradients of every LoRA matrix, named like PEFT's saved keys.
struct LoraGrads<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    pending_a: bool,
    out: BTreeMap<String, ([usize; 2], Vec<f32>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for LoraGrads<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(at) = self.path.iter().rposition(|p| p == "lora") else {
            return;
        };
        if D != 2 {
            return;
        }
        // lora_a then lora_b, in field order (as `lora::extract` reads them).
        let which = if self.pending_a { "B" } else { "A" };
        self.pending_a = !self.pending_a;
        let module = peft_module_path(&self.path[..at].join("."));
        let dims = param.val().dims();
        let shape = [dims[0], dims[1]];
        let values = match self.grads.get::<B::InnerBackend, D>(param.id) {
            Some(g) => g
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 gradient"),
            None => vec![0.0; shape[0] * shape[1]],
        };
        self.out.insert(peft_key(&module, which), (shape, values));
    }
}

/// The LoRA gradients of `model` in `grads`, by PEFT key name (zero where a matrix got none).
pub fn lora_grads<B: AutodiffBackend>(
    model: &Gemma3<B>,
    grads: &GradientsParams,
) -> BTreeMap<String, ([usize; 2], Vec<f32>)> {
    let mut v = LoraGrads {
        grads,
        path: Vec::new(),
        pending_a: false,
        out: BTreeMap::new(),
    };
    model.visit(&mut v);
    v.out
}

/// Writes named f32 matrices as safetensors (metadata `format = pt`, like PEFT).
pub fn write_grads(path: &Path, grads: &BTreeMap<String, ([usize; 2], Vec<f32>)>) -> Result<()> {
    use safetensors::{Dtype, tensor::TensorView};
    let bytes: Vec<(&String, &[usize; 2], Vec<u8>)> = grads
        .iter()
        .map(|(k, (s, v))| (k, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(k, s, b)| Ok(((*k).clone(), TensorView::new(Dtype::F32, s.to_vec(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs the subcommand on `--device`.
pub fn run(args: LossArgs) -> Result<()> {
    if args.grads.is_some() && args.adapter.is_none() {
        bail!("--grads needs --adapter: without adapters there is nothing trainable");
    }
    run_on(args.device, args)
}

impl OnBackend for LossArgs {
    type Output = ();
    fn run<B: Backend>(self) -> Result<()> {
        loss_on::<Autodiff<B>>(self)
    }
}

fn loss_on<AB: AutodiffBackend>(args: LossArgs) -> Result<()> {
    let file = GroupFile::load(&args.group)?;
    let model = load_policy::<AB>(
        &args.model,
        args.adapter.as_deref(),
        args.quant.is_some(),
        args.double_quant,
    )?;
    let base = args.group.parent().unwrap_or(Path::new("."));
    let report = compute(&model, &args.model, &file, base)?;
    if let Some(path) = &args.grads {
        write_grads(path, &report.grads)?;
    }
    let metrics = report.metric_map();
    if args.json {
        let groups: Vec<serde_json::Value> = report
            .groups
            .iter()
            .map(|g| {
                serde_json::json!({"logps": g.logps, "entropy": g.entropy, "ref_logps": g.ref_logps})
            })
            .collect();
        let v = serde_json::json!({
            "loss": report.loss,
            "advantages": report.advantages,
            "groups": groups,
            "metrics": metrics,
            "grads": args.grads,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (k, v) in &metrics {
            println!("{k}\t{v:.6}");
        }
        println!("advantages\t{:?}", report.advantages);
        if let Some(p) = &args.grads {
            println!("grads\t{} ({} tensors)", p.display(), report.grads.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
