//! What the model commands share: one flattened set of model flags (`--model`, `--adapter`,
//! `--quant`, `--double-quant`, `--device`) that become a [`ModelLoad`], and the prompt flags
//! of `generate` and `logprobs`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::Args;

use crate::config::{Device, QuantizationConfig};
use crate::lora::load::{Adapters, ModelLoad};
use crate::model::config::GenerationDefaults;
use crate::model::gemma3::Gemma3;
use crate::model::generate::Prompt;
use crate::model::tokenizer::GemmaTokenizer;
use crate::model::user_prompt::{chat_prompt_ids, image_features};

/// The model a command runs: snapshot, adapter, base quantization and device.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Hugging Face snapshot directory (config.json, safetensors, tokenizer, chat template).
    #[arg(long)]
    pub model: PathBuf,
    /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors) to apply.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Quantize the base as the learner sees it (`nf4`, bitsandbytes-identical, with the
    /// pipeline's defaults: blocks of 64, vision tower included).
    #[arg(long, value_parser = ["nf4"])]
    pub quant: Option<String>,
    /// With `--quant nf4`: also quantize the absmax statistics (bnb_4bit_use_double_quant).
    #[arg(long, requires = "quant")]
    pub double_quant: bool,
    /// Where the model runs: `cpu` (burn flex) or `cuda` (a binary built with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
}

impl ModelArgs {
    /// How these flags load the model: the pipeline's `quantization:` defaults with
    /// `load_in_4bit` and double quantization as given, and the adapter.
    pub fn model_load(&self) -> ModelLoad {
        let q = QuantizationConfig {
            load_in_4bit: self.quant.is_some(),
            bnb_4bit_use_double_quant: self.double_quant,
            ..QuantizationConfig::default()
        };
        let adapters = self.adapter.clone().map_or(Adapters::None, Adapters::Peft);
        ModelLoad::base(&q).with_adapters(adapters)
    }

    /// The model on backend `B`'s default device.
    pub fn load_model<B: Backend>(&self) -> Result<Gemma3<B>> {
        self.model_load().load(&self.model, &Default::default())
    }

    /// The model with the snapshot's generation defaults and tokenizer (when it has one).
    pub fn load<B: Backend>(&self) -> Result<Loaded<B>> {
        let dir = &self.model;
        let tokenizer = if dir.join("tokenizer.json").exists() {
            Some(GemmaTokenizer::from_dir(dir)?)
        } else {
            None
        };
        Ok(Loaded {
            model: self.load_model()?,
            generation: GenerationDefaults::from_dir(dir)?,
            tokenizer,
        })
    }
}

/// A loaded snapshot: what a command needs to turn user input into a model prompt.
pub struct Loaded<B: Backend> {
    /// The model.
    pub model: Gemma3<B>,
    /// Sampling defaults and eos ids.
    pub generation: GenerationDefaults,
    /// Tokenizer, when the snapshot has one.
    pub tokenizer: Option<GemmaTokenizer>,
}

/// What `generate` and `logprobs` both take: the model and the prompt, given as text (with an
/// optional system message and image) or as ids.
#[derive(Debug, Args)]
pub struct PromptArgs {
    /// Model, adapter, quantization, device.
    #[command(flatten)]
    pub model: ModelArgs,
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
}

impl PromptArgs {
    /// The loaded model and the prompt (ids and image features) these arguments describe, on
    /// backend `B`'s default device.
    pub fn load_prompt<B: Backend>(&self) -> Result<(Loaded<B>, Prompt<B>)> {
        let loaded = self.model.load::<B>()?;
        let dir = &self.model.model;
        let ids = match (&self.input_ids, &self.prompt) {
            (Some(spec), _) => parse_ids(spec)?,
            (None, Some(prompt)) => {
                let Some(tok) = &loaded.tokenizer else {
                    bail!("{} has no tokenizer.json: use --input-ids", dir.display())
                };
                chat_prompt_ids(
                    tok,
                    dir,
                    prompt,
                    self.system.as_deref(),
                    self.image.is_some(),
                )?
            }
            (None, None) => bail!("give --prompt TEXT or --input-ids LIST"),
        };
        let image_features = match &self.image {
            Some(path) => Some(image_features(&loaded.model, dir, path)?),
            None => None,
        };
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

#[cfg(test)]
mod tests;
