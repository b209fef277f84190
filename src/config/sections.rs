//! The typed sections of the pipeline YAML. Defaults follow the reference libraries so a
//! field left out means what it means in TRL, PEFT or bitsandbytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the model comes from and where it runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Hugging Face snapshot directory (config.json, safetensors, tokenizer.json), or
    /// `builtin:tiny` for the demo's generated model.
    pub path: String,
    /// `cpu` (burn flex) or `cuda` (needs the `cuda` feature).
    #[serde(default = "default_device")]
    pub device: Device,
    /// Compute dtype. Only f32 is implemented (on CPU and CUDA, where burn's matmuls run on
    /// TF32 tensor cores); `bf16` / `f16` are accepted, so the original configs load, and warned
    /// about at start ([`ModelConfig::dtype_warning`]).
    #[serde(default = "default_dtype")]
    pub dtype: DType,
}

impl ModelConfig {
    /// The warning to print when `dtype` asks for a precision that is not implemented, so a
    /// user never believes a run computed in bf16 when it computed in f32.
    pub fn dtype_warning(&self) -> Option<String> {
        (self.dtype != DType::F32).then(|| {
            format!(
                "warning: model.dtype {:?} is not implemented yet: the model computes in f32 (memory and speed as with f32)",
                self.dtype
            )
        })
    }
}

/// Backend the tensors live on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// burn's `flex` CPU backend.
    Cpu,
    /// burn's CUDA backend.
    Cuda,
}

/// Floating-point precision of compute.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

fn default_device() -> Device {
    Device::Cpu
}
fn default_dtype() -> DType {
    DType::F32
}

/// NF4 quantization of the frozen base (bitsandbytes `BitsAndBytesConfig` names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuantizationConfig {
    /// Quantize the base linear layers to 4 bits.
    pub load_in_4bit: bool,
    /// Only `nf4` is supported (bitsandbytes also has `fp4`).
    pub bnb_4bit_quant_type: String,
    /// Quantize the per-block absmax again (8-bit, blocks of 256): ~0.4 bit/param saved.
    pub bnb_4bit_use_double_quant: bool,
    /// dtype the weights are dequantized to for the matmul.
    pub bnb_4bit_compute_dtype: DType,
    /// Consecutive weights sharing one absmax.
    pub blocksize: usize,
    /// transformers quantizes every nn.Linear of both towers; false keeps SigLIP dense.
    pub quantize_vision_tower: bool,
}

impl Default for QuantizationConfig {
    fn default() -> Self {
        Self {
            load_in_4bit: false,
            bnb_4bit_quant_type: "nf4".into(),
            bnb_4bit_use_double_quant: false,
            bnb_4bit_compute_dtype: DType::F32,
            blocksize: 64,
            quantize_vision_tower: true,
        }
    }
}

/// LoRA adapters (PEFT `LoraConfig` names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scaling numerator: scaling = lora_alpha / r (or / sqrt(r) with rslora).
    pub lora_alpha: f64,
    /// Dropout on the LoRA input while training.
    pub lora_dropout: f64,
    /// Module-name suffixes that get an adapter.
    pub target_modules: Vec<String>,
    /// Rank-stabilized scaling alpha / sqrt(r).
    pub use_rslora: bool,
    /// Also adapt matching modules of the vision tower, as PEFT would.
    pub include_vision_tower: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            target_modules: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
            use_rslora: false,
            include_vision_tower: false,
        }
    }
}

/// What to do with a record or image that cannot be used.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnBadItem {
    /// Drop it, count it and list it in the rejects file.
    #[default]
    Skip,
    /// Stop the run.
    Abort,
}

/// Dataset files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Training split (ReXVQA JSON: one object keyed by question id).
    pub train: String,
    /// Validation split.
    #[serde(default)]
    pub val: Option<String>,
    /// Test split.
    #[serde(default)]
    pub test: Option<String>,
    /// Base directory of relative image paths.
    #[serde(default)]
    pub image_root: Option<String>,
    /// Folders image paths may resolve into; a record naming a file elsewhere is rejected.
    /// Default: the parent of image_root (of each split's folder without one), which
    /// ReXVQA's `../deid_png/…` paths need (see `data::paths`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_roots: Option<Vec<String>>,
    /// Skip or abort on a bad record or image.
    #[serde(default)]
    pub on_bad_item: OnBadItem,
    /// Decoded images kept in memory when no shards exist.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: usize,
}

fn default_cache_capacity() -> usize {
    512
}

/// How 16-bit (or DICOM) pixels become 8-bit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Conversion {
    /// Min-max over the image (what the original did).
    #[default]
    Minmax,
    /// 0.5th..99.5th percentile.
    Percentile,
    /// DICOM VOI window (falls back to min-max without one).
    Window,
}

/// Precomputed image shards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShardsConfig {
    /// Directory of shards and manifest.json.
    pub dir: String,
    /// Square side of every stored image (the model's input size).
    pub image_size: usize,
    /// 16-bit to 8-bit policy.
    pub conversion: Conversion,
    /// Images per shard file.
    pub records_per_shard: usize,
    /// Channels stored per record: 1 (grey, the default for radiographs; a colour image is
    /// converted to grey with PIL's `L` weights and counted) or 3 (colour kept; grey images
    /// are stored as R=G=B, 3x the disk).
    pub channels: usize,
    /// Build missing shards before training instead of failing.
    pub auto: bool,
}

impl Default for ShardsConfig {
    fn default() -> Self {
        Self {
            dir: "shards/default".into(),
            image_size: 896,
            conversion: Conversion::Minmax,
            records_per_shard: 1024,
            channels: 1,
            auto: false,
        }
    }
}

/// Over-long prompt handling.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnTooLong {
    /// Reject the record (counted, listed).
    #[default]
    Reject,
    /// Shorten the Indication by whole words from the left (the system text, question and
    /// options are never cut); reject if the prompt is still too long without it.
    Truncate,
}

/// The system instruction of the original: reasoning in working-out tags, then a letter.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are an expert radiologist. Look at the chest X-ray and answer the multiple-choice question. First think step by step between <start_working_out> and <end_working_out>. Then give the answer between <SOLUTION> and </SOLUTION> as the option letter followed by a short reason, for example <SOLUTION>B - small left pleural effusion</SOLUTION>.";

/// How a record becomes a prompt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PromptConfig {
    /// System instruction.
    pub system: String,
    /// Put the Indication in as clinical context.
    pub include_indication: bool,
    /// Longest prompt in tokens, image tokens included.
    pub max_prompt_length: usize,
    /// What to do with a longer prompt.
    pub on_too_long: OnTooLong,
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            system: DEFAULT_SYSTEM_PROMPT.into(),
            include_indication: true,
            max_prompt_length: 1024,
            on_too_long: OnTooLong::Reject,
        }
    }
}

/// TRL loss normalizers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Per-sequence mean, then mean over sequences.
    Grpo,
    /// Sum over tokens / tokens of the batch.
    Bnpo,
    /// Sum over tokens / (N * max_completion_length).
    DrGrpo,
    /// Sum over tokens / tokens of the whole step (TRL's default).
    #[default]
    Dapo,
}

/// TRL advantage scaling.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScaleRewards {
    /// Divide by the group's std.
    #[default]
    Group,
    /// Divide by the batch's std.
    Batch,
    /// Do not divide (Dr. GRPO).
    None,
}

/// Token-level ratios (GRPO) or sequence-level ratios (GSPO).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImportanceSamplingLevel {
    /// One ratio per token.
    #[default]
    Token,
    /// One ratio per sequence (GSPO).
    Sequence,
}

/// Learning-rate schedules.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerType {
    /// Linear decay to 0 after warmup.
    #[default]
    Linear,
    /// Cosine decay to 0 after warmup.
    Cosine,
    /// Constant after warmup.
    Constant,
}

/// GRPO training knobs; names and meanings of TRL's GRPOConfig.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Completions per device per micro-step.
    pub per_device_train_batch_size: usize,
    /// Micro-steps per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Completions per prompt (G).
    pub num_generations: usize,
    /// Longest completion in tokens.
    pub max_completion_length: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// KL coefficient (0 disables the reference model).
    pub beta: f64,
    /// Lower clip range.
    pub epsilon: f64,
    /// Upper clip range; defaults to `epsilon`.
    pub epsilon_high: Option<f64>,
    /// Loss normalizer.
    pub loss_type: LossType,
    /// Advantage scaling.
    pub scale_rewards: ScaleRewards,
    /// Token or sequence importance ratios.
    pub importance_sampling_level: ImportanceSamplingLevel,
    /// Multiply the KL term by the ratio (TRL 1.16's default).
    pub use_bias_correction_kl: bool,
    /// Sampling temperature (also divides logits in the loss).
    pub temperature: f64,
    /// Nucleus sampling.
    pub top_p: f64,
    /// Top-k sampling; 0 disables.
    pub top_k: usize,
    /// Min-p sampling; 0 disables.
    pub min_p: f64,
    /// Passes over the training split.
    pub num_train_epochs: f64,
    /// Stop after this many optimizer steps; -1 means use num_train_epochs.
    pub max_steps: i64,
    /// Schedule.
    pub lr_scheduler_type: SchedulerType,
    /// Fraction of steps used for linear warmup (ignored when warmup_steps > 0).
    pub warmup_ratio: f64,
    /// Warmup steps.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// AdamW beta1.
    pub adam_beta1: f64,
    /// AdamW beta2.
    pub adam_beta2: f64,
    /// AdamW epsilon.
    pub adam_epsilon: f64,
    /// Gradient clipping by global norm.
    pub max_grad_norm: f64,
    /// Recompute activations in backward to save memory. Not implemented yet: accepted (the
    /// original config sets it) and warned about at start.
    pub gradient_checkpointing: bool,
    /// Optimizer steps the sampler may run ahead of the learner (0 = on-policy like TRL).
    pub max_staleness: usize,
    /// Write metrics every N steps.
    pub logging_steps: usize,
    /// Checkpoint every N steps.
    pub save_steps: usize,
    /// Keep at most N checkpoints (0 keeps all).
    pub save_total_limit: usize,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            per_device_train_batch_size: 8,
            gradient_accumulation_steps: 1,
            num_generations: 8,
            max_completion_length: 256,
            learning_rate: 1e-6,
            beta: 0.0,
            epsilon: 0.2,
            epsilon_high: None,
            loss_type: LossType::Dapo,
            scale_rewards: ScaleRewards::Group,
            importance_sampling_level: ImportanceSamplingLevel::Token,
            use_bias_correction_kl: true,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            num_train_epochs: 1.0,
            max_steps: -1,
            lr_scheduler_type: SchedulerType::Linear,
            warmup_ratio: 0.0,
            warmup_steps: 0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            gradient_checkpointing: false,
            max_staleness: 0,
            logging_steps: 1,
            save_steps: 500,
            save_total_limit: 0,
        }
    }
}

impl TrainingConfig {
    /// Completions per optimizer step (TRL's generation batch on one device).
    pub fn completions_per_step(&self) -> usize {
        self.per_device_train_batch_size * self.gradient_accumulation_steps
    }

    /// Prompts per optimizer step.
    pub fn prompts_per_step(&self) -> usize {
        self.completions_per_step() / self.num_generations
    }

    /// Upper clip bound, defaulting to `epsilon` as TRL does.
    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }
}

/// The five reward components' weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RewardWeights {
    /// Single correct letter.
    pub correct: f64,
    /// Token F1 with the reference explanation.
    pub explanation: f64,
    /// Report terms used in the reasoning.
    pub evidence: f64,
    /// Exactly one well-formed working-out + SOLUTION.
    pub format: f64,
    /// At most `conciseness_max_chars` characters.
    pub conciseness: f64,
}

impl Default for RewardWeights {
    fn default() -> Self {
        Self {
            correct: 1.0,
            explanation: 0.6,
            evidence: 0.2,
            format: 0.1,
            conciseness: 0.1,
        }
    }
}

/// Reward settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RewardsConfig {
    /// Component weights.
    pub weights: RewardWeights,
    /// Longest completion (Unicode scalars, trimmed) that earns the conciseness reward.
    pub conciseness_max_chars: usize,
}

impl Default for RewardsConfig {
    fn default() -> Self {
        Self {
            weights: RewardWeights::default(),
            conciseness_max_chars: 220,
        }
    }
}

/// Worker threads and output channel capacity of one stage.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StageSettings {
    /// Worker threads.
    pub workers: usize,
    /// Items the stage's output channel holds before the stage blocks.
    pub capacity: usize,
}

impl StageSettings {
    /// Shorthand used for defaults.
    pub const fn new(workers: usize, capacity: usize) -> Self {
        Self { workers, capacity }
    }
}

/// Per-stage settings by stage name (source, loader, prompt, sampler, reward, advantage,
/// learner, and the sharder's decode/writer); unnamed stages use their built-in default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(transparent)]
pub struct StagesConfig(pub BTreeMap<String, StageSettings>);

/// Stage names the pipelines know; others in `stages:` are errors (likely typos).
pub const STAGE_NAMES: &[&str] = &[
    "source",
    "loader",
    "prompt",
    "sampler",
    "reward",
    "advantage",
    "learner",
    "decode",
    "writer",
];

impl StagesConfig {
    /// Settings of `name`, or `default` when the YAML does not mention it.
    pub fn get(&self, name: &str, default: StageSettings) -> StageSettings {
        self.0.get(name).copied().unwrap_or(default)
    }
}

/// What the demo asks about the opacity (`demo.task`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DemoTask {
    /// Which of four lung zones holds a focal opacity of fixed size.
    #[default]
    Location,
    /// How large the opacity is (none, small, moderate, large), in a random zone. Easier for a
    /// tiny random vision tower: the answer survives pooling over the image tokens, where a
    /// location only shows in which tokens are bright.
    Extent,
    /// How dense a diffuse, bilateral haze over both lung fields is (none, mild, moderate,
    /// severe), as in diffuse airspace disease. The easiest for a tiny random vision tower: the
    /// answer changes every lung token, not only the few under a focal opacity.
    Haze,
}

/// The built-in demo's synthetic data (see `demo::synth`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Training questions to generate.
    pub train_questions: usize,
    /// Validation questions to generate.
    pub val_questions: usize,
    /// Side of the generated images in pixels.
    pub image_size: u32,
    /// Shuffle the option order per question. Off by default: the answer is still only in
    /// the pixels (the zone is drawn uniformly), and a tiny model learns the image → letter
    /// map in minutes, whereas matching a zone to shuffled option texts needs far more steps.
    #[serde(default)]
    pub shuffle_options: bool,
    /// What the questions ask: `location` (which zone), `extent` (how large a focal opacity)
    /// or `haze` (how dense a diffuse haze over both lungs).
    #[serde(default)]
    pub task: DemoTask,
    /// A short supervised warm start that teaches the random model the answer *format* (with
    /// random letters, so no answer knowledge), written as the model GRPO starts from.
    #[serde(default)]
    pub warm_start: Option<WarmStartConfig>,
}

/// Supervised format warm start of the demo (see `demo::warm_start`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WarmStartConfig {
    /// The random model to start from; the warm-started one is written to `model.path`.
    pub base_model: String,
    /// Optimizer steps.
    pub steps: usize,
    /// Prompts per step.
    pub batch: usize,
    /// AdamW learning rate of the LoRA weights (merged into the written model afterwards).
    pub learning_rate: f64,
    /// Multiplies the final norm's gain of the random base. With tied embeddings drawn at
    /// std 0.02, a 64-wide random model's logits stay within about ±1.3 whatever LoRA does,
    /// too flat to ever write a format; scaling the output gain fixes that without touching
    /// the residual stream (where text and image embeddings must stay comparable).
    #[serde(default = "default_logit_scale")]
    pub logit_scale: f32,
}

fn default_logit_scale() -> f32 {
    1.0
}
