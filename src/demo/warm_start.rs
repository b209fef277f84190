//! The demo's supervised warm start: teaches a randomly initialised model the answer
//! *format* before GRPO, because a random 512-token model never writes a `<SOLUTION>` block
//! by chance and GRPO cannot learn from rewards that are all zero.
//!
//! The targets are `<start_working_out>opacity<end_working_out><SOLUTION>X</SOLUTION>` with
//! the letter `X` drawn at random (seeded), never the correct one: the warm-started model
//! answers in the right form at chance accuracy, and everything it later learns about *which*
//! letter comes from GRPO's rewards. LoRA adapters are trained with cross-entropy on the
//! target tokens, then merged into a full snapshot written to `model.path`, so GRPO starts
//! fresh adapters on top of it exactly as it would on MedGemma.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Config, WarmStartConfig};
use crate::data::loader::Loader;
use crate::data::record::load_split;
use crate::grpo::optim::NamedAdamW;
use crate::grpo::optim::StepOptimizer;
use crate::grpo::prompt::{PromptBuilder, PromptInput};
use crate::lora::extract::adapter_of;
use crate::lora::load::{ModelLoad, adapter_config};
use crate::model::generate::Prompt;
use crate::model::processor::Gemma3Processor;

/// The reasoning every warm-start target carries: fixed, so the only varying token is the
/// (random) letter.
pub const TARGET_REASONING: &str = "opacity";

/// The file in the written snapshot that records the settings it was made with; a later run
/// with the same settings reuses the snapshot.
pub const STAMP: &str = "warm_start.json";

/// What a warm start did.
#[derive(Debug, Clone)]
pub struct WarmStartSummary {
    /// Mean target-token cross-entropy of the first and the last step.
    pub first_loss: f64,
    /// See `first_loss`.
    pub last_loss: f64,
    /// Steps run.
    pub steps: usize,
}

/// The target completion for one prompt.
pub fn target_text(letter: char) -> String {
    format!("<start_working_out>{TARGET_REASONING}<end_working_out><SOLUTION>{letter}</SOLUTION>")
}

fn stamp_of(config: &Config, ws: &WarmStartConfig) -> serde_json::Value {
    let demo = config.demo.as_ref();
    serde_json::json!({
        "warm_start": ws,
        // The data it trains on: the whole demo section but the warm start itself.
        "data": demo.map(|d| (d.task, d.image_size, d.train_questions, d.shuffle_options)),
        "prompt": config.prompt,
        "seed": config.seed,
        "train": config.data.train,
        "lora": {"r": config.lora.r, "alpha": config.lora.lora_alpha,
                 "targets": config.lora.target_modules},
    })
}

/// Writes the warm-started snapshot to `model.path` unless one made with the same settings is
/// already there. Returns `None` when nothing had to be done (no warm start configured, or
/// reused).
pub fn ensure(config: &Config) -> Result<Option<WarmStartSummary>> {
    let Some(ws) = config.demo.as_ref().and_then(|d| d.warm_start.as_ref()) else {
        return Ok(None);
    };
    let out = Path::new(&config.model.path);
    let stamp = stamp_of(config, ws);
    if let Ok(text) = std::fs::read_to_string(out.join(STAMP))
        && serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .as_ref()
            == Some(&stamp)
        && out.join("model.safetensors").exists()
    {
        return Ok(None);
    }
    if Path::new(&ws.base_model).canonicalize().ok() == out.canonicalize().ok() {
        bail!(
            "demo.warm_start.base_model and model.path are both {}: the warm-started model needs its own directory",
            out.display()
        );
    }
    eprintln!(
        "demo: warm start ({} steps) teaches {} the answer format with random letters -> {}",
        ws.steps,
        ws.base_model,
        out.display()
    );
    type AB = burn::backend::Autodiff<burn::backend::Flex>;
    let summary = run::<AB>(config, ws, out, &Default::default())?;
    std::fs::write(out.join(STAMP), serde_json::to_string_pretty(&stamp)?)?;
    eprintln!(
        "demo: warm start done: target loss {:.3} -> {:.3}",
        summary.first_loss, summary.last_loss
    );
    Ok(Some(summary))
}

/// Trains LoRA adapters on the format targets and writes base + merged adapters to `out`.
pub fn run<AB: AutodiffBackend>(
    config: &Config,
    ws: &WarmStartConfig,
    out: &Path,
    device: &AB::Device,
) -> Result<WarmStartSummary> {
    let split = load_split(Path::new(&config.data.train), &config.data)
        .with_context(|| format!("reading data.train {}", config.data.train))?;
    if split.records.is_empty() || ws.steps == 0 || ws.batch == 0 {
        bail!("demo.warm_start needs training records, steps > 0 and batch > 0");
    }
    let base_dir = out.with_extension("base.tmp");
    scaled_base(Path::new(&ws.base_model), &base_dir, ws.logit_scale)?;
    let base = base_dir.as_path();
    let processor = Arc::new(Gemma3Processor::from_dir(base)?);
    let builder = PromptBuilder::new(processor.clone(), config.prompt.clone());
    let tokenizer = processor.tokenizer();
    let end_of_turn = tokenizer
        .special()
        .end_of_turn
        .context("the tokenizer has no <end_of_turn>")?;
    let mut base_cfg = config.clone();
    base_cfg.model.path = base.display().to_string();
    let mut model = ModelLoad::policy(&base_cfg, None).load::<AB>(base, device)?;
    let adapter_config = adapter_config(&base_cfg);
    let vision_size = model.config.vision.as_ref().map(|v| v.image_size as u32);
    let loader = Loader::open(
        config,
        vision_size.unwrap_or(config.shards.image_size as u32),
    )?;
    let mut optimizer = NamedAdamW::<AB>::new(&config.training);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x3A2D_57A2);
    let bar = indicatif::ProgressBar::new(ws.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] step {pos}/{len}  {msg}  ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix("warm start");
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    for step in 0..ws.steps {
        let mut acc = GradientsAccumulator::<_>::new();
        let mut step_loss = 0.0;
        for b in 0..ws.batch {
            let r = &split.records[(step * ws.batch + b) % split.records.len()];
            let with_image = vision_size.is_some() && !r.image_keys.is_empty();
            let built = builder.build(&PromptInput {
                has_image: with_image,
                ..PromptInput::from(r)
            })?;
            let image_features = if with_image {
                let px = loader.record_pixels(r)?.to_tensor::<AB>(device);
                let f = model.image_features(px)?;
                let [_, m, d] = f.dims();
                Some(f.reshape([m, d]).detach())
            } else {
                None
            };
            let letter = built.options[rng.random_range(0..built.options.len())].letter;
            let mut ids = tokenizer.encode(&target_text(letter))?;
            ids.push(end_of_turn);
            let prompt = Prompt {
                ids: built.input_ids,
                image_features,
                seed: 0,
            };
            let logps = model.completion_logprobs(&prompt, &[ids.clone()], 1.0)?;
            let loss = logps.sum().neg().div_scalar((ids.len() * ws.batch) as f64);
            step_loss += loss.clone().into_scalar().elem::<f64>();
            acc.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
        }
        let (m, _) = optimizer.apply(model, acc.grads(), ws.learning_rate)?;
        model = m;
        if step == 0 {
            first_loss = step_loss;
        }
        last_loss = step_loss;
        bar.set_message(format!("loss {step_loss:.3}"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let adapter = adapter_of(&model, adapter_config);
    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    crate::lora::merge::merge_snapshot(base, &adapter, &tmp)?;
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("replacing the old warm start in {}", out.display()))?;
    }
    std::fs::rename(&tmp, out)?;
    std::fs::remove_dir_all(&base_dir)?;
    Ok(WarmStartSummary {
        first_loss,
        last_loss,
        steps: ws.steps,
    })
}

/// Names the final text norm has in the checkpoint layouts `Gemma3::load` accepts.
const FINAL_NORM: [&str; 3] = [
    "language_model.model.norm.weight",
    "model.language_model.norm.weight",
    "model.norm.weight",
];

/// Copies the snapshot `from` to `to` with the final norm's gain `(1 + w)` multiplied by
/// `scale` (Gemma's RMSNorm scales by `1 + weight`).
pub fn scaled_base(from: &Path, to: &Path, scale: f32) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let name = path.file_name().context("file name")?;
        if path.is_file()
            && name != "model.safetensors"
            && !name.to_string_lossy().starts_with("reference")
        {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    let src = from.join("model.safetensors");
    let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", src.display()))?;
    let mut scaled = None;
    let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = Vec::new();
    for (name, view) in st.tensors() {
        if FINAL_NORM.contains(&name.as_str()) {
            if view.dtype() != safetensors::Dtype::F32 {
                bail!(
                    "{}: {name} is {:?}; the demo base must be f32",
                    src.display(),
                    view.dtype()
                );
            }
            let w: Vec<u8> = view
                .data()
                .chunks_exact(4)
                .flat_map(|b| {
                    let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    (scale * (1.0 + v) - 1.0).to_le_bytes()
                })
                .collect();
            scaled = Some((name, view.shape().to_vec(), w));
        } else {
            tensors.push((name, view));
        }
    }
    let (name, shape, data) =
        scaled.with_context(|| format!("{}: no final norm weight", src.display()))?;
    tensors.push((
        name,
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &data)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
    ));
    safetensors::serialize_to_file(tensors, None, &to.join("model.safetensors"))
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", to.display()))?;
    Ok(())
}
