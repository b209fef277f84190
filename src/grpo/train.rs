//! `medgrpo pipeline`: the training chain on the stages runtime.
//!
//! ```text
//! source → loader → prompt → sampler → reward → advantage → learner → sink (metrics.jsonl)
//! ```
//! The source walks a seeded permutation of the training split epoch by epoch; the loader
//! turns image keys into pixels (shards, or decoded files through an LRU cache); the prompt
//! stage renders the model's own chat template; the sampler generates G completions per
//! prompt with the policy version the staleness allows; rewards and advantages are scored;
//! the learner makes one optimizer step per step's worth of groups and publishes the new
//! weights; the sink writes TRL-named metrics and checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use super::advantage::stage::{AdvantageStage, ScoredStep};
use super::checkpoint;
use super::epochs::{self, Cursor};
use super::learner::{AdamWStep, Learner, SampledGroup, StepLog};
use super::policy::PolicyStore;
use super::prompt::{PromptBuilder, PromptInput};
use super::reward::Reference;
use super::reward::stage::RewardStage;
use super::sampler::{SamplerInput, SamplerSettings, SamplerStage};
use crate::config::{Config, StageSettings};
use crate::data::loader::Loader;
use crate::data::record::{Record, load_split, write_rejects};
use crate::model::config::GenerationDefaults;
use crate::model::gemma3::Gemma3;
use crate::model::generate::SamplingOptions;
use crate::model::processor::Gemma3Processor;
use crate::stages::{
    ErrorPolicy, Pipeline, PipelineOptions, Report, Stage, StageOptions, install_ctrlc,
};

/// What a finished run reports.
#[derive(Debug)]
pub struct TrainSummary {
    /// Optimizer steps done in total (including those before a resume).
    pub steps: u64,
    /// Every step's metrics, in order.
    pub logs: Vec<StepLog>,
    /// The runtime's figures.
    pub report: Report,
    /// The run directory.
    pub run_dir: PathBuf,
}

/// A record on its way to the sampler.
struct Item {
    record: Arc<Record>,
    cursor: Cursor,
    pixels: Option<(Vec<f32>, [usize; 3])>,
}

fn stage_options(cfg: &Config, name: &str, default: StageSettings) -> StageOptions {
    StageOptions::from(cfg.stages.get(name, default))
}

/// State saved next to the adapter in every checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub global_step: u64,
    /// Data position to continue from.
    pub cursor: Cursor,
    /// Run seed (all randomness is derived from it, the step and the item).
    pub seed: u64,
    /// Steps the run was planned for (the schedule depends on it).
    pub total_steps: u64,
}

/// The learner as the last stage: one step per scored step, checkpoints every `save_steps`
/// and at the end (the flush hook, which also runs after Ctrl-C).
struct LearnerStage<AB: AutodiffBackend> {
    learner: Learner<AB>,
    run_dir: PathBuf,
    config: Config,
    total_steps: u64,
    last: Option<(u64, Cursor)>,
    saved: u64,
}

impl<AB: AutodiffBackend> LearnerStage<AB> {
    fn save(&mut self) -> Result<()> {
        let Some((step, cursor)) = self.last else {
            return Ok(());
        };
        if step == self.saved {
            return Ok(());
        }
        let state = TrainerState {
            global_step: step,
            cursor,
            seed: self.config.seed,
            total_steps: self.total_steps,
        };
        let config = &self.config;
        checkpoint::save(
            &self.run_dir,
            step,
            config.training.save_total_limit,
            |dir| {
                std::fs::write(
                    dir.join("trainer_state.json"),
                    serde_json::to_string_pretty(&state)?,
                )?;
                config.write_resolved(dir)?;
                Ok(())
            },
        )?;
        self.saved = step;
        Ok(())
    }
}

impl<AB: AutodiffBackend> Stage for LearnerStage<AB> {
    type In = ScoredStep<SampledGroup>;
    type Out = StepLog;

    fn process(&mut self, _seq: u64, step: ScoredStep<SampledGroup>) -> Result<Option<StepLog>> {
        let log = self.learner.step(&step)?;
        self.last = Some((log.step, log.cursor));
        if log
            .step
            .is_multiple_of(self.config.training.save_steps as u64)
        {
            self.save()?;
        }
        Ok(Some(log))
    }

    fn finish(&mut self) -> Result<()> {
        self.save()
    }
}

/// Runs the training pipeline of `config` on the autodiff backend `AB`.
pub fn train<AB: AutodiffBackend>(
    config: &Config,
    device: &AB::Device,
    resume: Option<&str>,
    progress: bool,
) -> Result<TrainSummary> {
    let run_dir = PathBuf::from(&config.output_dir);
    config.write_resolved(&run_dir)?;
    let t = &config.training;

    // Data.
    let split = load_split(
        Path::new(&config.data.train),
        config.data.image_root.as_deref().map(Path::new),
        config.data.on_bad_item,
    )
    .with_context(|| format!("reading data.train {}", config.data.train))?;
    if !split.rejected.is_empty() {
        let path = run_dir.join("rejects.jsonl");
        write_rejects(&path, &split.rejected)?;
        eprintln!(
            "{} record(s) rejected: listed in {}",
            split.rejected.len(),
            path.display()
        );
    }
    let records: Vec<Arc<Record>> = split.records.into_iter().map(Arc::new).collect();
    if records.is_empty() {
        bail!("data.train {} has no usable record", config.data.train);
    }

    // Model, processor, weights.
    let model_dir = Path::new(&config.model.path);
    let processor = Arc::new(Gemma3Processor::from_dir(model_dir)?);
    let generation = GenerationDefaults::from_dir(model_dir)?;
    let model: Gemma3<AB> = Gemma3::load(model_dir, device)?;
    let image_size = model.config.vision.as_ref().map(|v| v.image_size as u32);
    let loader = Arc::new(Loader::open(
        config,
        image_size.unwrap_or(config.shards.image_size as u32),
    )?);

    let prompts_per_step = t.prompts_per_step();
    let total_steps = epochs::total_steps(
        records.len(),
        prompts_per_step,
        t.max_steps,
        t.num_train_epochs,
    );
    let (start_step, start_cursor) = match resume {
        None => (0, Cursor::default()),
        Some(which) => {
            let dir = checkpoint::resolve(&run_dir, which)?;
            let text = std::fs::read_to_string(dir.join("trainer_state.json"))
                .with_context(|| format!("{} has no trainer_state.json", dir.display()))?;
            let state: TrainerState = serde_json::from_str(&text)?;
            if state.seed != config.seed || state.total_steps != total_steps {
                bail!(
                    "--resume: {} was made with seed {} for {} steps; this config has seed {} for {} steps",
                    dir.display(),
                    state.seed,
                    state.total_steps,
                    config.seed,
                    total_steps
                );
            }
            eprintln!(
                "resuming from {} (step {})",
                dir.display(),
                state.global_step
            );
            (state.global_step, state.cursor)
        }
    };
    if start_step >= total_steps {
        bail!("nothing to do: the run already made its {total_steps} steps");
    }
    let policy = Arc::new(PolicyStore::new(model.valid()));
    policy.publish(start_step, model.valid());
    let learner = Learner::new(
        model,
        Box::new(AdamWStep::new(t)),
        t.clone(),
        policy.clone(),
        total_steps,
        start_step,
    );

    // The chain.
    let headline = indicatif::ProgressBar::new(total_steps);
    headline.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] step {pos}/{len}  {msg}  ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    headline.set_prefix("train");
    headline.set_position(start_step);
    let options = if progress {
        PipelineOptions::default().with_headline(headline.clone())
    } else {
        PipelineOptions::quiet()
    };
    let mut p = Pipeline::new(options);
    let stop = p.stop_handle();
    install_ctrlc(&stop);
    let prompts = (total_steps - start_step) as usize * prompts_per_step;
    let recs = records.clone();
    let source = p.source_with(
        "source",
        stage_options(config, "source", StageSettings::new(1, 16)),
        epochs::schedule(records.len(), config.seed, start_cursor)
            .take(prompts)
            .map(move |(cursor, i)| {
                Ok(Item {
                    record: recs[i].clone(),
                    cursor,
                    pixels: None,
                })
            }),
    );
    let has_vision = image_size.is_some();
    let policy_bad = ErrorPolicy::from(config.data.on_bad_item);
    let l = loader.clone();
    let loaded = p.map(
        "loader",
        stage_options(config, "loader", StageSettings::new(2, 16)).on_error(policy_bad),
        source,
        move |_, mut it: Item| {
            if has_vision {
                let (Some(key), Some(path)) =
                    (it.record.image_keys.first(), it.record.image_paths.first())
                else {
                    bail!(
                        "question {}: no image, but the model expects one",
                        it.record.id
                    )
                };
                let px = l
                    .pixels(key, path)
                    .with_context(|| format!("question {}", it.record.id))?;
                let shape = px.shape();
                it.pixels = Some((px.data, shape));
            }
            Ok(Some(it))
        },
    );
    let builder = Arc::new(PromptBuilder::new(processor.clone(), config.prompt.clone()));
    let prompted = p.map(
        "prompt",
        stage_options(config, "prompt", StageSettings::new(1, 16)).on_error(policy_bad),
        loaded,
        move |_, it: Item| {
            let r = &it.record;
            let built = builder.build(&PromptInput {
                id: r.id.clone(),
                question: r.question.clone(),
                options: r.options.clone(),
                correct_answer: r.correct_answer.clone(),
                indication: r.indication.clone(),
                has_image: it.pixels.is_some(),
            })?;
            let reference = Reference::new(
                built.correct_letter,
                &r.explanation,
                r.findings.as_deref().unwrap_or(""),
                r.impression.as_deref().unwrap_or(""),
            )?;
            Ok(Some(SamplerInput {
                question_id: r.id.clone(),
                prompt_ids: built.input_ids,
                pixels: it.pixels,
                reference: Arc::new(reference),
                cursor: it.cursor,
            }))
        },
    );
    let sampling = SamplingOptions {
        greedy: false,
        temperature: t.temperature,
        top_k: t.top_k,
        top_p: t.top_p,
        min_p: t.min_p,
        max_new_tokens: t.max_completion_length,
        eos_token_ids: generation.eos_token_ids.clone(),
        pad_token_id: generation.pad_token_id,
    };
    let settings = SamplerSettings {
        sampling,
        num_generations: t.num_generations,
        prompts_per_step,
        max_staleness: t.max_staleness,
        start_step,
        seed: config.seed,
    };
    let tokenizer = Arc::new(processor.tokenizer().clone());
    let sampler_opts = StageOptions {
        workers: 1,
        ..stage_options(config, "sampler", StageSettings::new(1, 4))
    }
    .ordered()
    .on_error(ErrorPolicy::Abort);
    let pol = policy.clone();
    let sampled = p.stage("sampler", sampler_opts, prompted, move |_| {
        SamplerStage::new(pol.clone(), tokenizer.clone(), settings.clone())
    });
    let rewards_cfg = config.rewards.clone();
    let g = t.num_generations;
    let scored = p.stage(
        "reward",
        stage_options(config, "reward", StageSettings::new(1, 8)).on_error(ErrorPolicy::Abort),
        sampled,
        move |_| RewardStage::new(rewards_cfg.clone(), g),
    );
    let scale = t.scale_rewards;
    let steps = p.stage(
        "advantage",
        StageOptions {
            workers: 1,
            ..stage_options(config, "advantage", StageSettings::new(1, 4))
        }
        .ordered()
        .on_error(ErrorPolicy::Abort),
        scored,
        move |_| AdvantageStage::new(prompts_per_step, g, scale),
    );
    let mut learner_stage = Some(LearnerStage {
        learner,
        run_dir: run_dir.clone(),
        config: config.clone(),
        total_steps,
        last: None,
        saved: start_step,
    });
    let logs_port = p.stage(
        "learner",
        StageOptions {
            workers: 1,
            ..stage_options(config, "learner", StageSettings::new(1, 2))
        }
        .ordered()
        .on_error(ErrorPolicy::Abort),
        steps,
        move |_| learner_stage.take().expect("one learner"),
    );

    let metrics_path = run_dir.join("metrics.jsonl");
    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot open {}", metrics_path.display()))?;
    let mut logs = Vec::new();
    let logging_steps = t.logging_steps as u64;
    let report = p
        .run_sink("log", logs_port, |_, log: StepLog| {
            headline.set_position(log.step);
            let get = |k: &str| log.metrics.get(k).copied().unwrap_or(f64::NAN);
            headline.set_message(format!(
                "reward {:.3}  accuracy {:.0}%  loss {:+.4}",
                get("reward"),
                100.0 * get("rewards/correct/mean"),
                get("loss")
            ));
            if log.step.is_multiple_of(logging_steps) || log.step == total_steps {
                let mut line = serde_json::Map::new();
                line.insert("step".into(), log.step.into());
                for (k, v) in &log.metrics {
                    line.insert(k.clone(), serde_json::json!(v));
                }
                writeln!(metrics_file, "{}", serde_json::Value::Object(line))?;
                if !progress {
                    eprintln!(
                        "step {}/{}: reward {:.3} accuracy {:.0}% loss {:+.4}",
                        log.step,
                        total_steps,
                        get("reward"),
                        100.0 * get("rewards/correct/mean"),
                        get("loss")
                    );
                }
            }
            logs.push(log);
            Ok(())
        })
        .map_err(|e| {
            eprintln!("{}", e.report.render());
            anyhow::anyhow!("{}", e.message)
        })?;
    headline.finish();
    let steps = logs.last().map_or(start_step, |l| l.step);
    Ok(TrainSummary {
        steps,
        logs,
        report,
        run_dir,
    })
}
