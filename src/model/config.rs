//! Gemma 3 configuration: `config.json` of `Gemma3ForConditionalGeneration` (text + vision) and of
//! text-only `Gemma3ForCausalLM`, in both transformers key styles, plus `generation_config.json`.
//!
//! Hub configs are sparse (MedGemma's `text_config` lists only a handful of keys), so every key
//! falls back to the default of transformers' `Gemma3TextConfig` / `SiglipVisionConfig` /
//! `Gemma3Config`; the defaults below are copied from those classes (transformers 5.24).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Attention kind of one decoder layer: local layers see a sliding window, global ones everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// `sliding_attention`: window of `sliding_window` keys, local RoPE base.
    Sliding,
    /// `full_attention`: all previous keys, global RoPE base with optional scaling.
    Full,
}

/// RoPE parameters of one layer type (`rope_parameters[layer_type]` in transformers 5).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Base wavelength (`rope_theta`).
    pub theta: f64,
    /// Linear position scaling factor (`rope_type: linear`); 1.0 means none.
    pub linear_factor: f64,
}

/// Text decoder configuration (`Gemma3TextConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Vocabulary size (rows of the tied embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Attention scores are scaled by `query_pre_attn_scalar^-0.5` (not `head_dim^-0.5`).
    pub query_pre_attn_scalar: f64,
    /// Keys visible to a local layer, the query included.
    pub sliding_window: usize,
    /// Per-layer attention kind.
    pub layer_types: Vec<LayerType>,
    /// RoPE of global (full attention) layers.
    pub rope_global: RopeConfig,
    /// RoPE of local (sliding) layers.
    pub rope_local: RopeConfig,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// `tanh` softcap of the final logits, when set (applied by the text-only model only, as in
    /// transformers).
    pub final_logit_softcapping: Option<f64>,
    /// `tanh` softcap of the attention scores, when set. Parsed but, like transformers' Gemma 3
    /// (which never hands it to the attention kernel), not applied.
    pub attn_logit_softcapping: Option<f64>,
    /// LM head shares the embedding matrix (always true for released Gemma 3).
    pub tie_word_embeddings: bool,
    /// Padding id (its embedding is looked up like any other).
    pub pad_token_id: u32,
}

/// SigLIP vision tower configuration (`SiglipVisionConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Encoder width.
    pub hidden_size: usize,
    /// Encoder MLP width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Encoder heads.
    pub num_attention_heads: usize,
    /// Input channels (3).
    pub num_channels: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// LayerNorm epsilon (also the projector's RMSNorm epsilon).
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches per side of the image grid.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// Whole-model configuration: text decoder plus, for the vision-language model, the vision side.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Text decoder.
    pub text: TextConfig,
    /// SigLIP tower; `None` for a text-only checkpoint.
    pub vision: Option<VisionConfig>,
    /// Soft tokens per image after the projector's pooling.
    pub mm_tokens_per_image: usize,
    /// `<image_soft_token>` id, replaced by projector output.
    pub image_token_id: u32,
    /// `<start_of_image>` id.
    pub boi_token_id: u32,
    /// `<end_of_image>` id.
    pub eoi_token_id: u32,
}

/// Sampling defaults and stop ids from `generation_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationDefaults {
    /// Every id that ends a completion (Gemma 3: `<eos>` and `<end_of_turn>`).
    pub eos_token_ids: Vec<u32>,
    /// Padding id.
    pub pad_token_id: u32,
    /// Beginning-of-sequence id.
    pub bos_token_id: u32,
    /// Whether the model card asks for sampling.
    pub do_sample: bool,
    /// Default temperature.
    pub temperature: f64,
    /// Default top-k (0 = off).
    pub top_k: usize,
    /// Default top-p (1.0 = off).
    pub top_p: f64,
    /// Default min-p (0.0 = off).
    pub min_p: f64,
}

fn get_usize(o: &Value, key: &str, default: usize) -> Result<usize> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .map(|x| x as usize)
            .with_context(|| format!("`{key}` must be a non-negative integer, got {v}")),
    }
}

fn get_f64(o: &Value, key: &str, default: f64) -> Result<f64> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .with_context(|| format!("`{key}` must be a number, got {v}")),
    }
}

fn get_opt_f64(o: &Value, key: &str) -> Result<Option<f64>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(v.as_f64().with_context(|| {
            format!("`{key}` must be a number or null, got {v}")
        })?)),
    }
}

fn get_bool(o: &Value, key: &str, default: bool) -> Result<bool> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_bool()
            .with_context(|| format!("`{key}` must be a boolean, got {v}")),
    }
}

/// Parses one `rope_parameters` entry or a 4.x `rope_scaling` object into (type, factor).
fn rope_scaling_factor(v: &Value, what: &str) -> Result<Option<f64>> {
    if v.is_null() {
        return Ok(None);
    }
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(get_f64(v, "factor", 1.0)?)),
        other => bail!("{what}: RoPE type `{other}` is not supported (only default and linear)"),
    }
}

impl TextConfig {
    /// Parses a `Gemma3TextConfig` JSON object (4.x or 5.x keys; absent keys take transformers'
    /// defaults).
    pub fn from_json(o: &Value) -> Result<Self> {
        let num_hidden_layers = get_usize(o, "num_hidden_layers", 26)?;
        let hidden_size = get_usize(o, "hidden_size", 2304)?;
        let num_attention_heads = get_usize(o, "num_attention_heads", 8)?;
        let layer_types = match o.get("layer_types") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(LayerType::Sliding),
                    Some("full_attention") => Ok(LayerType::Full),
                    _ => bail!(
                        "`layer_types` entries must be sliding_attention or full_attention, got {t}"
                    ),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => {
                let pattern = match o.get("sliding_window_pattern") {
                    Some(Value::Number(n)) => n.as_u64().unwrap_or(6) as usize,
                    _ => get_usize(o, "_sliding_window_pattern", 6)?,
                };
                if pattern == 0 {
                    bail!("`sliding_window_pattern` must be at least 1");
                }
                (0..num_hidden_layers)
                    .map(|i| {
                        if (i + 1) % pattern != 0 {
                            LayerType::Sliding
                        } else {
                            LayerType::Full
                        }
                    })
                    .collect()
            }
        };
        if layer_types.len() != num_hidden_layers {
            bail!(
                "`layer_types` has {} entries but num_hidden_layers is {num_hidden_layers}",
                layer_types.len()
            );
        }
        let (rope_global, rope_local) = match o.get("rope_parameters") {
            Some(Value::Object(p))
                if p.contains_key("full_attention") || p.contains_key("sliding_attention") =>
            {
                let parse = |key: &str, default_theta: f64| -> Result<RopeConfig> {
                    let v = p.get(key).cloned().unwrap_or(Value::Null);
                    let theta = if v.is_null() {
                        default_theta
                    } else {
                        get_f64(&v, "rope_theta", default_theta)?
                    };
                    let factor = rope_scaling_factor(&v, &format!("rope_parameters.{key}"))?;
                    Ok(RopeConfig {
                        theta,
                        linear_factor: factor.unwrap_or(1.0),
                    })
                };
                (
                    parse("full_attention", 1_000_000.0)?,
                    parse("sliding_attention", 10_000.0)?,
                )
            }
            Some(Value::Object(_)) => {
                // A flat rope_parameters dict applies to the global layers (like 4.x rope_scaling).
                let v = &o["rope_parameters"];
                let factor = rope_scaling_factor(v, "rope_parameters")?;
                (
                    RopeConfig {
                        theta: get_f64(v, "rope_theta", get_f64(o, "rope_theta", 1_000_000.0)?)?,
                        linear_factor: factor.unwrap_or(1.0),
                    },
                    RopeConfig {
                        theta: get_f64(o, "rope_local_base_freq", 10_000.0)?,
                        linear_factor: 1.0,
                    },
                )
            }
            _ => {
                let factor = match o.get("rope_scaling") {
                    Some(v) => rope_scaling_factor(v, "rope_scaling")?,
                    None => None,
                };
                (
                    RopeConfig {
                        theta: get_f64(o, "rope_theta", 1_000_000.0)?,
                        linear_factor: factor.unwrap_or(1.0),
                    },
                    RopeConfig {
                        theta: get_f64(o, "rope_local_base_freq", 10_000.0)?,
                        linear_factor: 1.0,
                    },
                )
            }
        };
        let act = o
            .get("hidden_activation")
            .and_then(Value::as_str)
            .unwrap_or("gelu_pytorch_tanh");
        if act != "gelu_pytorch_tanh" && act != "gelu_tanh" {
            bail!("`hidden_activation` {act} is not supported (Gemma 3 uses gelu_pytorch_tanh)");
        }
        if get_bool(o, "use_bidirectional_attention", false)? {
            bail!("`use_bidirectional_attention: true` (EmbeddingGemma) is not supported");
        }
        let cfg = Self {
            vocab_size: get_usize(o, "vocab_size", 262_208)?,
            hidden_size,
            intermediate_size: get_usize(o, "intermediate_size", 9216)?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: get_usize(o, "num_key_value_heads", 4)?,
            head_dim: get_usize(o, "head_dim", 256)?,
            query_pre_attn_scalar: get_f64(o, "query_pre_attn_scalar", 256.0)?,
            sliding_window: get_usize(o, "sliding_window", 4096)?,
            layer_types,
            rope_global,
            rope_local,
            rms_norm_eps: get_f64(o, "rms_norm_eps", 1e-6)?,
            final_logit_softcapping: get_opt_f64(o, "final_logit_softcapping")?,
            attn_logit_softcapping: get_opt_f64(o, "attn_logit_softcapping")?,
            tie_word_embeddings: get_bool(o, "tie_word_embeddings", true)?,
            pad_token_id: get_usize(o, "pad_token_id", 0)? as u32,
        };
        if cfg.num_key_value_heads == 0
            || !cfg
                .num_attention_heads
                .is_multiple_of(cfg.num_key_value_heads)
        {
            bail!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                cfg.num_attention_heads,
                cfg.num_key_value_heads
            );
        }
        Ok(cfg)
    }
}

impl VisionConfig {
    /// Parses a `SiglipVisionConfig` JSON object (absent keys take transformers' defaults).
    pub fn from_json(o: &Value) -> Result<Self> {
        let act = o
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu_pytorch_tanh");
        if act != "gelu_pytorch_tanh" && act != "gelu_tanh" {
            bail!("vision `hidden_act` {act} is not supported (SigLIP uses gelu_pytorch_tanh)");
        }
        if get_bool(o, "vision_use_head", false)? {
            bail!(
                "vision_use_head: true is not supported (Gemma 3 uses the patch states directly)"
            );
        }
        let cfg = Self {
            hidden_size: get_usize(o, "hidden_size", 768)?,
            intermediate_size: get_usize(o, "intermediate_size", 3072)?,
            num_hidden_layers: get_usize(o, "num_hidden_layers", 12)?,
            num_attention_heads: get_usize(o, "num_attention_heads", 12)?,
            num_channels: get_usize(o, "num_channels", 3)?,
            image_size: get_usize(o, "image_size", 224)?,
            patch_size: get_usize(o, "patch_size", 16)?,
            layer_norm_eps: get_f64(o, "layer_norm_eps", 1e-6)?,
        };
        if cfg.patch_size == 0 || !cfg.image_size.is_multiple_of(cfg.patch_size) {
            bail!(
                "vision image_size {} is not a multiple of patch_size {}",
                cfg.image_size,
                cfg.patch_size
            );
        }
        Ok(cfg)
    }
}

impl ModelConfig {
    /// Parses a whole `config.json` value: `Gemma3ForConditionalGeneration` (has `text_config`)
    /// or text-only `Gemma3ForCausalLM` (`model_type: gemma3_text`, flat keys).
    pub fn from_json(v: &Value) -> Result<Self> {
        if let Some(text) = v.get("text_config") {
            let text = TextConfig::from_json(text).context("text_config")?;
            let empty = serde_json::json!({});
            let vision_json = v
                .get("vision_config")
                .filter(|x| x.is_object())
                .unwrap_or(&empty);
            let vision = VisionConfig::from_json(vision_json).context("vision_config")?;
            let mm = get_usize(v, "mm_tokens_per_image", 256)?;
            let side = (mm as f64).sqrt().round() as usize;
            let patches = vision.patches_per_side();
            if side * side != mm || side == 0 || !patches.is_multiple_of(side) {
                bail!(
                    "mm_tokens_per_image {mm} must be a square whose side divides the patch grid side {patches}"
                );
            }
            let image_token_id = match v.get("image_token_index") {
                Some(x) if !x.is_null() => get_usize(v, "image_token_index", 262_144)?,
                _ => get_usize(v, "image_token_id", 262_144)?,
            } as u32;
            Ok(Self {
                text,
                vision: Some(vision),
                mm_tokens_per_image: mm,
                image_token_id,
                boi_token_id: get_usize(v, "boi_token_index", 255_999)? as u32,
                eoi_token_id: get_usize(v, "eoi_token_index", 256_000)? as u32,
            })
        } else {
            Ok(Self {
                text: TextConfig::from_json(v)?,
                vision: None,
                mm_tokens_per_image: 0,
                image_token_id: u32::MAX,
                boi_token_id: u32::MAX,
                eoi_token_id: u32::MAX,
            })
        }
    }

    /// Reads `DIR/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Self::from_json(&v).with_context(|| format!("in {}", path.display()))
    }
}

impl GenerationDefaults {
    /// Parses `generation_config.json`; a scalar `eos_token_id` becomes a one-element list.
    pub fn from_json(v: &Value) -> Result<Self> {
        let eos_token_ids = match v.get("eos_token_id") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|x| x as u32)
                        .with_context(|| format!("eos_token_id entry {x}"))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(Value::Number(n)) => vec![n.as_u64().context("eos_token_id")? as u32],
            _ => vec![1],
        };
        Ok(Self {
            eos_token_ids,
            pad_token_id: get_usize(v, "pad_token_id", 0)? as u32,
            bos_token_id: get_usize(v, "bos_token_id", 2)? as u32,
            do_sample: get_bool(v, "do_sample", false)?,
            temperature: get_f64(v, "temperature", 1.0)?,
            top_k: get_usize(v, "top_k", 50)?,
            top_p: get_f64(v, "top_p", 1.0)?,
            min_p: get_f64(v, "min_p", 0.0)?,
        })
    }

    /// Reads `DIR/generation_config.json`, or falls back to the model config's eos ids (and Gemma
    /// defaults) when the file is absent.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("generation_config.json");
        if !path.exists() {
            let cfg: Value = std::fs::read_to_string(dir.join("config.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let src = cfg
                .get("text_config")
                .filter(|t| t.get("eos_token_id").is_some())
                .unwrap_or(&cfg);
            return Self::from_json(src);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Self::from_json(&v).with_context(|| format!("in {}", path.display()))
    }
}

#[cfg(test)]
mod tests;
