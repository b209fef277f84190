//! Cross-field rules of the configuration, each error naming the fields involved and why.

use anyhow::{Result, bail};

use super::{Config, STAGE_NAMES, TrainingConfig};

/// Checks relations between fields; the first violation is returned.
pub fn validate(c: &Config) -> Result<()> {
    training(&c.training)?;
    quantization_and_lora(c)?;
    data_shards_prompt(c)?;
    stages_and_rewards(c)
}

/// The `training:` section: sizes, the batch/generations relation, and value ranges.
fn training(t: &TrainingConfig) -> Result<()> {
    for (name, v) in [
        (
            "training.per_device_train_batch_size",
            t.per_device_train_batch_size,
        ),
        (
            "training.gradient_accumulation_steps",
            t.gradient_accumulation_steps,
        ),
        ("training.num_generations", t.num_generations),
        ("training.max_completion_length", t.max_completion_length),
    ] {
        if v == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if t.num_generations < 2 {
        bail!(
            "training.num_generations must be at least 2: GRPO compares completions of one prompt (got {})",
            t.num_generations
        );
    }
    let per_step = t.completions_per_step();
    if !per_step.is_multiple_of(t.num_generations) {
        bail!(
            "training.per_device_train_batch_size × training.gradient_accumulation_steps = {} × {} = {per_step} completions per step is not divisible by training.num_generations = {}: every prompt needs all its generations in one step",
            t.per_device_train_batch_size,
            t.gradient_accumulation_steps,
            t.num_generations
        );
    }
    if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
        bail!(
            "training.learning_rate must be a positive number (got {})",
            t.learning_rate
        );
    }
    if t.beta < 0.0 {
        bail!("training.beta must be ≥ 0 (got {})", t.beta);
    }
    if t.epsilon <= 0.0 || t.epsilon_high() <= 0.0 {
        bail!("training.epsilon and training.epsilon_high must be > 0");
    }
    if t.temperature <= 0.0 {
        bail!("training.temperature must be > 0 (got {})", t.temperature);
    }
    if !(t.top_p > 0.0 && t.top_p <= 1.0) {
        bail!("training.top_p must be in (0, 1] (got {})", t.top_p);
    }
    if !(0.0..1.0).contains(&t.min_p) {
        bail!("training.min_p must be in [0, 1) (got {})", t.min_p);
    }
    if !(0.0..=1.0).contains(&t.warmup_ratio) {
        bail!(
            "training.warmup_ratio must be in [0, 1] (got {})",
            t.warmup_ratio
        );
    }
    if t.max_steps == 0 || t.max_steps < -1 {
        bail!(
            "training.max_steps must be -1 (use num_train_epochs) or ≥ 1 (got {})",
            t.max_steps
        );
    }
    if t.max_steps == -1 && t.num_train_epochs <= 0.0 {
        bail!("training.num_train_epochs must be > 0 when training.max_steps is -1");
    }
    if t.logging_steps == 0 || t.save_steps == 0 {
        bail!("training.logging_steps and training.save_steps must be at least 1");
    }
    Ok(())
}

fn quantization_and_lora(c: &Config) -> Result<()> {
    let q = &c.quantization;
    if q.load_in_4bit && q.bnb_4bit_quant_type != "nf4" {
        bail!(
            "quantization.bnb_4bit_quant_type: only `nf4` is supported (got `{}`)",
            q.bnb_4bit_quant_type
        );
    }
    if q.blocksize == 0 || !q.blocksize.is_power_of_two() {
        bail!(
            "quantization.blocksize must be a power of two (got {})",
            q.blocksize
        );
    }
    let l = &c.lora;
    if l.r == 0 {
        bail!("lora.r must be at least 1");
    }
    if !(0.0..1.0).contains(&l.lora_dropout) {
        bail!(
            "lora.lora_dropout must be in [0, 1) (got {})",
            l.lora_dropout
        );
    }
    if l.target_modules.is_empty() {
        bail!("lora.target_modules must name at least one module suffix");
    }
    Ok(())
}

fn data_shards_prompt(c: &Config) -> Result<()> {
    if let Some(roots) = &c.data.allowed_roots
        && (roots.is_empty() || roots.iter().any(|r| r.trim().is_empty()))
    {
        bail!(
            "data.allowed_roots must list at least one folder, none empty (leave it out for the default: the parent of data.image_root)"
        );
    }
    if c.shards.image_size == 0 || c.shards.records_per_shard == 0 {
        bail!("shards.image_size and shards.records_per_shard must be at least 1");
    }
    if c.prompt.max_prompt_length == 0 {
        bail!("prompt.max_prompt_length must be at least 1");
    }
    Ok(())
}

fn stages_and_rewards(c: &Config) -> Result<()> {
    for (name, s) in &c.stages.0 {
        if !STAGE_NAMES.contains(&name.as_str()) {
            bail!(
                "stages.{name}: unknown stage (known: {})",
                STAGE_NAMES.join(", ")
            );
        }
        if s.workers == 0 || s.capacity == 0 {
            bail!("stages.{name}: workers and capacity must be at least 1");
        }
    }
    for (name, w) in [
        ("correct", c.rewards.weights.correct),
        ("explanation", c.rewards.weights.explanation),
        ("evidence", c.rewards.weights.evidence),
        ("format", c.rewards.weights.format),
        ("conciseness", c.rewards.weights.conciseness),
    ] {
        if !w.is_finite() {
            bail!("rewards.weights.{name} must be a finite number");
        }
    }
    Ok(())
}
