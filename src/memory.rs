//! Parameter counts and memory of a Gemma 3 checkpoint computed from `config.json` alone, per
//! component, as stored (checkpoint dtype) and in memory (NF4 where quantized, dense params in
//! the compute dtype), with LoRA trainable parameters and their optimizer state.
//!
//! The tensor list mirrors transformers' `Gemma3ForConditionalGeneration` (text decoder, SigLIP
//! tower, projector; tied LM head counted once) and `Gemma3ForCausalLM` (text only). It has its
//! own small config reader on purpose: it must work on a bare `config.json` without weights and
//! independently of the model code. NF4 bytes follow bitsandbytes' storage: packed codes
//! (`ceil(n/2)`), f32 absmax per block, or with double quant one byte per block plus an f32
//! absmax per 256 blocks, the 256-entry map and the f32 offset.

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::lora::targets::TargetSelector;
use crate::quant::nf4::NESTED_BLOCKSIZE;

/// One parameter tensor of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Module path + parameter name (transformers ≥ 4.52 layout).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Component: `language_model`, `vision_tower` or `projector`.
    pub component: &'static str,
    /// True for the weight of an `nn.Linear` (what bitsandbytes quantizes, what LoRA targets).
    pub linear: bool,
}

impl ParamSpec {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The module path (name without `.weight` / `.bias`).
    pub fn module(&self) -> &str {
        self.name.rsplit_once('.').map_or(&self.name, |(m, _)| m)
    }
}

fn get(v: &Value, key: &str, ctx: &str) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .with_context(|| format!("config.json: {ctx}.{key} missing or not an integer"))
}

/// The parameter list being built.
#[derive(Default)]
struct Specs(Vec<ParamSpec>);

impl Specs {
    fn push(&mut self, name: String, shape: Vec<usize>, component: &'static str, linear: bool) {
        self.0.push(ParamSpec {
            name,
            shape,
            component,
            linear,
        });
    }
}

/// Lists every parameter of the model described by a `config.json` value.
pub fn param_specs(config: &Value) -> Result<Vec<ParamSpec>> {
    let mut out = Specs::default();
    let (text, vision, text_prefix) = match config.get("text_config") {
        Some(t) => (t, config.get("vision_config"), "model.language_model"),
        None => (config, None, "model"),
    };
    let tied = config
        .get("tie_word_embeddings")
        .or_else(|| text.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    text_specs(&mut out, text, text_prefix, tied)?;
    if let Some(v) = vision {
        let text_hidden = get(text, "hidden_size", "text_config")?;
        vision_specs(&mut out, v, text_hidden)?;
    }
    Ok(out.0)
}

/// The text decoder's parameters (`Gemma3TextModel`, plus an untied LM head).
fn text_specs(out: &mut Specs, text: &Value, prefix: &str, tied: bool) -> Result<()> {
    let h = get(text, "hidden_size", "text_config")?;
    let inter = get(text, "intermediate_size", "text_config")?;
    let layers = get(text, "num_hidden_layers", "text_config")?;
    let heads = get(text, "num_attention_heads", "text_config")?;
    let kv = get(text, "num_key_value_heads", "text_config")?;
    let hd = text
        .get("head_dim")
        .and_then(Value::as_u64)
        .map_or(h / heads, |x| x as usize);
    let vocab = get(text, "vocab_size", "text_config")?;
    let attn_bias = text
        .get("attention_bias")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let lm = "language_model";
    out.push(
        format!("{prefix}.embed_tokens.weight"),
        vec![vocab, h],
        lm,
        false,
    );
    for l in 0..layers {
        let p = format!("{prefix}.layers.{l}");
        for (n, o, i) in [
            ("self_attn.q_proj", heads * hd, h),
            ("self_attn.k_proj", kv * hd, h),
            ("self_attn.v_proj", kv * hd, h),
            ("self_attn.o_proj", h, heads * hd),
            ("mlp.gate_proj", inter, h),
            ("mlp.up_proj", inter, h),
            ("mlp.down_proj", h, inter),
        ] {
            out.push(format!("{p}.{n}.weight"), vec![o, i], lm, true);
            if attn_bias && n.starts_with("self_attn") {
                out.push(format!("{p}.{n}.bias"), vec![o], lm, false);
            }
        }
        for n in ["self_attn.q_norm", "self_attn.k_norm"] {
            out.push(format!("{p}.{n}.weight"), vec![hd], lm, false);
        }
        for n in [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ] {
            out.push(format!("{p}.{n}.weight"), vec![h], lm, false);
        }
    }
    out.push(format!("{prefix}.norm.weight"), vec![h], lm, false);
    if !tied {
        out.push("lm_head.weight".into(), vec![vocab, h], lm, false);
    }
    Ok(())
}

/// The SigLIP tower's and the projector's parameters (the projector maps into `text_hidden`).
fn vision_specs(out: &mut Specs, v: &Value, text_hidden: usize) -> Result<()> {
    let vh = get(v, "hidden_size", "vision_config")?;
    let vi = get(v, "intermediate_size", "vision_config")?;
    let vl = get(v, "num_hidden_layers", "vision_config")?;
    let img = get(v, "image_size", "vision_config")?;
    let patch = get(v, "patch_size", "vision_config")?;
    let ch = v.get("num_channels").and_then(Value::as_u64).unwrap_or(3) as usize;
    let vt = "vision_tower";
    let p = "model.vision_tower.vision_model";
    let e = format!("{p}.embeddings");
    out.push(
        format!("{e}.patch_embedding.weight"),
        vec![vh, ch, patch, patch],
        vt,
        false,
    );
    out.push(format!("{e}.patch_embedding.bias"), vec![vh], vt, false);
    let positions = (img / patch) * (img / patch);
    out.push(
        format!("{e}.position_embedding.weight"),
        vec![positions, vh],
        vt,
        false,
    );
    for l in 0..vl {
        let q = format!("{p}.encoder.layers.{l}");
        for (n, o, i) in [
            ("self_attn.q_proj", vh, vh),
            ("self_attn.k_proj", vh, vh),
            ("self_attn.v_proj", vh, vh),
            ("self_attn.out_proj", vh, vh),
            ("mlp.fc1", vi, vh),
            ("mlp.fc2", vh, vi),
        ] {
            out.push(format!("{q}.{n}.weight"), vec![o, i], vt, true);
            out.push(format!("{q}.{n}.bias"), vec![o], vt, false);
        }
        for n in ["layer_norm1", "layer_norm2"] {
            out.push(format!("{q}.{n}.weight"), vec![vh], vt, false);
            out.push(format!("{q}.{n}.bias"), vec![vh], vt, false);
        }
    }
    out.push(format!("{p}.post_layernorm.weight"), vec![vh], vt, false);
    out.push(format!("{p}.post_layernorm.bias"), vec![vh], vt, false);
    let pj = "projector";
    let m = "model.multi_modal_projector";
    out.push(
        format!("{m}.mm_input_projection_weight"),
        vec![vh, text_hidden],
        pj,
        false,
    );
    out.push(format!("{m}.mm_soft_emb_norm.weight"), vec![vh], pj, false);
    Ok(())
}

/// Bytes bitsandbytes holds for an NF4 tensor of `numel` values.
pub fn nf4_bytes(numel: usize, blocksize: usize, double_quant: bool) -> usize {
    let blocks = numel.div_ceil(blocksize);
    let packed = numel.div_ceil(2);
    if double_quant {
        packed + blocks + 4 * blocks.div_ceil(NESTED_BLOCKSIZE) + 4 * 256 + 4
    } else {
        packed + 4 * blocks
    }
}

/// What to account for.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// Quantize Linear weights to NF4.
    pub nf4: bool,
    /// With double quantization.
    pub double_quant: bool,
    /// NF4 block size.
    pub blocksize: usize,
    /// Quantize the vision tower's Linears too (transformers' default does).
    pub quantize_vision: bool,
    /// Bytes per value of checkpoint tensors (2 for bf16).
    pub stored_bytes: usize,
    /// Bytes per value of dense tensors in memory (2 for bf16 on GPU, 4 for f32 on CPU).
    pub compute_bytes: usize,
    /// LoRA rank, if adapters are attached.
    pub lora_r: Option<usize>,
    /// Adapters on the vision tower too.
    pub lora_vision: bool,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            nf4: false,
            double_quant: false,
            blocksize: 64,
            quantize_vision: true,
            stored_bytes: 2,
            compute_bytes: 2,
            lora_r: None,
            lora_vision: false,
        }
    }
}

/// Totals of one component.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComponentMemory {
    /// Component name.
    pub name: String,
    /// Base parameters (frozen when LoRA is used).
    pub params: usize,
    /// Of which in quantized Linears.
    pub quantized_params: usize,
    /// Trainable LoRA parameters attached to this component.
    pub lora_params: usize,
    /// Bytes of the base as stored in the checkpoint.
    pub stored_bytes: usize,
    /// Bytes of the base in memory (NF4 + dense in compute dtype).
    pub memory_bytes: usize,
}

/// The memory table of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryReport {
    /// One row per component, in model order.
    pub components: Vec<ComponentMemory>,
    /// LoRA layers attached.
    pub lora_layers: usize,
}

impl MemoryReport {
    /// Sum of trainable (LoRA) parameters.
    pub fn trainable(&self) -> usize {
        self.components.iter().map(|c| c.lora_params).sum()
    }

    /// Sum of frozen base parameters.
    pub fn frozen(&self) -> usize {
        self.components.iter().map(|c| c.params).sum()
    }

    /// A component by name.
    pub fn component(&self, name: &str) -> Option<&ComponentMemory> {
        self.components.iter().find(|c| c.name == name)
    }

    /// A human-readable table (GB = 1e9 bytes).
    pub fn render(&self, opts: &MemoryOptions) -> String {
        let gb = |b: usize| b as f64 / 1e9;
        let mut s = format!(
            "{:<16} {:>15} {:>15} {:>13} {:>12} {:>12}\n",
            "component", "params", "nf4 params", "lora params", "stored GB", "memory GB"
        );
        let mut tot = ComponentMemory::default();
        for c in &self.components {
            s += &format!(
                "{:<16} {:>15} {:>15} {:>13} {:>12.3} {:>12.3}\n",
                c.name,
                c.params,
                c.quantized_params,
                c.lora_params,
                gb(c.stored_bytes),
                gb(c.memory_bytes)
            );
            tot.params += c.params;
            tot.quantized_params += c.quantized_params;
            tot.lora_params += c.lora_params;
            tot.stored_bytes += c.stored_bytes;
            tot.memory_bytes += c.memory_bytes;
        }
        s += &format!(
            "{:<16} {:>15} {:>15} {:>13} {:>12.3} {:>12.3}\n",
            "total",
            tot.params,
            tot.quantized_params,
            tot.lora_params,
            gb(tot.stored_bytes),
            gb(tot.memory_bytes)
        );
        s += &format!(
            "frozen params {}, trainable params {} ({:.4}% of all)\n",
            self.frozen(),
            self.trainable(),
            100.0 * self.trainable() as f64 / (self.frozen() + self.trainable()).max(1) as f64
        );
        if self.lora_layers > 0 {
            let t = self.trainable();
            s += &format!(
                "LoRA: {} layers, weights {:.1} MB f32, gradients {:.1} MB, AdamW state {:.1} MB\n",
                self.lora_layers,
                4.0 * t as f64 / 1e6,
                4.0 * t as f64 / 1e6,
                8.0 * t as f64 / 1e6
            );
        }
        s += &format!(
            "stored: {} B/value; memory: {}dense {} B/value (activations not included)\n",
            opts.stored_bytes,
            if opts.nf4 {
                format!(
                    "NF4 blocks of {}{} for {}Linear weights, ",
                    opts.blocksize,
                    if opts.double_quant {
                        " + double quant"
                    } else {
                        ""
                    },
                    if opts.quantize_vision {
                        "all "
                    } else {
                        "language-model "
                    }
                )
            } else {
                String::new()
            },
            opts.compute_bytes
        );
        s
    }
}

/// Accounts parameters and bytes of the model a `config.json` describes.
pub fn memory_report(config: &Value, opts: &MemoryOptions) -> Result<MemoryReport> {
    ensure!(
        opts.blocksize.is_power_of_two(),
        "blocksize must be a power of two"
    );
    let specs = param_specs(config)?;
    let selector = TargetSelector::default_for(opts.lora_vision);
    let mut components: Vec<ComponentMemory> = Vec::new();
    let mut lora_layers = 0;
    for p in &specs {
        let idx = match components.iter().position(|c| c.name == p.component) {
            Some(i) => i,
            None => {
                components.push(ComponentMemory {
                    name: p.component.to_string(),
                    ..Default::default()
                });
                components.len() - 1
            }
        };
        let c = &mut components[idx];
        let n = p.numel();
        c.params += n;
        c.stored_bytes += n * opts.stored_bytes;
        let quantize =
            opts.nf4 && p.linear && (opts.quantize_vision || p.component != "vision_tower");
        if quantize {
            c.quantized_params += n;
            c.memory_bytes += nf4_bytes(n, opts.blocksize, opts.double_quant);
        } else {
            c.memory_bytes += n * opts.compute_bytes;
        }
        if let Some(r) = opts.lora_r
            && p.linear
            && selector.is_target(p.module())
        {
            c.lora_params += r * (p.shape[0] + p.shape[1]);
            lora_layers += 1;
        }
    }
    Ok(MemoryReport {
        components,
        lora_layers,
    })
}

#[cfg(test)]
mod tests;
