//! The sampler stage: per optimizer step's prompts, the vision tower once per image, the prompts
//! prefilled together once, then G completions per prompt sharing its KV cache, all the step's
//! completions decoded together, with the policy version the run's staleness allows.
//!
//! Why a step at a time: on the CPU a decode step of a small model costs about the same for 4
//! rows as for 8 (its cost is streaming the weights and per-operation overhead), so decoding the
//! step's prompts together halves the sampler's time for 2 prompts per step, as TRL generates a
//! whole generation batch at once. [`StepBatcher`] groups the prompts (in stream order).
//!
//! Seeds come from (run seed, draw number of the prompt), so the completions of a prompt do not
//! depend on which worker or batch produced them.

use std::sync::Arc;

use anyhow::{Context, Result};
use burn::prelude::*;

use super::messages::{CompletionGroup, Prompted, SampledGroup};
use super::policy::PolicyStore;
use crate::config::TrainingConfig;
use crate::model::gemma3::Gemma3;
use crate::model::generate::{Prompt, SamplingOptions};
use crate::model::tokenizer::GemmaTokenizer;
use crate::stages::Stage;

/// How a training run samples: GRPOConfig's temperature, top-k/p, min-p and completion length,
/// with the checkpoint's end and pad ids (the pipeline and the benchmark share it).
pub fn training_sampling(
    t: &TrainingConfig,
    eos_token_ids: Vec<u32>,
    pad_token_id: u32,
) -> SamplingOptions {
    SamplingOptions {
        greedy: false,
        temperature: t.temperature,
        top_k: t.top_k,
        top_p: t.top_p,
        min_p: t.min_p,
        max_new_tokens: t.max_completion_length,
        eos_token_ids,
        pad_token_id,
    }
}

/// Settings of the sampler.
#[derive(Debug, Clone)]
pub struct SamplerSettings {
    /// Decoding options (temperature, top-p/k, min-p, max tokens, eos ids).
    pub sampling: SamplingOptions,
    /// Completions per prompt.
    pub num_generations: usize,
    /// Prompts per optimizer step.
    pub prompts_per_step: usize,
    /// Steps sampling may run ahead of the learner.
    pub max_staleness: usize,
    /// Optimizer steps already done (non-zero when resuming).
    pub start_step: u64,
    /// Run seed.
    pub seed: u64,
}

/// Generates the completions of each prompt with the newest weights it may use.
pub struct SamplerStage<B: Backend> {
    policy: Arc<PolicyStore<Gemma3<B>>>,
    tokenizer: Arc<GemmaTokenizer>,
    settings: SamplerSettings,
    produced: u64,
}

impl<B: Backend> SamplerStage<B> {
    /// A sampler reading weights from `policy`; run it with one worker (it paces itself on
    /// the learner, so more workers would only wait).
    pub fn new(
        policy: Arc<PolicyStore<Gemma3<B>>>,
        tokenizer: Arc<GemmaTokenizer>,
        settings: SamplerSettings,
    ) -> Self {
        let produced = settings.start_step * settings.prompts_per_step as u64;
        Self {
            policy,
            tokenizer,
            settings,
            produced,
        }
    }
}

/// The seed of the completions of draw `draw`.
pub fn prompt_seed(run_seed: u64, draw: u64) -> u64 {
    run_seed
        .wrapping_mul(0x2545_F491_4F6C_DD1D)
        .wrapping_add(draw.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        ^ 0x5A3D_1E00
}

/// Groups the prompt stream into the optimizer steps' prompt lists (`prompts_per_step` each, in
/// stream order: run it ordered with one worker), so the sampler decodes a step's prompts
/// together. A partial step at the end of the stream is dropped with a warning, as the advantage
/// stage would drop its groups.
pub struct StepBatcher {
    prompts_per_step: usize,
    pending: Vec<Prompted>,
}

impl StepBatcher {
    /// A batcher of `prompts_per_step` prompts (at least 1).
    pub fn new(prompts_per_step: usize) -> Self {
        Self {
            prompts_per_step: prompts_per_step.max(1),
            pending: Vec::new(),
        }
    }
}

impl Stage for StepBatcher {
    type In = Prompted;
    type Out = Vec<Prompted>;

    fn process(&mut self, _seq: u64, item: Prompted) -> Result<Option<Vec<Prompted>>> {
        self.pending.push(item);
        if self.pending.len() < self.prompts_per_step {
            return Ok(None);
        }
        Ok(Some(std::mem::take(&mut self.pending)))
    }

    fn finish(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            eprintln!(
                "warning: sampler: {} prompt(s) left at the end of the stream do not fill a step of {}; dropped",
                self.pending.len(),
                self.prompts_per_step
            );
            self.pending.clear();
        }
        Ok(())
    }
}

impl<B: Backend> Stage for SamplerStage<B> {
    type In = Vec<Prompted>;
    type Out = Vec<CompletionGroup<SampledGroup>>;

    fn process(&mut self, _seq: u64, items: Vec<Prompted>) -> Result<Option<Self::Out>> {
        let s = &self.settings;
        anyhow::ensure!(!items.is_empty(), "the sampler got an empty step");
        let step = self.produced / s.prompts_per_step.max(1) as u64;
        self.produced += items.len() as u64;
        let (version, model) = self
            .policy
            .wait_for(step.saturating_sub(s.max_staleness as u64))?;
        let device = model.device();
        let mut prompts = Vec::with_capacity(items.len());
        let mut host = Vec::with_capacity(items.len());
        for item in &items {
            let image_features = match &item.pixels {
                None => None,
                Some(px) => {
                    let f = model
                        .image_features(px.to_tensor::<B>(&device))
                        .with_context(|| format!("image of question {}", item.question_id))?;
                    let [_, m, d] = f.dims();
                    Some(f.reshape([m, d]))
                }
            };
            host.push(match &image_features {
                None => None,
                Some(f) => {
                    let [m, d] = f.dims();
                    let v = f
                        .clone()
                        .into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    Some((v, [m, d]))
                }
            });
            prompts.push(Prompt {
                ids: item.prompt_ids.clone(),
                image_features,
                seed: prompt_seed(s.seed, item.draw),
            });
        }
        let groups = model
            .generate(&prompts, s.num_generations, &s.sampling)
            .with_context(|| {
                let ids: Vec<&str> = items.iter().map(|i| i.question_id.as_str()).collect();
                format!("sampling questions {}", ids.join(", "))
            })?;
        let mut out = Vec::with_capacity(items.len());
        for ((item, completions), host_features) in items.into_iter().zip(groups).zip(host) {
            let texts = completions
                .iter()
                .map(|c| self.tokenizer.decode(&c.ids, true))
                .collect::<Result<Vec<_>>>()?;
            out.push(CompletionGroup {
                question_id: item.question_id,
                reference: item.reference,
                completions: texts,
                payload: SampledGroup {
                    prompt_ids: item.prompt_ids,
                    image_features: host_features,
                    completion_ids: completions.iter().map(|c| c.ids.clone()).collect(),
                    sampled_logprobs: completions.iter().map(|c| c.logprobs.clone()).collect(),
                    stopped: completions.iter().map(|c| c.stopped).collect(),
                    policy_version: version,
                    cursor: item.cursor,
                },
            });
        }
        Ok(Some(out))
    }
}
