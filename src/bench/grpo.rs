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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, tensor::TensorView};

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
    let &BenchShape {
        vocab: vocab_size,
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
        head_dim,
        sliding_window,
    } = shape;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = serde_json::json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "sliding_window": sliding_window,
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
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}"#,
    )?;

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Uniform on [-a, a] has std a/sqrt(3): a = 0.02·sqrt(3) matches the init std.
    let a = 0.02f32 * 3f32.sqrt();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, random: bool| {
        let n: usize = shape.iter().product();
        let bytes: Vec<u8> = (0..n)
            .flat_map(|_| {
                let v = if random {
                    rng.random_range(-a..a)
                } else {
                    0.0f32
                };
                v.to_le_bytes()
            })
            .collect();
        tensors.push((name, shape, bytes));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![vocab_size, hidden],
        true,
    );
    let (q, kv) = (heads * head_dim, kv_heads * head_dim);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", vec![q, hidden]),
            ("self_attn.k_proj", vec![kv, hidden]),
            ("self_attn.v_proj", vec![kv, hidden]),
            ("self_attn.o_proj", vec![hidden, q]),
            ("mlp.gate_proj", vec![intermediate, hidden]),
            ("mlp.up_proj", vec![intermediate, hidden]),
            ("mlp.down_proj", vec![hidden, intermediate]),
        ] {
            add(format!("{p}.{name}.weight"), shape, true);
        }
        for (name, width) in [
            ("input_layernorm", hidden),
            ("post_attention_layernorm", hidden),
            ("pre_feedforward_layernorm", hidden),
            ("post_feedforward_layernorm", hidden),
            ("self_attn.q_norm", head_dim),
            ("self_attn.k_norm", head_dim),
        ] {
            add(format!("{p}.{name}.weight"), vec![width], false);
        }
    }
    add("model.norm.weight".into(), vec![hidden], false);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, s, b)| Ok((k.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), &dir.join("model.safetensors"))
        .context("writing the benchmark model")?;

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
pub fn bench_config(model_dir: &Path, steps: usize) -> Result<Config> {
    let yaml = format!(
        r#"
seed: 0
output_dir: {out}
model: {{path: {model}}}
data: {{train: unused-the-bench-makes-its-prompts.json}}
lora: {{r: 16, lora_alpha: 32, lora_dropout: 0.0,
        target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}}
training:
  per_device_train_batch_size: 4
  gradient_accumulation_steps: 2
  num_generations: 4
  max_completion_length: 32
  learning_rate: 1.0e-5
  max_steps: {steps}
  beta: {beta}
{quant}"#,
        out = model_dir.join("run").display(),
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
    /// Completions per second (8 completions per step).
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
) -> Result<GrpoBenchResult> {
    let total = warmup + steps;
    let config = bench_config(model_dir, total)?;
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
    let prompts = bench_prompts(NUM_PROMPTS, PROMPT_TOKENS, 1);
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
}

impl crate::device::OnBackend for BenchRun {
    type Output = GrpoBenchResult;
    fn run<B: burn::prelude::Backend>(self) -> Result<GrpoBenchResult> {
        run_training::<burn::backend::Autodiff<B>>(&self.dir, 1, self.steps)
    }
}

/// Runs the benchmark and prints the figures (and TRL's, with the ratio, when
/// `MEDGRPO_PYTHON` is set).
pub fn bench_grpo() -> Result<()> {
    let steps = env_usize("MEDGRPO_BENCH_STEPS", 6)?.max(1);
    let threads = match std::env::var("RAYON_NUM_THREADS") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("RAYON_NUM_THREADS={v} is not a number"))?,
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let dir = std::env::temp_dir().join(format!("medgrpo-bench-grpo-{}", std::process::id()));
    let shape =
        BenchShape::parse(&std::env::var("MEDGRPO_BENCH_SHAPE").unwrap_or_else(|_| "tiny".into()))?;
    write_bench_model_shaped(&dir, 0, &shape)?;
    let device = match std::env::var("MEDGRPO_BENCH_DEVICE").as_deref() {
        Ok("cuda") => crate::config::Device::Cuda,
        Ok("cpu") | Err(_) => crate::config::Device::Cpu,
        Ok(other) => anyhow::bail!("MEDGRPO_BENCH_DEVICE={other}: use cpu or cuda"),
    };
    let r = crate::device::run_on(
        device,
        BenchRun {
            dir: dir.clone(),
            steps,
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;
    println!(
        "medgrpo {device:?} threads={threads}: {:.3} s/step, {:.1} completions/s ({steps} steps after 1 warm-up; 8 completions/step)",
        r.s_per_step, r.completions_per_s
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
    if shape != BenchShape::TINY {
        println!("  shape {shape:?}; the TRL baseline runs only on the issue's tiny shape");
        return Ok(());
    }
    let Ok(python) = std::env::var("MEDGRPO_PYTHON") else {
        println!("TRL baseline not run: set MEDGRPO_PYTHON to a Python with trl, peft, datasets");
        return Ok(());
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/trl_grpo_bench.py");
    let o = Command::new(&python)
        .arg(&script)
        .args(["--steps", &steps.to_string()])
        .args(["--threads", &threads.to_string()])
        .output();
    match o {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let v: serde_json::Value =
                serde_json::from_str(text.trim().lines().last().unwrap_or(""))
                    .with_context(|| format!("TRL script printed {text}"))?;
            let trl = v["completions_per_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "TRL {} threads={threads}: {:.3} s/step, {trl:.1} completions/s -> medgrpo/TRL = {:.2}x",
                v["trl"].as_str().unwrap_or("?"),
                v["s_per_step"].as_f64().unwrap_or(f64::NAN),
                r.completions_per_s / trl
            );
        }
        Ok(o) => println!(
            "TRL baseline failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("TRL baseline not run ({python}: {e})"),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
