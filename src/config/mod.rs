//! The pipeline YAML: typed sections, defaults that match the reference libraries (TRL
//! GRPOConfig, PEFT LoraConfig, bitsandbytes), `--set a.b=c` overrides, and validation whose
//! errors name the key path and the reason, so a bad run fails before any work starts.

mod overrides;
mod sections;
mod validate;

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::clip::{clip, clip_message};

pub use overrides::apply_override;
pub use sections::*;

/// Everything one run needs; one YAML file, every field documented in the README.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seed of every random choice (shuffling, dropout, sampling); same seed, same run.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Where checkpoints, metrics and the resolved config go.
    #[serde(default = "default_output_dir")]
    pub output_dir: String,
    /// Which checkpoint to load and where it runs.
    pub model: ModelConfig,
    /// NF4 base quantization (bitsandbytes names).
    #[serde(default)]
    pub quantization: QuantizationConfig,
    /// LoRA adapters (PEFT names).
    #[serde(default)]
    pub lora: LoraConfig,
    /// Dataset files and how bad records are handled.
    pub data: DataConfig,
    /// Precomputed image shards.
    #[serde(default)]
    pub shards: ShardsConfig,
    /// How a record becomes a prompt.
    #[serde(default)]
    pub prompt: PromptConfig,
    /// GRPO training knobs (TRL GRPOConfig names and meanings).
    #[serde(default)]
    pub training: TrainingConfig,
    /// Reward weights and limits.
    #[serde(default)]
    pub rewards: RewardsConfig,
    /// Worker threads and channel capacities per stage.
    #[serde(default)]
    pub stages: StagesConfig,
    /// Built-in demo: generate the synthetic dataset named by `data.train`/`data.val` when
    /// it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo: Option<DemoConfig>,
}

fn default_seed() -> u64 {
    42
}

fn default_output_dir() -> String {
    "runs/medgrpo".into()
}

impl Config {
    /// Reads a YAML file, applies `key.path=value` overrides in order, then parses and
    /// validates; every error names the file and the offending key path.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_yaml_str(&text, overrides)
            .with_context(|| format!("invalid config {}", path.display()))
    }

    /// Same as [`Config::load`] for a YAML string (tests, embedded demo).
    pub fn from_yaml_str(text: &str, overrides: &[String]) -> Result<Config> {
        let mut value: serde_norway::Value = serde_norway::from_str(text)
            .map_err(|e| anyhow::anyhow!(clip_message(&e.to_string())))
            .context("not valid YAML")?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            // serde echoes the offending value (`invalid type: string "…"`): keep it short.
            anyhow::anyhow!(
                "{}: {}",
                clip(&path),
                clip_message(&e.into_inner().to_string())
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks relations between fields that serde cannot express.
    pub fn validate(&self) -> Result<()> {
        validate::validate(self)
    }

    /// Writes the fully resolved configuration (defaults filled in, overrides applied) so a
    /// run directory always says exactly what produced it.
    pub fn write_resolved(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create run directory {}", dir.display()))?;
        let path = dir.join("config.yaml");
        let text = serde_norway::to_string(self)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests;
