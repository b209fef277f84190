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
use crate::data::record::{Record, load_split};
use crate::grpo::optim::{NamedAdamW, StepOptimizer};
use crate::grpo::prompt::{PromptBuilder, PromptInput};
use crate::lora::adapter::Adapter;
use crate::lora::extract::adapter_of;
use crate::lora::load::{ModelLoad, adapter_config};
use crate::model::config::VisionConfig;
use crate::model::gemma3::Gemma3;
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
    let mut base_cfg = config.clone();
    base_cfg.model.path = base.display().to_string();
    let mut model = ModelLoad::policy(&base_cfg, None).load::<AB>(base, device)?;
    let examples = Examples::new(config, base, model.config.vision.as_ref())?;
    let mut optimizer = NamedAdamW::<AB>::new(&config.training);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x3A2D_57A2);
    let bar = progress_bar(ws.steps);
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    for step in 0..ws.steps {
        let mut acc = GradientsAccumulator::<_>::new();
        let mut step_loss = 0.0;
        for b in 0..ws.batch {
            let r = &split.records[(step * ws.batch + b) % split.records.len()];
            let loss = examples.loss(&model, r, &mut rng, ws.batch)?;
            step_loss += loss.clone().into_scalar().elem::<f64>();
            acc.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
        }
        model = optimizer.apply(model, acc.grads(), ws.learning_rate)?.0;
        if step == 0 {
            first_loss = step_loss;
        }
        last_loss = step_loss;
        bar.set_message(format!("loss {step_loss:.3}"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_merged(base, &adapter_of(&model, adapter_config(&base_cfg)), out)?;
    std::fs::remove_dir_all(&base_dir)?;
    Ok(WarmStartSummary {
        first_loss,
        last_loss,
        steps: ws.steps,
    })
}

/// The warm start's bar.
fn progress_bar(steps: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] step {pos}/{len}  {msg}  ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix("warm start");
    bar
}

/// The supervised examples: each record's training prompt with the format target around a
/// random letter.
struct Examples {
    builder: PromptBuilder,
    processor: Arc<Gemma3Processor>,
    end_of_turn: u32,
    /// The images, when the model has a vision tower.
    loader: Option<Loader>,
}

impl Examples {
    fn new(config: &Config, base: &Path, vision: Option<&VisionConfig>) -> Result<Self> {
        let processor = Arc::new(Gemma3Processor::from_dir(base)?);
        let end_of_turn = processor
            .tokenizer()
            .special()
            .end_of_turn
            .context("the tokenizer has no <end_of_turn>")?;
        let loader = vision
            .map(|v| Loader::open(config, v.image_size as u32))
            .transpose()?;
        Ok(Self {
            builder: PromptBuilder::new(processor.clone(), config.prompt.clone()),
            processor,
            end_of_turn,
            loader,
        })
    }

    /// The negative log-likelihood of record `r`'s target (a letter drawn with `rng`), per
    /// target token and per example of a batch of `batch`.
    fn loss<AB: AutodiffBackend>(
        &self,
        model: &Gemma3<AB>,
        r: &Record,
        rng: &mut ChaCha8Rng,
        batch: usize,
    ) -> Result<Tensor<AB, 1>> {
        let with_image = self.loader.is_some() && !r.image_keys.is_empty();
        let built = self.builder.build(&PromptInput {
            has_image: with_image,
            ..PromptInput::from(r)
        })?;
        let image_features = match (&self.loader, with_image) {
            (Some(loader), true) => {
                let px = loader.record_pixels(r)?.to_tensor::<AB>(&model.device());
                let f = model.image_features(px)?;
                let [_, m, d] = f.dims();
                Some(f.reshape([m, d]).detach())
            }
            _ => None,
        };
        let letter = built.options[rng.random_range(0..built.options.len())].letter;
        let mut ids = self.processor.tokenizer().encode(&target_text(letter))?;
        ids.push(self.end_of_turn);
        let prompt = Prompt {
            ids: built.input_ids,
            image_features,
            seed: 0,
        };
        let logps = model.completion_logprobs(&prompt, &[ids.clone()], 1.0)?;
        Ok(logps.sum().neg().div_scalar((ids.len() * batch) as f64))
    }
}

/// Merges `adapter` into the snapshot `base` and moves the result to `out`, replacing it.
fn write_merged(base: &Path, adapter: &Adapter, out: &Path) -> Result<()> {
    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    crate::lora::merge::merge_snapshot(base, adapter, &tmp)?;
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("replacing the old warm start in {}", out.display()))?;
    }
    std::fs::rename(&tmp, out)?;
    Ok(())
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
