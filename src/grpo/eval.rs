//! Evaluation: greedy answers on a dataset split, scored with the training rewards.
//!
//! ```text
//! source (file order) → loader (pixels) → prompt (ids + answer key) → sink: generate, score
//! ```
//! The loader and prompt stages are the training chain's (same [`Loader`], same
//! [`PromptBuilder`], same [`Reference`] and [`score`]), so an eval figure means exactly what
//! the training reward of the same name means. Decoding is greedy (argmax) with
//! `max_new_tokens = training.max_completion_length` and the eos ids of
//! `generation_config.json`, so a run is deterministic: same model, same data, same numbers,
//! whatever the number of loader workers (the sink sees records in file order).
//!
//! Generation runs on the caller's thread (the sink), which is why [`evaluate`] can take the
//! model by reference: the lead's demo evaluates its in-memory policy before and after
//! training. With `batch_size > 1` that many prompts are prefilled together (left-padded) and
//! decoded as one batch; the default, 1, decodes each prompt alone, exactly as
//! `medgrpo generate --greedy` does (left padding shifts the slots a sliding-window layer
//! sees, so batched answers can differ in rare near-ties).
//!
//! A record that cannot be evaluated (unreadable image, no image for a vision model, a
//! question the prompt builder rejects) is skipped and listed in [`EvalReport::failures`]
//! under `data.on_bad_item: skip`, or stops the evaluation under `abort`; records the dataset
//! reader rejects are counted in [`EvalReport::rejected`]. Neither counts in `n`.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::prompt::{PromptBuilder, PromptInput};
use super::reward::{COMPONENT_NAMES, Reference, RewardBreakdown, score};
use crate::config::{Config, StageSettings};
use crate::data::loader::{Loader, PixelInput};
use crate::data::record::{Record, load_split};
use crate::lora::adapter::Adapter;
use crate::lora::attach::{AdapterSource, QuantLoraLoad};
use crate::model::config::GenerationDefaults;
use crate::model::gemma3::Gemma3;
use crate::model::generate::{Prompt, SamplingOptions};
use crate::model::processor::Gemma3Processor;
use crate::quant::nf4::Nf4Config;
use crate::stages::{ErrorPolicy, Pipeline, PipelineOptions, StageOptions};

#[cfg(test)]
mod tests;

/// Which dataset split to evaluate; its file is `data.train`, `data.val` or `data.test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// `data.train`.
    Train,
    /// `data.val` (the default: the split made for model selection).
    #[default]
    Val,
    /// `data.test`.
    Test,
}

impl Split {
    /// The split's name as the CLI and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// The split's dataset file from `config.data`; an error names the missing key.
    pub fn path(self, config: &Config) -> Result<&str> {
        let d = &config.data;
        match self {
            Split::Train => Ok(d.train.as_str()),
            Split::Val => d
                .val
                .as_deref()
                .context("--split val: the config has no data.val"),
            Split::Test => d
                .test
                .as_deref()
                .context("--split test: the config has no data.test"),
        }
    }
}

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Dataset split.
    pub split: Split,
    /// Evaluate only the first N valid records of the file.
    pub limit: Option<usize>,
    /// Show a progress bar (accuracy so far) and the per-stage lines.
    pub progress: bool,
    /// Write one JSON line per evaluated record here ([`Prediction`]).
    pub predictions: Option<PathBuf>,
    /// Prompts decoded together (1 = each alone, identical to `medgrpo generate --greedy`).
    pub batch_size: usize,
}

impl Default for EvalOptions {
    /// The validation split, every record, quiet, no predictions file, one prompt at a time.
    fn default() -> Self {
        Self {
            split: Split::Val,
            limit: None,
            progress: false,
            predictions: None,
            batch_size: 1,
        }
    }
}

/// The five reward components (unweighted, each in [0, 1]) and the weighted total.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Rewards {
    /// 1 for the correct letter.
    pub correct: f64,
    /// Token F1 against the reference explanation.
    pub explanation: f64,
    /// Report terms used, min(1, k/3).
    pub evidence: f64,
    /// 1 for a well-formed answer.
    pub format: f64,
    /// 1 for a short answer.
    pub conciseness: f64,
    /// Weighted sum (`rewards.weights`): the training reward.
    pub total: f64,
}

impl From<&RewardBreakdown> for Rewards {
    fn from(r: &RewardBreakdown) -> Self {
        Self {
            correct: r.correct,
            explanation: r.explanation,
            evidence: r.evidence,
            format: r.format,
            conciseness: r.conciseness,
            total: r.total,
        }
    }
}

impl Rewards {
    /// The components in [`COMPONENT_NAMES`] order, then the total.
    fn values(&self) -> [f64; 6] {
        [
            self.correct,
            self.explanation,
            self.evidence,
            self.format,
            self.conciseness,
            self.total,
        ]
    }
}

/// One line of the predictions JSONL: what the model answered and how it scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Question id.
    pub id: String,
    /// The correct letter (as the prompt builder normalized it).
    pub correct_answer: String,
    /// The letter read from the completion's SOLUTION, or null.
    pub predicted: Option<String>,
    /// The completion, decoded with special tokens skipped (what the scorer saw).
    pub completion: String,
    /// Generated tokens (the stop token included).
    pub tokens: usize,
    /// Whether an eos id ended it (false: cut at max_completion_length).
    pub stopped: bool,
    /// The reward components and total.
    pub rewards: Rewards,
    /// The record's `category`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The record's `task_name`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
}

/// Accuracy of a group of questions (one category or task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupAccuracy {
    /// Questions evaluated.
    pub n: usize,
    /// Questions answered with the correct letter.
    pub correct: usize,
}

impl GroupAccuracy {
    /// correct / n (0 for an empty group).
    pub fn accuracy(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.correct as f64 / self.n as f64
        }
    }
}

/// A record left out of the figures, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Question id.
    pub id: String,
    /// Where it failed: `reader`, `loader` or `prompt`.
    pub stage: String,
    /// The reason.
    pub reason: String,
}

/// The figures of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Split evaluated.
    pub split: Split,
    /// Records evaluated (the denominator of every rate).
    pub n: usize,
    /// Records answered with the correct letter.
    pub correct: usize,
    /// correct / n.
    pub accuracy: f64,
    /// Share of completions earning the format reward (exactly one well-formed working-out +
    /// SOLUTION pair).
    pub format_rate: f64,
    /// Share of completions from which an answer letter could be read.
    pub answered_rate: f64,
    /// Mean of each reward component (unweighted) and of the weighted total.
    pub rewards: Rewards,
    /// Mean completion length in tokens.
    pub mean_completion_tokens: f64,
    /// Share of completions cut at max_completion_length (TRL's `completions/clipped_ratio`).
    pub truncated_rate: f64,
    /// Accuracy per `category` (empty when no record has one).
    pub by_category: BTreeMap<String, GroupAccuracy>,
    /// Accuracy per `task_name` (empty when no record has one).
    pub by_task: BTreeMap<String, GroupAccuracy>,
    /// Records the dataset reader rejected (malformed).
    pub rejected: usize,
    /// Valid records that could not be evaluated (image, prompt).
    pub failed: usize,
    /// The rejected and failed records with their reasons (the first 10 000 failures).
    pub failures: Vec<Failure>,
    /// Wall-clock seconds of the evaluation (not part of the deterministic figures).
    pub seconds: f64,
}

/// Running sums behind an [`EvalReport`].
#[derive(Debug, Default)]
struct Tally {
    n: usize,
    correct: usize,
    answered: usize,
    sums: [f64; 6],
    tokens: usize,
    truncated: usize,
    by_category: BTreeMap<String, GroupAccuracy>,
    by_task: BTreeMap<String, GroupAccuracy>,
}

impl Tally {
    fn add(&mut self, p: &Prediction) {
        let ok = p.predicted.as_deref() == Some(p.correct_answer.as_str());
        self.n += 1;
        self.correct += usize::from(ok);
        self.answered += usize::from(p.predicted.is_some());
        for (s, v) in self.sums.iter_mut().zip(p.rewards.values()) {
            *s += v;
        }
        self.tokens += p.tokens;
        self.truncated += usize::from(!p.stopped);
        for (key, map) in [
            (&p.category, &mut self.by_category),
            (&p.task_name, &mut self.by_task),
        ] {
            if let Some(k) = key {
                let g = map.entry(k.clone()).or_default();
                g.n += 1;
                g.correct += usize::from(ok);
            }
        }
    }

    fn report(
        self,
        split: Split,
        (rejected, failed): (usize, usize),
        failures: Vec<Failure>,
        seconds: f64,
    ) -> EvalReport {
        let rate = |k: usize| {
            if self.n == 0 {
                0.0
            } else {
                k as f64 / self.n as f64
            }
        };
        let mean = |i: usize| {
            if self.n == 0 {
                0.0
            } else {
                self.sums[i] / self.n as f64
            }
        };
        EvalReport {
            split,
            n: self.n,
            correct: self.correct,
            accuracy: rate(self.correct),
            format_rate: mean(3),
            answered_rate: rate(self.answered),
            rewards: Rewards {
                correct: mean(0),
                explanation: mean(1),
                evidence: mean(2),
                format: mean(3),
                conciseness: mean(4),
                total: mean(5),
            },
            mean_completion_tokens: if self.n == 0 {
                0.0
            } else {
                self.tokens as f64 / self.n as f64
            },
            truncated_rate: rate(self.truncated),
            by_category: self.by_category,
            by_task: self.by_task,
            rejected,
            failed,
            failures,
            seconds,
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

impl EvalReport {
    /// A human-readable summary: headline rates, reward means, per-category and per-task
    /// accuracy, and the first few failures.
    pub fn render(&self) -> String {
        let mut s = format!(
            "eval on {}: {} questions ({} rejected, {} failed), {:.1} s\n",
            self.split.name(),
            self.n,
            self.rejected,
            self.failed,
            self.seconds
        );
        let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<22} {v:>16}\n"));
        line(
            "accuracy",
            format!("{} ({}/{})", pct(self.accuracy), self.correct, self.n),
        );
        line("format rate", pct(self.format_rate));
        line("answered (letter)", pct(self.answered_rate));
        line("reward total", format!("{:.4}", self.rewards.total));
        for (name, v) in COMPONENT_NAMES.iter().zip(self.rewards.values()) {
            line(&format!("rewards/{name}"), format!("{v:.4}"));
        }
        line(
            "completion tokens",
            format!("{:.1}", self.mean_completion_tokens),
        );
        line("truncated", pct(self.truncated_rate));
        for (title, map) in [
            ("category", &self.by_category),
            ("task_name", &self.by_task),
        ] {
            if map.is_empty() {
                continue;
            }
            s.push_str(&format!("  per {title}:\n"));
            for (k, g) in map {
                s.push_str(&format!(
                    "    {k:<30} n={:<6} {:>7}\n",
                    g.n,
                    pct(g.accuracy())
                ));
            }
        }
        for f in self.failures.iter().take(5) {
            s.push_str(&format!("  skipped {} ({}): {}\n", f.id, f.stage, f.reason));
        }
        if self.failures.len() > 5 {
            s.push_str(&format!(
                "  ... and {} more skipped\n",
                self.failures.len() - 5
            ));
        }
        s
    }

    /// The report as JSON (what `eval.json` holds): every field, accuracy per group included.
    pub fn to_json(&self) -> serde_json::Value {
        let groups = |m: &BTreeMap<String, GroupAccuracy>| -> serde_json::Value {
            m.iter()
                .map(|(k, g)| {
                    (
                        k.clone(),
                        serde_json::json!({"n": g.n, "correct": g.correct, "accuracy": g.accuracy()}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        serde_json::json!({
            "split": self.split.name(),
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "format_rate": self.format_rate,
            "answered_rate": self.answered_rate,
            "rewards": self.rewards,
            "mean_completion_tokens": self.mean_completion_tokens,
            "truncated_rate": self.truncated_rate,
            "by_category": groups(&self.by_category),
            "by_task": groups(&self.by_task),
            "rejected": self.rejected,
            "failed": self.failed,
            "failures": self.failures,
            "seconds": self.seconds,
        })
    }
}

/// One table comparing two evaluations of the same split: base | adapter | Δ (percentage
/// points for rates), with per-category and per-task accuracy.
pub fn compare(base: &EvalReport, adapted: &EvalReport) -> String {
    let mut s = format!(
        "{:<38} {:>10} {:>10} {:>10}\n",
        format!("eval on {}", adapted.split.name()),
        "base",
        "adapter",
        "Δ"
    );
    let mut rate = |k: &str, a: f64, b: f64| {
        s.push_str(&format!(
            "{k:<38} {:>10} {:>10} {:>+9.1}pt\n",
            pct(a),
            pct(b),
            100.0 * (b - a)
        ))
    };
    rate("accuracy", base.accuracy, adapted.accuracy);
    rate("format rate", base.format_rate, adapted.format_rate);
    rate(
        "answered (letter)",
        base.answered_rate,
        adapted.answered_rate,
    );
    rate("truncated", base.truncated_rate, adapted.truncated_rate);
    let mut value = |k: &str, a: f64, b: f64| {
        s.push_str(&format!("{k:<38} {a:>10.4} {b:>10.4} {:>+10.4}\n", b - a))
    };
    value("reward total", base.rewards.total, adapted.rewards.total);
    for (i, name) in COMPONENT_NAMES.iter().enumerate() {
        value(
            &format!("rewards/{name}"),
            base.rewards.values()[i],
            adapted.rewards.values()[i],
        );
    }
    value(
        "completion tokens",
        base.mean_completion_tokens,
        adapted.mean_completion_tokens,
    );
    for (title, a, b) in [
        ("category", &base.by_category, &adapted.by_category),
        ("task_name", &base.by_task, &adapted.by_task),
    ] {
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let (ga, gb) = (
                a.get(k).copied().unwrap_or_default(),
                b.get(k).copied().unwrap_or_default(),
            );
            s.push_str(&format!(
                "{:<38} {:>10} {:>10} {:>+9.1}pt\n",
                format!("{title} {k} (n={})", gb.n.max(ga.n)),
                pct(ga.accuracy()),
                pct(gb.accuracy()),
                100.0 * (gb.accuracy() - ga.accuracy())
            ));
        }
    }
    s.push_str(&format!(
        "{:<38} {:>10} {:>10}\n",
        "questions (rejected+failed)",
        format!("{} ({})", base.n, base.rejected + base.failed),
        format!("{} ({})", adapted.n, adapted.rejected + adapted.failed)
    ));
    s.push_str(&format!(
        "{:<38} {:>10.1} {:>10.1}\n",
        "seconds", base.seconds, adapted.seconds
    ));
    s
}

/// Loads the model of `config` for inference: NF4 bases when `quantization.load_in_4bit`
/// (as the learner sees them), and the PEFT adapter in `adapter` when given (none: the base
/// model). The same hook as training's `load_policy`, without new adapters.
pub fn load_model<B: Backend>(
    config: &Config,
    adapter: Option<&Path>,
    device: &B::Device,
) -> Result<Gemma3<B>> {
    let q = &config.quantization;
    let nf4 = q.load_in_4bit.then_some(Nf4Config {
        blocksize: q.blocksize,
        double_quant: q.bnb_4bit_use_double_quant,
    });
    let adapters = match adapter {
        Some(dir) => AdapterSource::Peft(
            Adapter::load(dir).with_context(|| format!("loading adapter {}", dir.display()))?,
        ),
        None => AdapterSource::None,
    };
    let mut hook = QuantLoraLoad::new(nf4, q.quantize_vision_tower, adapters);
    let dir = Path::new(&config.model.path);
    let model = Gemma3::load_with(dir, device, &mut hook)
        .with_context(|| format!("loading model {}", dir.display()))?;
    hook.check_all_used()?;
    Ok(model)
}

/// A record on its way to the model.
struct Item {
    record: Arc<Record>,
    pixels: Option<PixelInput>,
}

/// A record ready to generate: prompt ids, pixels and answer key.
struct Ready {
    record: Arc<Record>,
    prompt_ids: Vec<u32>,
    pixels: Option<PixelInput>,
    reference: Reference,
    correct_letter: char,
}

fn extra_str(r: &Record, key: &str) -> Option<String> {
    match r.extra.get(key)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Generation and scoring of buffered prompts, on the caller's thread.
struct Scorer<'a, B: Backend> {
    config: &'a Config,
    model: &'a Gemma3<B>,
    processor: &'a Gemma3Processor,
    sampling: SamplingOptions,
    tally: Tally,
    out: Option<BufWriter<std::fs::File>>,
    bar: Option<indicatif::ProgressBar>,
}

impl<B: Backend> Scorer<'_, B> {
    fn run(&mut self, batch: Vec<Ready>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let device = self.model.device();
        let ids: Vec<&str> = batch.iter().map(|r| r.record.id.as_str()).collect();
        // The vision tower runs once per batch; the projector output is split per prompt.
        let with_images: Vec<&PixelInput> =
            batch.iter().filter_map(|r| r.pixels.as_ref()).collect();
        let mut features = Vec::new();
        if !with_images.is_empty() {
            let [c, h, w] = with_images[0].shape();
            let mut data = Vec::with_capacity(with_images.len() * c * h * w);
            for p in &with_images {
                if p.shape() != [c, h, w] {
                    bail!("questions {ids:?}: images of different sizes in one batch");
                }
                data.extend_from_slice(&p.data);
            }
            let px = Tensor::<B, 4>::from_data(
                TensorData::new(data, [with_images.len(), c, h, w]),
                &device,
            );
            let f = self
                .model
                .image_features(px)
                .with_context(|| format!("vision tower on questions {ids:?}"))?;
            let [n, m, d] = f.dims();
            for i in 0..n {
                features.push(f.clone().narrow(0, i, 1).reshape([m, d]));
            }
        }
        let mut features = features.into_iter();
        let prompts: Vec<Prompt<B>> = batch
            .iter()
            .map(|r| Prompt {
                ids: r.prompt_ids.clone(),
                image_features: if r.pixels.is_some() {
                    features.next()
                } else {
                    None
                },
                seed: 0,
            })
            .collect();
        let out = self
            .model
            .generate(&prompts, 1, &self.sampling)
            .with_context(|| format!("generating for questions {ids:?}"))?;
        for (r, mut completions) in batch.into_iter().zip(out) {
            let c = completions
                .pop()
                .context("the model returned no completion")?;
            let text = self.processor.tokenizer().decode(&c.ids, true)?;
            let b = score(&text, &r.reference, &self.config.rewards);
            let p = Prediction {
                id: r.record.id.clone(),
                correct_answer: r.correct_letter.to_string(),
                predicted: b.letter.map(String::from),
                completion: text,
                tokens: c.ids.len(),
                stopped: c.stopped,
                rewards: Rewards::from(&b),
                category: extra_str(&r.record, "category"),
                task_name: extra_str(&r.record, "task_name"),
            };
            self.tally.add(&p);
            if let Some(f) = &mut self.out {
                serde_json::to_writer(&mut *f, &p)?;
                f.write_all(b"\n")?;
            }
            if let Some(bar) = &self.bar {
                bar.inc(1);
                let t = &self.tally;
                bar.set_message(format!(
                    "accuracy {:.1}%  format {:.1}%  reward {:.3}",
                    100.0 * t.correct as f64 / t.n as f64,
                    100.0 * t.sums[3] / t.n as f64,
                    t.sums[5] / t.n as f64
                ));
            }
        }
        Ok(())
    }
}

/// Evaluates `model` on a split of `config`'s data: greedy answers (training's prompt
/// builder, `max_completion_length`, generation_config eos ids), scored with training's
/// rewards; records in file order; deterministic.
pub fn evaluate<B: Backend>(
    config: &Config,
    model: &Gemma3<B>,
    opts: &EvalOptions,
) -> Result<EvalReport> {
    let started = Instant::now();
    let path = opts.split.path(config)?;
    let split = load_split(Path::new(path), &config.data)
        .with_context(|| format!("reading the {} split {path}", opts.split.name()))?;
    let mut failures: Vec<Failure> = split
        .rejected
        .iter()
        .map(|e| Failure {
            id: e.id.clone(),
            stage: "reader".into(),
            reason: e.to_string(),
        })
        .collect();
    let mut records: Vec<Arc<Record>> = split.records.into_iter().map(Arc::new).collect();
    if let Some(n) = opts.limit {
        records.truncate(n);
    }

    let model_dir = Path::new(&config.model.path);
    let processor = Arc::new(Gemma3Processor::from_dir(model_dir)?);
    let generation = GenerationDefaults::from_dir(model_dir)?;
    let image_size = model.config.vision.as_ref().map(|v| v.image_size as u32);
    let has_vision = image_size.is_some();
    let loader = Arc::new(Loader::open(
        config,
        image_size.unwrap_or(config.shards.image_size as u32),
    )?);
    let sampling = SamplingOptions {
        greedy: true,
        temperature: 1.0,
        max_new_tokens: config.training.max_completion_length,
        eos_token_ids: generation.eos_token_ids.clone(),
        pad_token_id: generation.pad_token_id,
        ..SamplingOptions::default()
    };

    let bar = opts.progress.then(|| {
        let bar = indicatif::ProgressBar::new(records.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len}  {msg}  ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("eval {}", opts.split.name()));
        bar
    });
    let options = match &bar {
        Some(b) => PipelineOptions::default().with_headline(b.clone()),
        None => PipelineOptions::quiet(),
    };
    let mut p = Pipeline::new(options);
    let stage_options = |name: &str, default: StageSettings| {
        StageOptions::from(config.stages.get(name, default))
            .on_error(ErrorPolicy::from(config.data.on_bad_item))
    };
    let recs = records.clone();
    let source = p.source(
        "source",
        16,
        recs.into_iter().map(|record| {
            Ok(Item {
                record,
                pixels: None,
            })
        }),
    );
    let l = loader.clone();
    let loaded = p.map(
        "loader",
        stage_options("loader", StageSettings::new(2, 16)),
        source,
        move |_, mut it: Item| {
            if has_vision {
                it.pixels = Some(l.record_pixels(&it.record)?.to_f32());
            }
            Ok(Some(it))
        },
    );
    let builder = Arc::new(PromptBuilder::new(processor.clone(), config.prompt.clone()));
    let prompted = p.map(
        "prompt",
        stage_options("prompt", StageSettings::new(1, 16)),
        loaded,
        move |_, it: Item| {
            let r = &it.record;
            let built = builder.build(&PromptInput {
                has_image: it.pixels.is_some(),
                ..PromptInput::from(&**r)
            })?;
            let reference = Reference::for_record(built.correct_letter, r)?;
            Ok(Some(Ready {
                record: it.record,
                prompt_ids: built.input_ids,
                pixels: it.pixels,
                reference,
                correct_letter: built.correct_letter,
            }))
        },
    );

    let out = match &opts.predictions {
        None => None,
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            Some(BufWriter::new(std::fs::File::create(path).with_context(
                || format!("cannot create predictions file {}", path.display()),
            )?))
        }
    };
    let mut scorer = Scorer {
        config,
        model,
        processor: &processor,
        sampling,
        tally: Tally::default(),
        out,
        bar: bar.clone(),
    };
    let batch_size = opts.batch_size.max(1);
    let mut pending: Vec<Ready> = Vec::with_capacity(batch_size);
    let report = p
        .run_sink("generate", prompted, |_, ready: Ready| {
            pending.push(ready);
            if pending.len() == batch_size {
                scorer.run(std::mem::take(&mut pending))?;
            }
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("eval on {}: {}", opts.split.name(), e.message))?;
    scorer.run(pending)?;
    if let Some(f) = &mut scorer.out {
        f.flush().context("writing the predictions file")?;
    }
    if let Some(b) = &bar {
        b.finish();
    }
    let rejected = failures.len();
    let failed = report.stages.iter().map(|s| s.skipped as usize).sum();
    let mut skipped = report.skipped.clone();
    skipped.sort_by_key(|s| s.seq);
    for s in skipped {
        let id = records
            .get(s.seq as usize)
            .map_or_else(|| format!("#{}", s.seq), |r| r.id.clone());
        failures.push(Failure {
            id,
            stage: s.stage,
            reason: s.reason,
        });
    }
    Ok(scorer.tally.report(
        opts.split,
        (rejected, failed),
        failures,
        started.elapsed().as_secs_f64(),
    ))
}
