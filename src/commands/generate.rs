//! `medgrpo generate`: sampling from the model with a shared-prefix KV cache.
//!
//! JSON output (`--json`), one object:
//! ```json
//! {"model": "DIR", "prompt_ids": [2, 105, ...],
//!  "completions": [{"ids": [...], "text": "...", "logprobs": [...], "finish_reason": "stop"}]}
//! ```
//! `text` is decoded with special tokens skipped (what the reward scorer sees); `logprobs` are
//! `log_softmax(logits / temperature)` at each generated id (TRL's definition); `finish_reason` is
//! `stop` (an eos id of generation_config.json ended it, the id is included) or `length`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::Args;

use crate::config::Device;
use crate::device::{OnBackend, run_on};
use crate::model::chat_template::{ChatTemplate, Message, Part};
use crate::model::config::GenerationDefaults;
use crate::model::gemma3::Gemma3;
use crate::model::generate::{Prompt, SamplingOptions};
use crate::model::processor::{Gemma3Processor, ImageU8};
use crate::model::tokenizer::GemmaTokenizer;

/// CPU backend of the commands.
pub type Cpu = burn::backend::Flex;

/// Arguments of `medgrpo generate`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo generate --model DIR --image cxr.png --prompt 'Is there an effusion?' --json"
)]
pub struct GenerateArgs {
    /// Model, image and prompt.
    #[command(flatten)]
    pub input: PromptArgs,
    /// Maximum completion length.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Argmax decoding.
    #[arg(long)]
    pub greedy: bool,
    /// Sampling temperature (default: generation_config.json, else 1).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass (default: generation_config.json).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Top-k cut (0 = off; default: generation_config.json).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Min-p cut (0 = off; default: generation_config.json).
    #[arg(long)]
    pub min_p: Option<f64>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Completions per prompt (they share the prompt's prefill).
    #[arg(long, default_value_t = 1)]
    pub num_return_sequences: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `generate` and `logprobs` both take: the model and the prompt, given as text (with an
/// optional system message and image) or as ids.
#[derive(Debug, Args)]
pub struct PromptArgs {
    /// Hugging Face snapshot directory (config.json, safetensors, tokenizer, chat template).
    #[arg(long)]
    pub model: PathBuf,
    /// Image for the user turn (PNG/JPEG); resized to the tower's input size.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// User message, rendered with the model's chat template.
    #[arg(long, conflicts_with = "input_ids")]
    pub prompt: Option<String>,
    /// System message (Gemma 3's template folds it into the first user turn).
    #[arg(long)]
    pub system: Option<String>,
    /// Prompt token ids, already expanded like the HF processor output: `1,2,3` or a file
    /// holding such a list or a JSON array.
    #[arg(long)]
    pub input_ids: Option<String>,
    /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors) to apply.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Quantize the base as the learner sees it (`nf4`, bitsandbytes-identical).
    #[arg(long, value_parser = ["nf4"])]
    pub quant: Option<String>,
    /// With `--quant nf4`: also quantize the absmax statistics (bnb_4bit_use_double_quant).
    #[arg(long, requires = "quant")]
    pub double_quant: bool,
    /// Where the model runs: `cpu` (burn flex) or `cuda` (a binary built with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
}

impl PromptArgs {
    /// The loaded model and the prompt (ids and image features) these arguments describe, on
    /// backend `B`'s default device.
    pub fn load_prompt<B: Backend>(&self) -> Result<(Loaded<B>, Prompt<B>)> {
        let loaded = load_with::<B>(
            &self.model,
            self.adapter.as_deref(),
            self.quant.is_some(),
            self.double_quant,
        )?;
        let ids = prompt_ids(
            &loaded,
            &self.model,
            self.prompt.as_deref(),
            self.system.as_deref(),
            self.input_ids.as_deref(),
            self.image.is_some(),
        )?;
        let image_features = image_features(&loaded, &self.model, self.image.as_deref())?;
        Ok((
            loaded,
            Prompt {
                ids,
                image_features,
                seed: 0,
            },
        ))
    }
}

/// Parses `1,2,3` / whitespace-separated ids / a JSON array, given inline or as a file path.
pub fn parse_ids(spec: &str) -> Result<Vec<u32>> {
    let text = if Path::new(spec).is_file() {
        std::fs::read_to_string(spec).with_context(|| format!("reading ids from {spec}"))?
    } else {
        spec.to_string()
    };
    let t = text.trim();
    if t.starts_with('[') {
        return serde_json::from_str(t).with_context(|| format!("parsing the JSON id list {spec}"));
    }
    t.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .with_context(|| format!("`{s}` is not a token id (in {spec})"))
        })
        .collect()
}

/// Decodes an image file and preprocesses it like the Gemma 3 image processor (the snapshot's
/// processor settings: RGB, bilinear resize, rescale, normalize) into `[1, 3, H, W]`.
pub fn load_pixels<B: Backend>(
    path: &Path,
    proc: &Gemma3Processor,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let img = image::open(path)
        .with_context(|| format!("decoding image {}", path.display()))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let view = ImageU8 {
        height: h,
        width: w,
        channels: 3,
        data: img.as_raw(),
    };
    let px = proc
        .preprocess_image(&view)
        .with_context(|| format!("preprocessing {}", path.display()))?;
    let cfg = proc.config();
    Ok(Tensor::from_data(
        TensorData::new(px, [1, 3, cfg.height, cfg.width]),
        device,
    ))
}

/// Everything a command needs to turn user input into a model prompt.
pub struct Loaded<B: Backend> {
    /// The model.
    pub model: Gemma3<B>,
    /// Sampling defaults and eos ids.
    pub generation: GenerationDefaults,
    /// Tokenizer, when the snapshot has one.
    pub tokenizer: Option<GemmaTokenizer>,
}

/// Loads model, generation config and (if present) tokenizer of a snapshot.
pub fn load<B: Backend>(dir: &Path) -> Result<Loaded<B>> {
    load_with::<B>(dir, None, false, false)
}

/// [`load`] with a PEFT adapter applied and/or the base quantized to NF4 (blocks of 64), so a
/// model can be inspected exactly as the learner sees it.
pub fn load_with<B: Backend>(
    dir: &Path,
    adapter: Option<&Path>,
    nf4: bool,
    double_quant: bool,
) -> Result<Loaded<B>> {
    let model = load_model::<B>(dir, adapter, nf4, double_quant)?;
    let generation = GenerationDefaults::from_dir(dir)?;
    let tokenizer = if dir.join("tokenizer.json").exists() {
        Some(GemmaTokenizer::from_dir(dir)?)
    } else {
        None
    };
    Ok(Loaded {
        model,
        generation,
        tokenizer,
    })
}

/// Loads a snapshot on backend `B` with a PEFT adapter and/or an NF4 base (bitsandbytes'
/// blocksize 64, vision tower included), as the CLI's `--adapter` / `--quant` flags ask.
pub fn load_model<B: burn::prelude::Backend>(
    dir: &Path,
    adapter: Option<&Path>,
    nf4: bool,
    double_quant: bool,
) -> Result<Gemma3<B>> {
    use crate::lora::adapter::Adapter;
    use crate::lora::attach::{AdapterSource, QuantLoraLoad};
    use crate::quant::nf4::Nf4Config;
    let adapters = match adapter {
        Some(a) => AdapterSource::Peft(Adapter::load(a)?),
        None => AdapterSource::None,
    };
    let quant = nf4.then_some(Nf4Config {
        blocksize: 64,
        double_quant,
    });
    let mut hook = QuantLoraLoad::new(quant, true, adapters);
    let model = Gemma3::<B>::load_with(dir, &Default::default(), &mut hook)?;
    hook.check_all_used()?;
    Ok(model)
}

/// Builds prompt ids: `--input-ids` as given, or the chat template applied to `--system` /
/// `--prompt` (plus an image placeholder, expanded by [`Gemma3Processor`] to
/// `\n\n<start_of_image>` + N × `<image_soft_token>` + `<end_of_image>\n\n`).
pub fn prompt_ids<B: Backend>(
    loaded: &Loaded<B>,
    dir: &Path,
    prompt: Option<&str>,
    system: Option<&str>,
    input_ids: Option<&str>,
    has_image: bool,
) -> Result<Vec<u32>> {
    if let Some(spec) = input_ids {
        return parse_ids(spec);
    }
    let Some(prompt) = prompt else {
        bail!("give --prompt TEXT or --input-ids LIST")
    };
    let Some(tok) = &loaded.tokenizer else {
        bail!("{} has no tokenizer.json: use --input-ids", dir.display())
    };
    let template = ChatTemplate::from_dir(dir)?;
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(Message::text("system", s));
    }
    let mut parts = Vec::new();
    if has_image {
        parts.push(Part::Image);
    }
    parts.push(Part::text(prompt));
    messages.push(Message::parts("user", parts));
    if has_image {
        // Gemma3Processor: image placeholder expanded at the text level, then tokenized.
        let proc = Gemma3Processor::from_dir(dir)?;
        let (_, enc) = proc.apply_chat_template(&messages, true)?;
        return Ok(enc.input_ids);
    }
    tok.encode(&template.render(&messages, true)?)
}

/// Image features of `--image`, flattened to `[tokens, hidden]`.
pub fn image_features<B: Backend>(
    loaded: &Loaded<B>,
    dir: &Path,
    image: Option<&Path>,
) -> Result<Option<Tensor<B, 2>>> {
    let Some(path) = image else { return Ok(None) };
    let Some(v) = &loaded.model.config.vision else {
        bail!("this model is text-only: --image is not supported")
    };
    let proc = Gemma3Processor::from_dir(dir)?;
    if (proc.config().height, proc.config().width) != (v.image_size, v.image_size) {
        bail!(
            "processor resizes to {}x{} but the vision tower takes {}x{}",
            proc.config().height,
            proc.config().width,
            v.image_size,
            v.image_size
        );
    }
    let px = load_pixels::<B>(path, &proc, &Default::default())?;
    let f = loaded.model.image_features(px)?;
    let [n, t, d] = f.dims();
    Ok(Some(f.reshape([n * t, d])))
}

/// Runs the subcommand on `--device`.
pub fn run(args: GenerateArgs) -> Result<()> {
    run_on(args.input.device, args)
}

impl OnBackend for GenerateArgs {
    type Output = ();
    fn run<B: Backend>(self) -> Result<()> {
        generate_on::<B>(self)
    }
}

fn generate_on<B: Backend>(args: GenerateArgs) -> Result<()> {
    let (loaded, mut prompt) = args.input.load_prompt::<B>()?;
    prompt.seed = args.seed;
    let ids = prompt.ids.clone();
    let g = &loaded.generation;
    let opts = SamplingOptions {
        greedy: args.greedy,
        temperature: args.temperature.unwrap_or(g.temperature),
        top_k: args.top_k.unwrap_or(g.top_k),
        top_p: args.top_p.unwrap_or(g.top_p),
        min_p: args.min_p.unwrap_or(g.min_p),
        max_new_tokens: args.max_new_tokens,
        eos_token_ids: g.eos_token_ids.clone(),
        pad_token_id: g.pad_token_id,
    };
    if opts.temperature <= 0.0 {
        bail!("--temperature must be positive (use --greedy for argmax decoding)");
    }
    let out = loaded
        .model
        .generate(&[prompt], args.num_return_sequences, &opts)?;
    let decode = |ids: &[u32]| -> Result<Option<String>> {
        loaded
            .tokenizer
            .as_ref()
            .map(|t| t.decode(ids, true))
            .transpose()
    };
    if args.json {
        let completions = out[0]
            .iter()
            .map(|c| {
                Ok(serde_json::json!({
                    "ids": c.ids,
                    "text": decode(&c.ids)?,
                    "logprobs": c.logprobs,
                    "finish_reason": if c.stopped { "stop" } else { "length" },
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let v = serde_json::json!({"model": args.input.model, "prompt_ids": ids, "completions": completions});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (i, c) in out[0].iter().enumerate() {
            let text = decode(&c.ids)?.unwrap_or_else(|| format!("{:?}", c.ids));
            let why = if c.stopped { "stop" } else { "length" };
            println!(
                "--- completion {i} ({} tokens, {why}) ---\n{text}",
                c.ids.len()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_from_lists_json_and_files() {
        assert_eq!(parse_ids("1,2, 3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_ids("[4, 5]").unwrap(), vec![4, 5]);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "7 8\n9\n").unwrap();
        assert_eq!(
            parse_ids(f.path().to_str().unwrap()).unwrap(),
            vec![7, 8, 9]
        );
        assert!(format!("{:#}", parse_ids("1,x").unwrap_err()).contains("`x`"));
    }
}
