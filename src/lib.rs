//! medgrpo: GRPO fine-tuning of MedGemma (a Gemma 3 vision-language model) on chest X-ray
//! multiple-choice questions, with an NF4 base and LoRA adapters, as a chain of streaming
//! stages. See `DESIGN.md` in the shared folder and the README for the architecture.

pub mod bench;
pub mod cli;
pub mod clip;
pub mod commands;
pub mod config;
pub mod data;
pub mod demo;
pub mod device;
pub mod grpo;
pub mod lora;
pub mod memory;
pub mod model;
pub mod quant;
pub mod run_dir;
pub mod stages;
