//! `medgrpo pipeline`: the training chain on the stages runtime (the chain and the type on each
//! edge are drawn in [`super::messages`]).
//!
//! The source walks a seeded permutation of the training split epoch by epoch; the loader
//! turns image keys into pixels (shards, or decoded files through an LRU cache); the prompt
//! stage renders the model's own chat template ([`super::front`]); the sampler generates G
//! completions per prompt with the policy version the staleness allows; rewards and advantages
//! are scored; the learner makes one optimizer step per step's worth of groups, publishes the
//! new weights and writes checkpoints; the sink writes TRL-named metrics ([`super::run_log`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use super::advantage::stage::AdvantageStage;
use super::checkpoint::{self, TrainerState};
use super::epochs::{self, Cursor};
use super::front::{FrontEnd, front, run_order};
use super::learner::Learner;
use super::learner::stage::LearnerStage;
use super::messages::{CompletionGroup, Prompted, SampledGroup, ScoredGroup, ScoredStep, StepLog};
use super::optim::{NamedAdamW, StepOptimizer};
use super::policy::PolicyStore;
use super::reward::stage::RewardStage;
use super::run_log::{RunLog, headline};
use super::sampler::{SamplerSettings, SamplerStage, StepBatcher, training_sampling};
use crate::config::{Config, StageSettings};
use crate::data::record::{Record, load_split, write_rejects};
use crate::lora::load::{ModelLoad, adapter_config};
use crate::model::config::GenerationDefaults;
use crate::model::gemma3::Gemma3;
use crate::model::tokenizer::GemmaTokenizer;
use crate::stages::{
    EachOf, ErrorPolicy, LastOf, Pipeline, PipelineOptions, Port, Report, Stage, StageOptions,
    install_ctrlc,
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

fn stage_options(cfg: &Config, name: &str, default: StageSettings) -> StageOptions {
    StageOptions::from(cfg.stages.get(name, default))
}

/// Where a run starts and ends: its planned steps, and the step and data position it starts
/// from (non-zero when resuming).
#[derive(Debug, Clone, Copy)]
struct Plan {
    total_steps: u64,
    start_step: u64,
    start_cursor: Cursor,
}

impl Plan {
    /// The plan of `config` on `records` records, continuing the checkpoint in `resume_dir`
    /// (which must have been made with the same seed and length).
    fn new(config: &Config, records: usize, resume_dir: Option<&Path>) -> Result<Self> {
        let t = &config.training;
        let total_steps = epochs::total_steps(
            records,
            t.prompts_per_step(),
            t.max_steps,
            t.num_train_epochs,
        );
        let (start_step, start_cursor) = match resume_dir {
            None => (0, Cursor::default()),
            Some(dir) => {
                eprintln!("resuming from {}", dir.display());
                let state = TrainerState::read(dir)?;
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
        Ok(Self {
            total_steps,
            start_step,
            start_cursor,
        })
    }

    /// Prompts the run still draws.
    fn prompts(&self, config: &Config) -> usize {
        (self.total_steps - self.start_step) as usize * config.training.prompts_per_step()
    }
}

/// The training split's usable records; rejected ones are listed in `run_dir/rejects.jsonl`.
fn training_records(config: &Config, run_dir: &Path) -> Result<Vec<Arc<Record>>> {
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
    if split.records.is_empty() {
        bail!("data.train {} has no usable record", config.data.train);
    }
    Ok(split.records.into_iter().map(Arc::new).collect())
}

/// The learner of a run: the policy, AdamW (restored when resuming), the schedule.
fn learner<AB: AutodiffBackend>(
    config: &Config,
    model: Gemma3<AB>,
    plan: &Plan,
    resume_dir: Option<&Path>,
    policy: Arc<PolicyStore<Gemma3<AB::InnerBackend>>>,
) -> Result<LearnerStage<AB>> {
    let t = &config.training;
    let mut optimizer: Box<dyn StepOptimizer<AB>> = Box::new(NamedAdamW::<AB>::new(t));
    if let Some(dir) = resume_dir {
        optimizer.load_state(dir, &model.device())?;
    }
    let learner = Learner::new(
        model,
        optimizer,
        t.clone(),
        policy,
        plan.total_steps,
        plan.start_step,
    );
    Ok(LearnerStage::new(
        learner,
        config,
        adapter_config(config),
        plan.total_steps,
        plan.start_step,
    ))
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
    let records = training_records(config, &run_dir)?;
    let resume_dir = resume
        .map(|which| checkpoint::resolve(&run_dir, which))
        .transpose()?;
    let plan = Plan::new(config, records.len(), resume_dir.as_deref())?;
    let model_dir = Path::new(&config.model.path);
    let generation = GenerationDefaults::from_dir(model_dir)?;
    let model = ModelLoad::policy(config, resume_dir.as_deref()).load::<AB>(model_dir, device)?;
    let image_size = model.config.vision.as_ref().map(|v| v.image_size as u32);
    let end = FrontEnd::new(config, image_size, true)?;
    let policy = Arc::new(PolicyStore::new(model.valid()));
    policy.publish(plan.start_step, model.valid());
    let learner = learner(config, model, &plan, resume_dir.as_deref(), policy.clone())?;

    let bar = headline(plan.total_steps, plan.start_step);
    let mut p = Pipeline::new(match progress {
        true => PipelineOptions::default().with_headline(bar.clone()),
        false => PipelineOptions::quiet(),
    });
    install_ctrlc(&p.stop_handle());
    let drawn = run_order(
        records,
        config.seed,
        plan.start_cursor,
        plan.prompts(config),
    );
    let prompted = front(&mut p, config, drawn, &end);
    let t = &config.training;
    let settings = SamplerSettings {
        sampling: training_sampling(t, generation.eos_token_ids, generation.pad_token_id),
        num_generations: t.num_generations,
        prompts_per_step: t.prompts_per_step(),
        max_staleness: t.max_staleness,
        start_step: plan.start_step,
        seed: config.seed,
    };
    let (rewards, g) = (config.rewards.clone(), t.num_generations);
    let tokenizer = Arc::new(end.processor.tokenizer().clone());
    let logs = grpo_stages(
        &mut p,
        config,
        prompted,
        policy,
        tokenizer,
        settings,
        move |_| RewardStage::new(rewards.clone(), g),
        learner,
    );
    let mut log = RunLog::open(&run_dir, bar, t.logging_steps, plan.total_steps, progress)?;
    let report = p
        .run_sink("log", logs, |_, step| log.record(step))
        .map_err(|e| {
            eprintln!("{}", e.report.render());
            anyhow::anyhow!("{}", e.message)
        })?;
    let logs = log.finish();
    Ok(TrainSummary {
        steps: logs.last().map_or(plan.start_step, |l| l.step),
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
    prompted: Port<Prompted>,
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
mod tests;
