//! Evaluation: greedy answers on a dataset split, scored with the training rewards.
//!
//! ```text
//! source (file order) → loader (pixels) → prompt (ids + answer key) → sink: generate, score
//! ```
//! The source, loader and prompt stages are the training chain's ([`super::front`]: same
//! loader, same prompt builder, same answer key) and the scorer is training's [`score`], so an eval figure means exactly what
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

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::front::{FrontEnd, file_order, front};
use super::messages::Prompted;
use super::reward::score;
use crate::config::Config;
use crate::data::record::{Record, load_split};
use crate::model::config::GenerationDefaults;
use crate::model::gemma3::Gemma3;
use crate::model::generate::{Prompt, SamplingOptions};
use crate::model::processor::Gemma3Processor;
use crate::stages::{Pipeline, PipelineOptions, Report};

mod report;

use report::Tally;
pub use report::{EvalReport, Failure, GroupAccuracy, Prediction, compare};

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

fn extra_str(r: &Record, key: &str) -> Option<String> {
    match r.extra.get(key)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A prompt of the split and its record.
type Item = (Arc<Record>, Prompted);

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
    /// The projector output of the batch's images (one vision-tower run), one `[tokens,
    /// hidden]` per prompt that has an image, in order.
    fn image_features(&self, batch: &[Item]) -> Result<Vec<Tensor<B, 2>>> {
        let ids: Vec<&str> = batch.iter().map(|(r, _)| r.id.as_str()).collect();
        let images: Vec<_> = batch
            .iter()
            .filter_map(|(_, p)| p.pixels.as_ref().map(|px| px.to_f32()))
            .collect();
        let Some(first) = images.first() else {
            return Ok(Vec::new());
        };
        let [c, h, w] = first.shape();
        let mut data = Vec::with_capacity(images.len() * c * h * w);
        for p in &images {
            if p.shape() != [c, h, w] {
                bail!("questions {ids:?}: images of different sizes in one batch");
            }
            data.extend_from_slice(&p.data);
        }
        let device = self.model.device();
        let px = Tensor::<B, 4>::from_data(TensorData::new(data, [images.len(), c, h, w]), &device);
        let f = self
            .model
            .image_features(px)
            .with_context(|| format!("vision tower on questions {ids:?}"))?;
        let [n, m, d] = f.dims();
        Ok((0..n)
            .map(|i| f.clone().narrow(0, i, 1).reshape([m, d]))
            .collect())
    }

    /// Generates greedily for a batch of prompts, scores, counts and writes each answer.
    fn run(&mut self, batch: Vec<Item>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut features = self.image_features(&batch)?.into_iter();
        let prompts: Vec<Prompt<B>> = batch
            .iter()
            .map(|(_, p)| Prompt {
                ids: p.prompt_ids.clone(),
                image_features: p.pixels.as_ref().and_then(|_| features.next()),
                seed: 0,
            })
            .collect();
        let out = self
            .model
            .generate(&prompts, 1, &self.sampling)
            .with_context(|| {
                let ids: Vec<&str> = batch.iter().map(|(r, _)| r.id.as_str()).collect();
                format!("generating for questions {ids:?}")
            })?;
        for ((record, prompted), mut completions) in batch.into_iter().zip(out) {
            let c = completions
                .pop()
                .context("the model returned no completion")?;
            let text = self.processor.tokenizer().decode(&c.ids, true)?;
            let rewards = score(&text, &prompted.reference, &self.config.rewards);
            let p = Prediction {
                id: record.id.clone(),
                correct_answer: prompted.reference.correct_answer.to_string(),
                predicted: rewards.letter.map(String::from),
                completion: text,
                tokens: c.ids.len(),
                stopped: c.stopped,
                rewards,
                category: extra_str(&record, "category"),
                task_name: extra_str(&record, "task_name"),
            };
            self.record(&p)?;
        }
        Ok(())
    }

    /// Counts a prediction, writes its line and shows the running figures.
    fn record(&mut self, p: &Prediction) -> Result<()> {
        self.tally.add(p);
        if let Some(f) = &mut self.out {
            serde_json::to_writer(&mut *f, p)?;
            f.write_all(b"\n")?;
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let t = &self.tally;
            let n = t.n as f64;
            bar.set_message(format!(
                "accuracy {:.1}%  format {:.1}%  reward {:.3}",
                100.0 * t.correct as f64 / n,
                100.0 * t.rewards.format / n,
                t.rewards.total / n
            ));
        }
        Ok(())
    }
}

/// The split's records (the first `limit`), and the ones its reader rejected, as failures.
fn split_records(config: &Config, opts: &EvalOptions) -> Result<(Vec<Arc<Record>>, Vec<Failure>)> {
    let path = opts.split.path(config)?;
    let split = load_split(Path::new(path), &config.data)
        .with_context(|| format!("reading the {} split {path}", opts.split.name()))?;
    let failures = split
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
    Ok((records, failures))
}

/// The progress bar of an evaluation of `n` records.
fn progress_bar(n: usize, split: Split) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len}  {msg}  ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("eval {}", split.name()));
    bar
}

/// The predictions file, created with its directory.
fn predictions_file(path: &Path) -> Result<BufWriter<std::fs::File>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create predictions file {}", path.display()))?;
    Ok(BufWriter::new(file))
}

/// The records the chain skipped (loader, prompt), named by id, in file order.
fn skipped(report: &Report, records: &[Arc<Record>]) -> Vec<Failure> {
    let mut skipped = report.skipped.clone();
    skipped.sort_by_key(|s| s.seq);
    skipped
        .into_iter()
        .map(|s| Failure {
            id: records
                .get(s.seq as usize)
                .map_or_else(|| format!("#{}", s.seq), |r| r.id.clone()),
            stage: s.stage,
            reason: s.reason,
        })
        .collect()
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
    let (records, mut failures) = split_records(config, opts)?;
    let generation = GenerationDefaults::from_dir(Path::new(&config.model.path))?;
    let image_size = model.config.vision.as_ref().map(|v| v.image_size as u32);
    let end = FrontEnd::new(config, image_size, false)?;
    let bar = opts
        .progress
        .then(|| progress_bar(records.len(), opts.split));
    let mut p = Pipeline::new(match &bar {
        Some(b) => PipelineOptions::default().with_headline(b.clone()),
        None => PipelineOptions::quiet(),
    });
    let prompted = front(&mut p, config, file_order(records.clone()), &end);
    let mut scorer = Scorer {
        config,
        model,
        processor: &end.processor,
        sampling: SamplingOptions {
            greedy: true,
            temperature: 1.0,
            max_new_tokens: config.training.max_completion_length,
            eos_token_ids: generation.eos_token_ids.clone(),
            pad_token_id: generation.pad_token_id,
            ..SamplingOptions::default()
        },
        tally: Tally::default(),
        out: opts
            .predictions
            .as_deref()
            .map(predictions_file)
            .transpose()?,
        bar: bar.clone(),
    };
    let batch_size = opts.batch_size.max(1);
    let mut pending: Vec<Item> = Vec::with_capacity(batch_size);
    let report = p
        .run_sink("generate", prompted, |seq, item: Prompted| {
            pending.push((records[seq as usize].clone(), item));
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
    failures.extend(skipped(&report, &records));
    Ok(scorer.tally.report(
        opts.split,
        (rejected, failed),
        failures,
        started.elapsed().as_secs_f64(),
    ))
}
