//! `medgrpo bench grpo`: GRPO training throughput on CPU, side by side with TRL's
//! `GRPOTrainer` doing the same work (`scripts/trl_grpo_bench.py`).
//!
//! The work (issue #7 item 10): a tiny random Gemma3ForCausalLM (hidden 256, intermediate
//! 1024, 4 layers, 4 heads, 1 kv head, head_dim 64, vocab 4096, sliding window 512) with a
//! word-level tokenizer of 4096 ids, LoRA r16 / alpha 32 on q,k,v,o,gate,up,down,
//! num_generations 4, max_completion_length 32, per_device_train_batch_size 4,
//! gradient_accumulation_steps 2 (8 completions = 2 prompts per optimizer step), raw
//! 64-token prompts (no chat template) and TRL's script's reward `len(completion) % 7`.
//!
//! The model is written by Rust into a temporary directory (random weights, seeded), so the
//! benchmark needs no Python; it runs through the real chain (step batcher → sampler → reward →
//! advantage → learner, [`super::train::grpo_stages`]: the step's prompts decoded together, the
//! step's groups scored in one forward/backward). The figure is the mean wall time between
//! consecutive optimizer steps after a warm-up, which includes sampling, scoring, the
//! learner's forward/backward and AdamW — what TRL's step time (callback `on_step_begin` to
//! `on_step_end`) includes too.
//!
//! Knobs (environment, since `bench` takes only a name): `MEDGRPO_BENCH_STEPS` measured steps
//! (default 6, after 1 warm-up step), `RAYON_NUM_THREADS` the CPU threads (default: all cores;
//! the TRL script is given the same count), `MEDGRPO_PYTHON` an interpreter with torch,
//! transformers, trl, peft and datasets: when set, the TRL script runs right after and the
//! ratio is printed. `MEDGRPO_BENCH_DEVICE=cuda` trains on the GPU, `MEDGRPO_BENCH_QUANT=nf4`
//! on an NF4 base (double quantization, as QLoRA), and `MEDGRPO_BENCH_SHAPE=medgemma-4b:L`
//! on MedGemma-4B's language-model widths and vocabulary with L of its 34 layers (no TRL side).
//! `MEDGRPO_BENCH_BETA` sets β (default 0, TRL's): at MedGemma's width a random model repeats
//! its last prompt token (Gemma's `sqrt(hidden)` embedding scale makes that logit dominate), so
//! every completion ties and β = 0 would skip the learner; β > 0 trains every group.
//!
//! Run the two alternately a few times on a shared machine and compare the median ratio (each
//! run prints medgrpo's figure, then TRL's measured right after under the same load):
//! `for i in 1 2 3; do MEDGRPO_PYTHON=python3 RAYON_NUM_THREADS=1 medgrpo bench grpo; done`.
//!
//! The default build has gemm's AVX-512 kernels (feature `x86-v4`, picked at run time where the
//! CPU has AVX-512; TRL's PyTorch uses AVX-512 there too). On the 2-core Zen 5 machine of
//! 2026-11-26 at load 1.2-1.8, three alternating rounds each: 1 thread, AVX2-only build
//! (`--no-default-features`) 0.226-0.231 s/step against TRL's 0.64-0.67 (2.83-2.90x), x86-v4 build
//! 0.184-0.190 s/step (3.40-3.43x); 2 threads, 0.199-0.228 (2.03-2.28x) and 0.190-0.197
//! (2.36-2.66x) against TRL's 0.45-0.51. A second thread barely helps medgrpo: the products
//! are small (decode rows 8, the learner's ~380 rows) and about half of a step, the rest being
//! expf, strided copies and autodiff bookkeeping, which run on one thread. Fusing the q|k|v
//! and gate|up products and decoding with the adapters merged into the weights were tried and
//! measured no faster (not kept).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{env_usize, peak_rss};
use crate::config::Config;
use crate::grpo::epochs::Cursor;
use crate::grpo::learner::Learner;
use crate::grpo::messages::{
    CompletionGroup, Prompted, SampledGroup, ScoredGroup, ScoredStep, StepLog,
};
use crate::grpo::optim::NamedAdamW;
use crate::grpo::policy::PolicyStore;
use crate::grpo::reward::{Reference, RewardBreakdown};
use crate::grpo::sampler::SamplerSettings;
use crate::grpo::train::grpo_stages;
use crate::lora::load::ModelLoad;
use crate::model::tokenizer::GemmaTokenizer;
use crate::stages::{Pipeline, PipelineOptions, Stage, StageOptions};

/// Vocabulary of the benchmark model and tokenizer (`<pad>`, `<eos>`, `<bos>`, `<unk>`, then
/// the words `w4` … `w4095`).
pub const VOCAB: usize = 4096;
/// Hidden size of the benchmark model.
pub const HIDDEN: usize = 256;
/// MLP width.
pub const INTERMEDIATE: usize = 1024;
/// Decoder layers.
pub const LAYERS: usize = 4;
/// Query heads.
pub const HEADS: usize = 4;
/// Key/value heads.
pub const KV_HEADS: usize = 1;
/// Width of one head.
pub const HEAD_DIM: usize = 64;
/// Tokens per prompt.
pub const PROMPT_TOKENS: usize = 64;
/// Distinct prompts (cycled), as in the TRL script.
pub const NUM_PROMPTS: usize = 64;

/// The shape of one optimizer step: prompts, completions per prompt (G), and token counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepShape {
    /// Prompts per optimizer step (one micro-batch each).
    pub prompts: usize,
    /// Completions per prompt.
    pub g: usize,
    /// Tokens per prompt.
    pub prompt_tokens: usize,
    /// `max_completion_length`.
    pub new_tokens: usize,
}

impl StepShape {
    /// The TRL script's step: 2 prompts × 4 completions of 32 tokens, 64-token prompts.
    pub const DEFAULT: Self = Self {
        prompts: 2,
        g: 4,
        prompt_tokens: PROMPT_TOKENS,
        new_tokens: 32,
    };

    /// [`Self::DEFAULT`] with `MEDGRPO_BENCH_PROMPTS`, `_G`, `_PROMPT_TOKENS` and `_NEW_TOKENS`.
    pub fn from_env() -> Result<Self> {
        let d = Self::DEFAULT;
        Ok(Self {
            prompts: env_usize("MEDGRPO_BENCH_PROMPTS", d.prompts)?.max(1),
            g: env_usize("MEDGRPO_BENCH_G", d.g)?.max(1),
            prompt_tokens: env_usize("MEDGRPO_BENCH_PROMPT_TOKENS", d.prompt_tokens)?.max(1),
            new_tokens: env_usize("MEDGRPO_BENCH_NEW_TOKENS", d.new_tokens)?.max(1),
        })
    }

    /// Completions per optimizer step.
    pub fn completions(&self) -> usize {
        self.prompts * self.g
    }
}

/// The sizes of a benchmark model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchShape {
    /// Vocabulary (tokenizer and embedding).
    pub vocab: usize,
    /// Hidden size.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Sliding-window length of the local layers.
    pub sliding_window: usize,
}

impl BenchShape {
    /// The issue's benchmark model (the constants above).
    pub const TINY: Self = Self {
        vocab: VOCAB,
        hidden: HIDDEN,
        intermediate: INTERMEDIATE,
        layers: LAYERS,
        heads: HEADS,
        kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        sliding_window: 512,
    };

    /// MedGemma-4B-IT's language model (Gemma 3 4B text config) with `layers` of its 34
    /// decoder layers: the real widths and vocabulary, for GPU memory and speed figures that
    /// scale per layer.
    pub fn medgemma_4b(layers: usize) -> Self {
        Self {
            vocab: 262_208,
            hidden: 2560,
            intermediate: 10_240,
            layers,
            heads: 8,
            kv_heads: 4,
            head_dim: 256,
            sliding_window: 1024,
        }
    }

    /// `tiny` or `medgemma-4b[:LAYERS]` (34 layers when omitted).
    pub fn parse(spec: &str) -> Result<Self> {
        match spec.split_once(':') {
            None if spec == "tiny" => Ok(Self::TINY),
            None if spec == "medgemma-4b" => Ok(Self::medgemma_4b(34)),
            Some(("medgemma-4b", n)) => Ok(Self::medgemma_4b(n.parse().with_context(|| {
                format!("MEDGRPO_BENCH_SHAPE={spec}: `{n}` is not a layer count")
            })?)),
            _ => anyhow::bail!("MEDGRPO_BENCH_SHAPE={spec}: use tiny or medgemma-4b[:LAYERS]"),
        }
    }
}

/// Writes the benchmark's Gemma3ForCausalLM snapshot into `dir`: `config.json`, random
/// `model.safetensors` (seeded: weights uniform with transformers' init std 0.02, norm
/// weights 0 as Gemma's `1 + w` norms start), a word-level `tokenizer.json` whose every id
/// decodes to a word (as the TRL script's), and `generation_config.json` (eos 1, pad 0).
pub fn write_bench_model(dir: &Path, seed: u64) -> Result<()> {
    write_bench_model_shaped(dir, seed, &BenchShape::TINY)
}

/// [`write_bench_model`] with other sizes.
pub fn write_bench_model_shaped(dir: &Path, seed: u64, shape: &BenchShape) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&model_config(shape))?,
    )?;
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}"#,
    )?;
    write_random_weights(&dir.join("model.safetensors"), seed, shape)
        .context("writing the benchmark model")?;
    write_word_tokenizer(dir, shape.vocab)
}

/// The `config.json` of a `Gemma3ForCausalLM` of `shape`.
fn model_config(s: &BenchShape) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": s.vocab,
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "head_dim": s.head_dim,
        "sliding_window": s.sliding_window,
        "max_position_embeddings": 1024,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh",
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "sliding_window_pattern": 6,
        "tie_word_embeddings": true,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "torch_dtype": "float32"
    })
}

/// Every tensor of a model of `shape`, in file order, and whether it is drawn at random (the
/// norm gains are zero: Gemma's `1 + w` gain of one).
fn tensor_list(s: &BenchShape) -> Vec<(String, Vec<usize>, bool)> {
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![s.vocab, s.hidden],
        true,
    )];
    let (q, kv, h, i) = (
        s.heads * s.head_dim,
        s.kv_heads * s.head_dim,
        s.hidden,
        s.intermediate,
    );
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", vec![q, h]),
            ("self_attn.k_proj", vec![kv, h]),
            ("self_attn.v_proj", vec![kv, h]),
            ("self_attn.o_proj", vec![h, q]),
            ("mlp.gate_proj", vec![i, h]),
            ("mlp.up_proj", vec![i, h]),
            ("mlp.down_proj", vec![h, i]),
        ] {
            out.push((format!("{p}.{name}.weight"), shape, true));
        }
        for (name, width) in [
            ("input_layernorm", h),
            ("post_attention_layernorm", h),
            ("pre_feedforward_layernorm", h),
            ("post_feedforward_layernorm", h),
            ("self_attn.q_norm", s.head_dim),
            ("self_attn.k_norm", s.head_dim),
        ] {
            out.push((format!("{p}.{name}.weight"), vec![width], false));
        }
    }
    out.push(("model.norm.weight".into(), vec![h], false));
    out
}

/// Writes the f32 weights of a random model of `shape` as safetensors, streaming: the header
/// first, then each tensor as it is drawn, so a MedGemma-sized model never sits in memory.
/// Random weights are uniform on `[-a, a]` with `a = 0.02·√3` (std 0.02, the init std).
fn write_random_weights(path: &Path, seed: u64, shape: &BenchShape) -> Result<()> {
    use std::io::Write;
    let tensors = tensor_list(shape);
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, shape, _) in &tensors {
        let bytes = 4 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    head.resize(head.len().next_multiple_of(8), b' ');
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    out.write_all(&(head.len() as u64).to_le_bytes())?;
    out.write_all(&head)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a = 0.02f32 * 3f32.sqrt();
    for (_, shape, random) in &tensors {
        for _ in 0..shape.iter().product::<usize>() {
            let v = if *random {
                rng.random_range(-a..a)
            } else {
                0.0f32
            };
            out.write_all(&v.to_le_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

/// A word-level tokenizer of `vocab_size` ids: `<pad>`, `<eos>`, `<bos>`, `<unk>`, then `w4` …
fn write_word_tokenizer(dir: &Path, vocab_size: usize) -> Result<()> {
    let specials = ["<pad>", "<eos>", "<bos>", "<unk>"];
    let mut vocab = serde_json::Map::new();
    for (i, s) in specials.iter().enumerate() {
        vocab.insert((*s).into(), i.into());
    }
    for i in specials.len()..vocab_size {
        vocab.insert(format!("w{i}"), i.into());
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string())?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}"#,
    )?;
    Ok(())
}

/// The benchmark's training settings: TRL's GRPOConfig as the script sets it (everything
/// else at TRL's defaults, which are medgrpo's: dapo loss, beta 0, temperature 1, group
/// scaling, linear schedule).
pub fn bench_config(model_dir: &Path, steps: usize, step: &StepShape) -> Result<Config> {
    let yaml = format!(
        r#"
seed: 0
output_dir: {out}
model: {{path: {model}}}
data: {{train: unused-the-bench-makes-its-prompts.json}}
lora: {{r: 16, lora_alpha: 32, lora_dropout: 0.0,
        target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}}
training:
  per_device_train_batch_size: {g}
  gradient_accumulation_steps: {prompts}
  num_generations: {g}
  max_completion_length: {new_tokens}
  learning_rate: 1.0e-5
  max_steps: {steps}
  beta: {beta}
{quant}"#,
        out = model_dir.join("run").display(),
        g = step.g,
        prompts = step.prompts,
        new_tokens = step.new_tokens,
        model = model_dir.display(),
        beta = std::env::var("MEDGRPO_BENCH_BETA").unwrap_or_else(|_| "0.0".into()),
        quant = match std::env::var("MEDGRPO_BENCH_QUANT").as_deref() {
            Ok("nf4") => "quantization: {load_in_4bit: true, bnb_4bit_use_double_quant: true}\n",
            _ => "",
        },
    );
    Config::from_yaml_str(&yaml, &[])
}

/// The TRL script's reward, `len(completion) % 7` on the decoded text (characters), as a
/// reward stage; the breakdown's components stay 0 (only `total` drives the advantage).
pub struct LengthModReward {
    num_generations: usize,
}

impl LengthModReward {
    /// A scorer expecting groups of `num_generations`.
    pub fn new(num_generations: usize) -> Self {
        Self { num_generations }
    }
}

/// `len(text) % 7` counted in Unicode scalars, as Python's `len` does.
pub fn length_mod_7(text: &str) -> f64 {
    (text.chars().count() % 7) as f64
}

impl Stage for LengthModReward {
    type In = CompletionGroup<SampledGroup>;
    type Out = ScoredGroup<SampledGroup>;

    fn process(
        &mut self,
        _seq: u64,
        group: CompletionGroup<SampledGroup>,
    ) -> Result<Option<ScoredGroup<SampledGroup>>> {
        anyhow::ensure!(
            group.completions.len() == self.num_generations,
            "question {}: {} completions, expected {}",
            group.question_id,
            group.completions.len(),
            self.num_generations
        );
        let rewards = group
            .completions
            .iter()
            .map(|c| RewardBreakdown {
                correct: 0.0,
                explanation: 0.0,
                evidence: 0.0,
                format: 0.0,
                conciseness: 0.0,
                total: length_mod_7(c),
                letter: None,
            })
            .collect();
        Ok(Some(ScoredGroup { group, rewards }))
    }
}

/// The learner as a plain stage (no checkpoints: the benchmark times training only).
struct BenchLearner<AB: AutodiffBackend> {
    learner: Learner<AB>,
}

impl<AB: AutodiffBackend> Stage for BenchLearner<AB> {
    type In = ScoredStep<SampledGroup>;
    type Out = StepLog;

    fn process(&mut self, _seq: u64, step: ScoredStep<SampledGroup>) -> Result<Option<StepLog>> {
        self.learner.step(&step).map(Some)
    }
}

/// The benchmark's prompts: `count` rows of `len` word ids drawn uniformly from the
/// non-special range (what the TRL script's random `w<id>` prompts tokenize to).
pub fn bench_prompts(count: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| rng.random_range(4..VOCAB as u32))
                .collect()
        })
        .collect()
}

/// What one training run measured.
#[derive(Debug, Clone)]
pub struct GrpoBenchResult {
    /// Mean seconds per optimizer step over the measured steps.
    pub s_per_step: f64,
    /// Completions per second.
    pub completions_per_s: f64,
    /// Every step's metrics (the warm-up step included).
    pub logs: Vec<StepLog>,
    /// Seconds each stage was busy, in pipeline order.
    pub stage_busy: Vec<(String, f64)>,
}

/// Trains `warmup + steps` optimizer steps on the benchmark model in `model_dir` through the
/// real chain and times the last `steps`.
pub fn run_training<AB: AutodiffBackend>(
    model_dir: &Path,
    warmup: usize,
    steps: usize,
    step: &StepShape,
) -> Result<GrpoBenchResult> {
    let total = warmup + steps;
    let config = bench_config(model_dir, total, step)?;
    let t = &config.training;
    let device = AB::Device::default();
    let model = ModelLoad::policy(&config, None).load::<AB>(model_dir, &device)?;
    let tokenizer = Arc::new(GemmaTokenizer::from_dir(model_dir)?);
    let policy = Arc::new(PolicyStore::new(model.valid()));
    let learner = Learner::new(
        model,
        Box::new(NamedAdamW::<AB>::new(t)),
        t.clone(),
        policy.clone(),
        total as u64,
        0,
    );
    let prompts_per_step = t.prompts_per_step();
    let settings = SamplerSettings {
        sampling: crate::grpo::sampler::training_sampling(t, vec![1], 0),
        num_generations: t.num_generations,
        prompts_per_step,
        max_staleness: t.max_staleness,
        start_step: 0,
        seed: config.seed,
    };
    let prompts = bench_prompts(NUM_PROMPTS, step.prompt_tokens, 1);
    let reference = Arc::new(Reference::new('A', "", "", "")?);
    let items = (0..total * prompts_per_step).map(move |i| {
        Ok(Prompted {
            question_id: format!("p{}", i % NUM_PROMPTS),
            prompt_ids: prompts[i % NUM_PROMPTS].clone(),
            pixels: None,
            reference: reference.clone(),
            cursor: Cursor {
                epoch: (i / NUM_PROMPTS) as u64,
                position: (i % NUM_PROMPTS) as u64 + 1,
            },
            draw: i as u64,
        })
    });
    let mut p = Pipeline::new(PipelineOptions::quiet());
    let source = p.source_with("source", StageOptions::new(1, 4), items);
    let g = t.num_generations;
    let logs_port = grpo_stages(
        &mut p,
        &config,
        source,
        policy,
        tokenizer,
        settings,
        move |_| LengthModReward::new(g),
        BenchLearner { learner },
    );
    let mut logs = Vec::new();
    let mut stamps = Vec::new();
    let start = Instant::now();
    let report = p
        .run_sink("log", logs_port, |_, log: StepLog| {
            stamps.push(start.elapsed().as_secs_f64());
            logs.push(log);
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    anyhow::ensure!(
        stamps.len() == total,
        "{} steps made, {total} expected",
        stamps.len()
    );
    let measured = &stamps[warmup.saturating_sub(1)..];
    let s_per_step = if warmup == 0 {
        stamps[total - 1] / total as f64
    } else {
        (measured[measured.len() - 1] - measured[0]) / steps as f64
    };
    Ok(GrpoBenchResult {
        s_per_step,
        completions_per_s: t.completions_per_step() as f64 / s_per_step,
        logs,
        stage_busy: report
            .stages
            .iter()
            .map(|s| (s.name.clone(), s.busy_s))
            .collect(),
    })
}

/// The measured training run, on the backend `MEDGRPO_BENCH_DEVICE` names.
struct BenchRun {
    dir: PathBuf,
    steps: usize,
    step: StepShape,
}

impl crate::device::OnBackend for BenchRun {
    type Output = GrpoBenchResult;
    fn run<B: burn::prelude::Backend>(self) -> Result<GrpoBenchResult> {
        run_training::<burn::backend::Autodiff<B>>(&self.dir, 1, self.steps, &self.step)
    }
}

/// The benchmark's settings, from the environment.
struct Knobs {
    steps: usize,
    threads: usize,
    shape: BenchShape,
    step: StepShape,
    device: crate::config::Device,
}

impl Knobs {
    fn from_env() -> Result<Self> {
        let threads = match std::env::var("RAYON_NUM_THREADS") {
            Ok(v) => v
                .parse()
                .with_context(|| format!("RAYON_NUM_THREADS={v} is not a number"))?,
            Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let shape = std::env::var("MEDGRPO_BENCH_SHAPE").unwrap_or_else(|_| "tiny".into());
        let device = match std::env::var("MEDGRPO_BENCH_DEVICE").as_deref() {
            Ok("cuda") => crate::config::Device::Cuda,
            Ok("cpu") | Err(_) => crate::config::Device::Cpu,
            Ok(other) => anyhow::bail!("MEDGRPO_BENCH_DEVICE={other}: use cpu or cuda"),
        };
        Ok(Self {
            steps: env_usize("MEDGRPO_BENCH_STEPS", 6)?.max(1),
            threads,
            shape: BenchShape::parse(&shape)?,
            step: StepShape::from_env()?,
            device,
        })
    }
}

/// Runs the benchmark and prints the figures (and TRL's, with the ratio, when
/// `MEDGRPO_PYTHON` is set).
pub fn bench_grpo() -> Result<()> {
    let k = Knobs::from_env()?;
    let dir = std::env::temp_dir().join(format!("medgrpo-bench-grpo-{}", std::process::id()));
    write_bench_model_shaped(&dir, 0, &k.shape)?;
    let r = crate::device::run_on(
        k.device,
        BenchRun {
            dir: dir.clone(),
            steps: k.steps,
            step: k.step,
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;
    print_result(&k, &r);
    if k.shape != BenchShape::TINY {
        println!(
            "  shape {:?}; the TRL baseline runs only on the default tiny shape",
            k.shape
        );
        return Ok(());
    }
    match std::env::var("MEDGRPO_PYTHON") {
        Ok(python) => run_trl(&python, &k, r.completions_per_s),
        Err(_) => println!(
            "TRL baseline not run: set MEDGRPO_PYTHON to a Python with trl, peft, datasets"
        ),
    }
    Ok(())
}

/// Prints medgrpo's figures.
fn print_result(k: &Knobs, r: &GrpoBenchResult) {
    let s = &k.step;
    println!(
        "medgrpo {:?} threads={}: {:.3} s/step, {:.1} completions/s ({} steps after 1 warm-up; {} prompts x G={} = {} completions/step, {} prompt + {} new tokens)",
        k.device,
        k.threads,
        r.s_per_step,
        r.completions_per_s,
        k.steps,
        s.prompts,
        s.g,
        s.completions(),
        s.prompt_tokens,
        s.new_tokens
    );
    let busy: Vec<String> = r
        .stage_busy
        .iter()
        .map(|(n, s)| format!("{n} {s:.2}s"))
        .collect();
    println!("  stage busy time: {}", busy.join(", "));
    if let Some(last) = r.logs.last() {
        let m = |k: &str| last.metrics.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "  last step: reward {:.3}, frac_reward_zero_std {:.2}, loss {:.4}, grad_norm {:.4}, applied {}",
            m("reward"),
            m("frac_reward_zero_std"),
            m("loss"),
            m("grad_norm"),
            last.applied
        );
    }
    println!(
        "  peak RSS {:.0} MB (host; the model snapshot was written in this process first)",
        peak_rss() as f64 / 1e6
    );
}

/// Runs TRL's side (`scripts/trl_grpo_bench.py`) on the same step and prints it with the ratio
/// to medgrpo's `ours` completions/s.
fn run_trl(python: &str, k: &Knobs, ours: f64) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/trl_grpo_bench.py");
    let s = &k.step;
    let o = Command::new(python)
        .arg(&script)
        .args(["--steps", &k.steps.to_string()])
        .args(["--threads", &k.threads.to_string()])
        .args(["--prompts", &s.prompts.to_string()])
        .args(["--g", &s.g.to_string()])
        .args(["--prompt-tokens", &s.prompt_tokens.to_string()])
        .args(["--new-tokens", &s.new_tokens.to_string()])
        .output();
    let o = match o {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            println!("TRL baseline failed: {}", err.lines().last().unwrap_or(""));
            return;
        }
        Err(e) => {
            println!("TRL baseline not run ({python}: {e})");
            return;
        }
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text.trim().lines().last().unwrap_or(""))
    else {
        println!("TRL baseline printed no result: {text}");
        return;
    };
    let trl = v["completions_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "TRL {} threads={}: {:.3} s/step, {trl:.1} completions/s -> medgrpo/TRL = {:.2}x",
        v["trl"].as_str().unwrap_or("?"),
        k.threads,
        v["s_per_step"].as_f64().unwrap_or(f64::NAN),
        ours / trl
    );
}

#[cfg(test)]
mod tests;
