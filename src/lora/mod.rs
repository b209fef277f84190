//! LoRA adapters (PEFT-compatible) on dense or NF4 base layers, and adapter files.

pub mod adapter;
pub mod attach;
pub mod layer;
pub mod targets;
