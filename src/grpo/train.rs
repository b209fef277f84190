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

use super::adamw_step::NamedAdamW;
use super::advantage::stage::{AdvantageStage, ScoredStep};
use super::checkpoint;
use super::epochs::{self, Cursor};
use super::learner::{Learner, SampledGroup, StepLog, StepOptimizer};
use super::policy::PolicyStore;
use super::prompt::{PromptBuilder, PromptInput};
use super::reward::Reference;
use super::reward::stage::{CompletionGroup, RewardStage, ScoredGroup};
use super::sampler::{SamplerInput, SamplerSettings, SamplerStage, StepBatcher};
use crate::config::{Config, StageSettings};
use crate::data::loader::Loader;
use crate::data::record::{Record, load_split, write_rejects};
use crate::lora::adapter::{Adapter, AdapterConfig};
use crate::lora::attach::{AdapterSource, QuantLoraLoad};
use crate::lora::extract::adapter_of;
use crate::lora::targets::{ModuleMatch, TargetSelector, default_match};
use crate::model::config::GenerationDefaults;
use crate::model::gemma3::Gemma3;
use crate::model::lora_linear::LoraSettings;
use crate::model::processor::Gemma3Processor;
use crate::model::tokenizer::GemmaTokenizer;
use crate::quant::nf4::Nf4Config;
use crate::stages::{
    ErrorPolicy, Pipeline, PipelineOptions, Port, Report, Stage, StageOptions, install_ctrlc,
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
    pixels: Option<crate::data::loader::PixelBytes>,
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
    adapter_config: AdapterConfig,
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
        let adapter = adapter_of(self.learner.model(), self.adapter_config.clone());
        let optimizer = self.learner.optimizer();
        checkpoint::save(
            &self.run_dir,
            step,
            config.training.save_total_limit,
            |dir| {
                adapter.save(dir)?;
                optimizer.save_state(dir)?;
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

/// Loads the policy: the checkpoint with NF4 bases when `quantization.load_in_4bit`, and
/// LoRA adapters on the configured targets — new ones (PEFT init, seeded), or the adapter of
/// the checkpoint being resumed.
pub fn load_policy<AB: AutodiffBackend>(
    config: &Config,
    model_dir: &Path,
    device: &AB::Device,
    resume_dir: Option<&Path>,
) -> Result<(Gemma3<AB>, AdapterConfig)> {
    let q = &config.quantization;
    let nf4 = q.load_in_4bit.then_some(Nf4Config {
        blocksize: q.blocksize,
        double_quant: q.bnb_4bit_use_double_quant,
    });
    let l = &config.lora;
    let settings = LoraSettings {
        r: l.r,
        alpha: l.lora_alpha,
        dropout: l.lora_dropout,
        use_rslora: l.use_rslora,
    };
    let targets = ModuleMatch::List(l.target_modules.clone());
    let exclude = default_match(l.include_vision_tower).1;
    let adapter_config = AdapterConfig::new(
        &settings,
        targets.clone(),
        exclude.clone(),
        Some(config.model.path.clone()),
    );
    let adapters = match resume_dir {
        Some(dir) => AdapterSource::Peft(Adapter::load(dir)?),
        None => AdapterSource::New {
            settings,
            selector: TargetSelector::new(&targets, exclude.as_ref())?,
            seed: config.seed,
        },
    };
    let mut hook = QuantLoraLoad::new(nf4, q.quantize_vision_tower, adapters);
    let model = Gemma3::load_with(model_dir, device, &mut hook)?;
    hook.check_all_used()?;
    if hook.attached.is_empty() {
        bail!(
            "lora.target_modules {:?} matched no layer of {}",
            l.target_modules,
            model_dir.display()
        );
    }
    Ok((model, adapter_config))
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
    let split = load_split(Path::new(&config.data.train), &config.data)
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

    // Where to start.
    let resume_dir = resume
        .map(|which| checkpoint::resolve(&run_dir, which))
        .transpose()?;
    let resume_state: Option<TrainerState> = match &resume_dir {
        None => None,
        Some(dir) => {
            let text = std::fs::read_to_string(dir.join("trainer_state.json"))
                .with_context(|| format!("{} has no trainer_state.json", dir.display()))?;
            eprintln!("resuming from {}", dir.display());
            Some(serde_json::from_str(&text)?)
        }
    };

    // Model, processor, weights.
    let model_dir = Path::new(&config.model.path);
    let generation = GenerationDefaults::from_dir(model_dir)?;
    let (model, adapter_config) =
        load_policy::<AB>(config, model_dir, device, resume_dir.as_deref())?;
    let image_size = model.config.vision.as_ref().map(|v| v.image_size as u32);
    let processor = Arc::new(match image_size {
        Some(_) => Gemma3Processor::from_dir(model_dir)?,
        // A text-only checkpoint (Gemma3ForCausalLM) ships no image processor settings.
        None => Gemma3Processor::new(
            GemmaTokenizer::from_dir(model_dir)?,
            crate::model::chat_template::ChatTemplate::from_dir(model_dir)?,
            crate::model::processor::ProcessorConfig::default(),
        )?,
    });
    let loader = image_size
        .map(|size| Loader::open(config, size).map(Arc::new))
        .transpose()?;

    let prompts_per_step = t.prompts_per_step();
    let total_steps = epochs::total_steps(
        records.len(),
        prompts_per_step,
        t.max_steps,
        t.num_train_epochs,
    );
    let (start_step, start_cursor) = match &resume_state {
        None => (0, Cursor::default()),
        Some(state) => {
            if state.seed != config.seed || state.total_steps != total_steps {
                bail!(
                    "--resume: the checkpoint was made with seed {} for {} steps; this config has seed {} for {} steps",
                    state.seed,
                    state.total_steps,
                    config.seed,
                    total_steps
                );
            }
            (state.global_step, state.cursor)
        }
    };
    if start_step >= total_steps {
        bail!("nothing to do: the run already made its {total_steps} steps");
    }
    let mut optimizer: Box<dyn StepOptimizer<AB>> = Box::new(NamedAdamW::<AB>::new(t));
    if let Some(dir) = &resume_dir {
        optimizer.load_state(dir, device)?;
    }
    let policy = Arc::new(PolicyStore::new(model.valid()));
    policy.publish(start_step, model.valid());
    let learner = Learner::new(
        model,
        optimizer,
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
    let policy_bad = ErrorPolicy::from(config.data.on_bad_item);
    let l = loader.clone();
    let model_name = config.model.path.clone();
    let loaded = p.map(
        "loader",
        stage_options(config, "loader", StageSettings::new(2, 16)).on_error(policy_bad),
        source,
        move |_, mut it: Item| {
            let Some(l) = &l else {
                if !it.record.is_text_only() {
                    bail!(
                        "question {}: has an image, but the model {} is text-only",
                        it.record.id,
                        model_name
                    );
                }
                return Ok(Some(it));
            };
            it.pixels = Some(l.record_pixels(&it.record)?);
            Ok(Some(it))
        },
    );
    let split_len = records.len() as u64;
    let builder = Arc::new(PromptBuilder::new(processor.clone(), config.prompt.clone()));
    let prompted = p.map(
        "prompt",
        stage_options(config, "prompt", StageSettings::new(1, 16)).on_error(policy_bad),
        loaded,
        move |_, it: Item| {
            let r = &it.record;
            let built = builder.build(&PromptInput {
                has_image: it.pixels.is_some(),
                ..PromptInput::from(&**r)
            })?;
            let reference = Reference::for_record(built.correct_letter, r)?;
            Ok(Some(SamplerInput {
                question_id: r.id.clone(),
                prompt_ids: built.input_ids,
                pixels: it.pixels,
                reference: Arc::new(reference),
                cursor: it.cursor,
                draw: it.cursor.epoch * split_len + it.cursor.position - 1,
            }))
        },
    );
    let sampling = super::sampler::training_sampling(
        t,
        generation.eos_token_ids.clone(),
        generation.pad_token_id,
    );
    let settings = SamplerSettings {
        sampling,
        num_generations: t.num_generations,
        prompts_per_step,
        max_staleness: t.max_staleness,
        start_step,
        seed: config.seed,
    };
    let tokenizer = Arc::new(processor.tokenizer().clone());
    let learner_stage = LearnerStage {
        learner,
        run_dir: run_dir.clone(),
        config: config.clone(),
        adapter_config,
        total_steps,
        last: None,
        saved: start_step,
    };
    let rewards_cfg = config.rewards.clone();
    let g = t.num_generations;
    let logs_port = grpo_stages(
        &mut p,
        config,
        prompted,
        policy.clone(),
        tokenizer,
        settings,
        move |_| RewardStage::new(rewards_cfg.clone(), g),
        learner_stage,
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

/// The GRPO core of the chain, on an existing pipeline: sampler → reward → advantage →
/// learner. Shared by [`train`] and `medgrpo bench grpo` (which scores with its own reward
/// function and runs a learner without checkpoints), so the benchmark times the real chain.
/// `make_reward` builds one reward stage per worker of `stages.reward`.
#[allow(clippy::too_many_arguments)]
pub fn grpo_stages<B, R, L>(
    p: &mut Pipeline,
    config: &Config,
    prompted: Port<SamplerInput>,
    policy: Arc<PolicyStore<Gemma3<B>>>,
    tokenizer: Arc<GemmaTokenizer>,
    settings: SamplerSettings,
    make_reward: impl FnMut(usize) -> R,
    learner: L,
) -> Port<StepLog>
where
    B: burn::prelude::Backend,
    R: Stage<In = CompletionGroup<SampledGroup>, Out = ScoredGroup<SampledGroup>>,
    L: Stage<In = ScoredStep<SampledGroup>, Out = StepLog>,
{
    let t = &config.training;
    let prompts_per_step = settings.prompts_per_step;
    // One item per optimizer step from here to the advantage stage: the sampler decodes a
    // step's prompts together (see `grpo::sampler`).
    let batched = p.stage(
        "batch",
        StageOptions::new(1, 2)
            .ordered()
            .on_error(ErrorPolicy::Abort),
        prompted,
        move |_| StepBatcher::new(prompts_per_step),
    );
    let sampler_opts = StageOptions {
        workers: 1,
        ..stage_options(config, "sampler", StageSettings::new(1, 2))
    }
    .ordered()
    .on_error(ErrorPolicy::Abort);
    let sampled = p.stage("sampler", sampler_opts, batched, move |_| {
        SamplerStage::new(policy.clone(), tokenizer.clone(), settings.clone())
    });
    let mut make_reward = make_reward;
    let scored = p.stage(
        "reward",
        stage_options(config, "reward", StageSettings::new(1, 8)).on_error(ErrorPolicy::Abort),
        sampled,
        move |w| EachOf(make_reward(w)),
    );
    let g = t.num_generations;
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
        move |_| LastOf(AdvantageStage::new(prompts_per_step, g, scale)),
    );
    let mut learner = Some(learner);
    p.stage(
        "learner",
        StageOptions {
            workers: 1,
            ..stage_options(config, "learner", StageSettings::new(1, 2))
        }
        .ordered()
        .on_error(ErrorPolicy::Abort),
        steps,
        move |_| learner.take().expect("one learner"),
    )
}

/// Runs a per-group stage over a step's list of groups (the reward scorer after the step-wise
/// sampler): every item through the inner stage, the outputs it keeps in order.
pub struct EachOf<S>(pub S);

impl<S: Stage> Stage for EachOf<S> {
    type In = Vec<S::In>;
    type Out = Vec<S::Out>;

    fn process(&mut self, seq: u64, items: Vec<S::In>) -> Result<Option<Vec<S::Out>>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(o) = self.0.process(seq, item)? {
                out.push(o);
            }
        }
        Ok(Some(out))
    }

    fn finish(&mut self) -> Result<()> {
        self.0.finish()
    }
}

/// Feeds a step's list of groups to a stage that collects groups into steps (the advantage
/// stage) and passes on what it completes: one step per list, or nothing for a partial one.
pub struct LastOf<S>(pub S);

impl<S: Stage> Stage for LastOf<S> {
    type In = Vec<S::In>;
    type Out = S::Out;

    fn process(&mut self, seq: u64, items: Vec<S::In>) -> Result<Option<S::Out>> {
        let mut last = None;
        for item in items {
            if let Some(o) = self.0.process(seq, item)? {
                if last.is_some() {
                    bail!("a list of groups completed more than one step");
                }
                last = Some(o);
            }
        }
        Ok(last)
    }

    fn finish(&mut self) -> Result<()> {
        self.0.finish()
    }
}

/// The demo's pipeline on the tiny VLM fixture for the training tests: everything under `dir`
/// (data in `dir/data`, output in `dir/run`), 2 prompts × 4 completions a step, every step
/// logged, all five reward components weighted; `extra` overrides come last and win.
#[cfg(test)]
pub(crate) fn tiny_demo_config(dir: &Path, extra: &[String]) -> Config {
    let mut overrides = crate::demo::overrides_under(dir);
    overrides.extend([
        format!(
            "model.path={}/tests/fixtures/tiny-gemma3",
            env!("CARGO_MANIFEST_DIR")
        ),
        "rewards.weights.explanation=0.6".into(),
        "rewards.weights.evidence=0.2".into(),
        "rewards.weights.conciseness=0.1".into(),
        "training.per_device_train_batch_size=4".into(),
        "training.num_generations=4".into(),
        "training.logging_steps=1".into(),
        // Pinned so the demo's own tuning (pipelines/demo.yaml) does not change these tests.
        "training.learning_rate=3e-3".into(),
        "training.beta=0.0".into(),
    ]);
    overrides.extend_from_slice(extra);
    Config::from_yaml_str(include_str!("../../pipelines/demo.yaml"), &overrides).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    type AB = burn::backend::Autodiff<burn::backend::Flex>;

    fn demo_config(dir: &Path, steps: i64) -> Config {
        tiny_demo_config(
            dir,
            &[
                format!("training.max_steps={steps}"),
                "training.save_steps=1".into(),
                "training.max_completion_length=24".into(),
            ],
        )
    }

    fn metrics(run: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The chain runs end to end on the tiny VLM, logs TRL-named metrics, writes PEFT
    /// checkpoints, and resumes exactly: 3 steps in one run and 2 + resume 1 give the same
    /// logged figures and byte-identical adapters (data cursor, seeds, adapter and optimizer
    /// state all restored).
    #[test]
    fn pipeline_trains_checkpoints_and_resumes_where_it_left_off() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = demo_config(dir.path(), 3);
        crate::demo::synth::generate(&dir.path().join("data"), "train", 16, 32, cfg.seed).unwrap();
        let full = train::<AB>(&cfg, &Default::default(), None, false).unwrap();
        assert_eq!(full.steps, 3);
        let run = dir.path().join("run");
        let m = metrics(&run);
        assert_eq!(m.len(), 3);
        for key in [
            "loss",
            "reward",
            "reward_std",
            "rewards/correct/mean",
            "grad_norm",
            "learning_rate",
            "completions/mean_length",
            "frac_reward_zero_std",
        ] {
            assert!(m[0].get(key).is_some(), "metrics.jsonl lacks {key}");
        }
        let adapter = Adapter::load(&run.join("checkpoint-3")).unwrap();
        assert_eq!(
            adapter.layers.len(),
            6 * 7,
            "one pair per targeted projection of 6 layers"
        );

        let full_adapter =
            std::fs::read(run.join("checkpoint-3/adapter_model.safetensors")).unwrap();
        let after_2 = std::fs::read(run.join("checkpoint-2/adapter_model.safetensors")).unwrap();
        assert_ne!(
            full_adapter, after_2,
            "the adapter must change from step to step"
        );

        // Resume from checkpoint 2 with checkpoint 3 and the metrics gone.
        let cfg2 = demo_config(dir.path(), 3);
        let run2 = PathBuf::from(&cfg2.output_dir);
        std::fs::remove_file(run2.join("metrics.jsonl")).unwrap();
        std::fs::remove_dir_all(run2.join("checkpoint-3")).unwrap();
        let resumed = train::<AB>(&cfg2, &Default::default(), Some("latest"), false).unwrap();
        assert_eq!(resumed.steps, 3);
        let r = metrics(&run2);
        assert_eq!(r.len(), 1);
        for key in [
            "reward",
            "rewards/correct/mean",
            "completions/mean_length",
            "loss",
            "grad_norm",
        ] {
            let (a, b) = (m[2][key].as_f64().unwrap(), r[0][key].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                "{key}: {a} vs {b} after resume"
            );
        }
    }
}
