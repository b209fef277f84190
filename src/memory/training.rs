//! The predicted memory of a training run, before any weight loads (`medgrpo inspect memory`):
//! what a GRPO step holds at its peak, term by term, so a user learns before an out-of-memory
//! error which knob to turn.
//!
//! The terms, as this implementation holds them (everything dense is f32 today):
//! - the base weights: NF4 codes and scales where quantized, dense f32 elsewhere (the tied
//!   embedding, norms, the vision tower's convolution and positions);
//! - LoRA weights, their gradients and AdamW's two moments (f32 each);
//! - the sampler's KV cache: every layer's keys and values for the step's `prompts × G` rows of
//!   `prompt + completion` tokens, and one logits row per sampled row;
//! - the learner's activations kept for backward, for one batch of groups (the learner scores
//!   groups together up to `grpo::learner::LOGITS_BUDGET`): without gradient checkpointing every
//!   layer's, with it each layer's input plus one layer's worth;
//! - one vocabulary chunk of logits (`model::token_logps`).
//!
//! The per-token activation cost of a decoder layer counts what autodiff keeps: the norms'
//! inputs, the LoRA inputs (the frozen NF4 products keep nothing), q and k around their norms
//! and RoPE, the attention probabilities, and the MLP's gate, up and product.

use anyhow::{Context, Result};
use serde_json::Value;

use super::{MemoryOptions, memory_report};
use crate::config::Config;
use crate::grpo::learner::LOGITS_BUDGET;
use crate::model::token_logps::VOCAB_CHUNK;

/// Bytes of an f32.
const F32: usize = 4;

/// The process itself: code, tokenizer, allocator slack and the runtime's buffers.
pub const RUNTIME_BYTES: usize = 300 << 20;

/// One term of the prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// What it is.
    pub name: &'static str,
    /// Bytes.
    pub bytes: usize,
    /// How it was counted.
    pub note: String,
}

/// The predicted footprint of one training process (one device).
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// The terms, in the order a step meets them.
    pub terms: Vec<Term>,
    /// Activations kept with and without gradient checkpointing (for the advice).
    pub activations: [usize; 2],
}

/// The text decoder's sizes, from `config.json`.
#[derive(Debug, Clone, Copy)]
struct Text {
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
}

impl Text {
    fn of(config: &Value) -> Result<Self> {
        let t = config.get("text_config").unwrap_or(config);
        let get = |k: &str| -> Result<usize> {
            t.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .with_context(|| format!("config.json: text config has no integer `{k}`"))
        };
        let (hidden, heads) = (get("hidden_size")?, get("num_attention_heads")?);
        Ok(Self {
            hidden,
            inter: get("intermediate_size")?,
            layers: get("num_hidden_layers")?,
            heads,
            kv_heads: get("num_key_value_heads")?,
            head_dim: get("head_dim").unwrap_or(hidden / heads),
            vocab: get("vocab_size")?,
        })
    }

    /// f32 values autodiff keeps per token in one decoder layer that attends over `keys`
    /// positions: 6 hidden-wide tensors (norm inputs, LoRA inputs, residual branches), 4
    /// MLP-wide ones (gate, up, gelu, product), q and k before and after their norm and RoPE,
    /// the attention output, and the attention probabilities and scores.
    fn activation_values(&self, keys: usize) -> usize {
        let q = self.heads * self.head_dim;
        let kv = self.kv_heads * self.head_dim;
        6 * self.hidden + 4 * self.inter + 3 * q + 2 * kv + 2 * self.heads * keys
    }
}

/// The footprint of a training run of `config` on the model described by `model_config`
/// (its `config.json`), with prompts of `prompt_tokens` tokens (image tokens included).
pub fn footprint(config: &Config, model_config: &Value, prompt_tokens: usize) -> Result<Footprint> {
    let text = Text::of(model_config)?;
    let t = &config.training;
    let (g, completion) = (t.num_generations, t.max_completion_length);
    let prompts = t.prompts_per_step();
    let q = &config.quantization;
    let opts = MemoryOptions {
        nf4: q.load_in_4bit,
        double_quant: q.bnb_4bit_use_double_quant,
        blocksize: q.blocksize,
        quantize_vision: q.quantize_vision_tower,
        stored_bytes: 2,
        compute_bytes: F32,
        lora_r: Some(config.lora.r),
        lora_vision: config.lora.include_vision_tower,
    };
    let report = memory_report(model_config, &opts)?;
    let base: usize = report.components.iter().map(|c| c.memory_bytes).sum();
    let lora = report.trainable();
    let mut terms = vec![
        Term {
            name: "base weights",
            bytes: base,
            note: if q.load_in_4bit {
                "NF4 Linears + dense f32 rest"
            } else {
                "dense f32"
            }
            .into(),
        },
        Term {
            name: "LoRA + grads + AdamW",
            bytes: 4 * F32 * lora,
            note: format!("{lora} trainable params x 16 B"),
        },
    ];
    let rows = prompts * g;
    let seq = prompt_tokens + completion;
    let kv = text.layers
        * 2
        * text.kv_heads
        * text.head_dim
        * F32
        * (rows * seq + prompts * prompt_tokens);
    terms.push(Term {
        name: "sampler KV cache",
        bytes: kv,
        note: format!("{rows} rows x {seq} tokens x {} layers", text.layers),
    });
    terms.push(Term {
        name: "sampler logits",
        bytes: 2 * rows * text.vocab * F32,
        note: format!(
            "{rows} rows x {} vocab, logits and probabilities",
            text.vocab
        ),
    });
    let (acts, groups, tokens) = activations(&text, g, prompts, prompt_tokens, completion);
    let on = t.gradient_checkpointing;
    terms.push(Term {
        name: "learner activations",
        bytes: acts[usize::from(on)],
        note: format!(
            "{groups} group(s) per forward, {tokens} tokens, checkpointing {}",
            if on { "on" } else { "off" }
        ),
    });
    terms.push(Term {
        name: "logits chunk",
        bytes: 3 * tokens * VOCAB_CHUNK.min(text.vocab) * F32,
        note: format!(
            "{tokens} tokens x {} vocab rows",
            VOCAB_CHUNK.min(text.vocab)
        ),
    });
    terms.push(Term {
        name: "runtime",
        bytes: RUNTIME_BYTES,
        note: "code, tokenizer, allocator".into(),
    });
    Ok(Footprint {
        terms,
        activations: acts,
    })
}

/// Activations kept for backward by one learner forward, `[without, with]` gradient
/// checkpointing, the groups it scores together and its tokens.
fn activations(
    text: &Text,
    g: usize,
    prompts: usize,
    prompt_tokens: usize,
    completion: usize,
) -> ([usize; 2], usize, usize) {
    let per_group = g * completion * text.vocab;
    let groups = (LOGITS_BUDGET / per_group.max(1)).clamp(1, prompts.max(1));
    let prompt_part = groups * prompt_tokens;
    let completion_part = groups * g * completion;
    let tokens = prompt_part + completion_part;
    let one_layer = F32
        * (prompt_part * text.activation_values(prompt_tokens)
            + completion_part * text.activation_values(prompt_tokens + completion));
    let inputs = F32 * tokens * text.hidden * text.layers;
    (
        [one_layer * text.layers, inputs + one_layer],
        groups,
        tokens,
    )
}

impl Footprint {
    /// Total bytes.
    pub fn total(&self) -> usize {
        self.terms.iter().map(|t| t.bytes).sum()
    }

    /// The table, and when `device_bytes` is given, whether it fits and what to change.
    pub fn render(&self, device_bytes: Option<usize>) -> String {
        let gb = |b: usize| b as f64 / 1e9;
        let mut s = format!("{:<22} {:>10}  {}\n", "term", "GB", "how");
        for t in &self.terms {
            s += &format!("{:<22} {:>10.3}  {}\n", t.name, gb(t.bytes), t.note);
        }
        s += &format!("{:<22} {:>10.3}\n", "total", gb(self.total()));
        if let Some(dev) = device_bytes {
            s += &self.advice(dev);
        }
        s
    }

    /// Whether the run fits `device` bytes, and the knobs that would make it fit.
    fn advice(&self, device: usize) -> String {
        let total = self.total();
        if total <= device {
            return format!(
                "fits in {:.1} GB ({:.0}% used)\n",
                device as f64 / 1e9,
                100.0 * total as f64 / device as f64
            );
        }
        let [off, on] = self.activations;
        let mut s = format!(
            "does NOT fit in {:.1} GB: {:.1} GB over\n",
            device as f64 / 1e9,
            (total - device) as f64 / 1e9
        );
        if on < off
            && self
                .terms
                .iter()
                .any(|t| t.name == "learner activations" && t.bytes == off)
        {
            s += &format!(
                "  training.gradient_checkpointing: true saves {:.1} GB\n",
                (off - on) as f64 / 1e9
            );
        }
        s += "  then: fewer completions per step (per_device_train_batch_size x gradient_accumulation_steps: the sampler holds them all at once), a smaller training.num_generations or max_completion_length (a learner forward holds a whole group), quantization.load_in_4bit: true for the base\n";
        s
    }
}

#[cfg(test)]
mod tests;
