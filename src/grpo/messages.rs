//! Every item that flows between the stages of the training and evaluation chains, in one
//! place, so the chain can be read from its types:
//!
//! ```text
//!            Drawn          Loaded          Prompted        Vec<Prompted>
//! source ─────────▶ loader ────────▶ prompt ──────────▶ batch ─────────────▶ sampler
//!
//!           Vec<CompletionGroup<SampledGroup>>         Vec<ScoredGroup<SampledGroup>>
//! sampler ─────────────────────────────────────▶ reward ──────────────────────────────▶ advantage
//!
//!              ScoredStep<SampledGroup>          StepLog
//! advantage ───────────────────────────▶ learner ───────▶ sink (metrics.jsonl, progress)
//! ```
//!
//! Evaluation shares the front (source → loader → prompt, in file order) and ends in a sink that
//! generates greedily and scores. `T` in the group types is the payload the reward and
//! advantage stages carry through untouched ([`SampledGroup`] in training; tests use others).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::advantage::Advantages;
use super::epochs::Cursor;
use super::metrics::StepMetrics;
use super::reward::{Reference, RewardBreakdown};
use crate::data::loader::PixelBytes;
use crate::data::record::Record;

/// A record drawn by the source, with its place in the run's data order.
#[derive(Debug, Clone)]
pub struct Drawn {
    /// The question.
    pub record: Arc<Record>,
    /// Data position just after this record (saved in checkpoints; default in evaluation).
    pub cursor: Cursor,
    /// Draw number in the whole run (epoch × split size + position; the file position in
    /// evaluation): the sampling seed's input, which, unlike the pipeline's sequence number,
    /// survives a resume.
    pub draw: u64,
}

/// A drawn record with its image as stored, when the model has a vision tower.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The record and its place.
    pub drawn: Drawn,
    /// The image (u8, at the tower's size), `None` for a text-only question or model.
    pub pixels: Option<PixelBytes>,
}

/// A prompt ready for the model: what the prompt builder produces (the sampler's and the
/// evaluation's input).
#[derive(Debug, Clone)]
pub struct Prompted {
    /// Question id.
    pub question_id: String,
    /// Input ids with the image block expanded.
    pub prompt_ids: Vec<u32>,
    /// The image as stored (u8, grey or RGB, at the tower's size), when the prompt has one:
    /// a quarter (grey: a twelfth) of the f32 input's bytes travel through the chain, and the
    /// normalization runs on the sampler's device.
    pub pixels: Option<PixelBytes>,
    /// The answer key for the reward.
    pub reference: Arc<Reference>,
    /// Data position just after this prompt's record (saved in checkpoints).
    pub cursor: Cursor,
    /// Draw number of this prompt in the whole run (epoch × split size + position), the
    /// sampling seed's input: unlike the pipeline's sequence number it survives a resume.
    pub draw: u64,
}

/// What the sampler hands to the learner for one group, carried through scoring untouched.
#[derive(Debug, Clone)]
pub struct SampledGroup {
    /// Prompt ids exactly as the processor expanded them.
    pub prompt_ids: Vec<u32>,
    /// Projector output `[n_image_tokens, hidden]` as host data, computed once by the sampler
    /// (the vision tower is frozen), so the learner never runs the tower.
    pub image_features: Option<(Vec<f32>, [usize; 2])>,
    /// The G completions' ids (stop token included when one ended them).
    pub completion_ids: Vec<Vec<u32>>,
    /// Per-token log-probs the sampler saw, used as old log-probs when sampling ran ahead.
    pub sampled_logprobs: Vec<Vec<f32>>,
    /// Whether each completion ended on an eos id (false = truncated).
    pub stopped: Vec<bool>,
    /// Policy version the completions were sampled with.
    pub policy_version: u64,
    /// Data position just after this group's record: a checkpoint taken after the step
    /// resumes from the last group's cursor.
    pub cursor: Cursor,
}

/// What one optimizer step produced: TRL's metric names and values.
#[derive(Debug, Clone)]
pub struct StepLog {
    /// Optimizer steps done, counting this one (TRL's `global_step`).
    pub step: u64,
    /// Data position after the step's last group.
    pub cursor: Cursor,
    /// Metric name → value (`loss`, `reward`, `grad_norm`, `learning_rate`, …).
    pub metrics: BTreeMap<String, f64>,
    /// Whether the step's update was applied (false: NaN/inf loss or gradient, skipped).
    pub applied: bool,
}

/// What the sampler hands on: the G completions of one prompt, with the question's answer
/// key and whatever the learner will need later (`payload`: token ids, log-probs, the
/// prompt…), which this stage and the advantage stage carry through untouched.
#[derive(Debug, Clone)]
pub struct CompletionGroup<T> {
    /// Question id, for error messages and logs.
    pub question_id: String,
    /// The question's answer key, prepared once (shared with the prompt's other uses).
    pub reference: Arc<Reference>,
    /// The completions, decoded with special tokens skipped.
    pub completions: Vec<String>,
    /// The sampler's data for the learner.
    pub payload: T,
}

/// A group after scoring: `rewards[i]` belongs to `group.completions[i]`.
#[derive(Debug, Clone)]
pub struct ScoredGroup<T> {
    /// The group as it arrived.
    pub group: CompletionGroup<T>,
    /// One breakdown per completion; `total` is what the advantage uses.
    pub rewards: Vec<RewardBreakdown>,
}

/// One optimizer step, ready for the learner.
#[derive(Debug, Clone)]
pub struct ScoredStep<T> {
    /// Step index, counting from 0 in the order steps leave this stage.
    pub step: u64,
    /// The step's groups in arrival (sequence) order.
    pub groups: Vec<ScoredGroup<T>>,
    /// Advantages of every completion, group after group (`values[g * G + i]` is completion
    /// `i` of `groups[g]`), and the flat-group flags the learner uses to skip work.
    pub advantages: Advantages,
    /// TRL's reward metrics for the step (`reward`, `reward_std`, `rewards/<name>/mean`…).
    pub metrics: StepMetrics,
}
