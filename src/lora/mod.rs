//! LoRA adapters as PEFT writes them: adapter files, target selection, attaching adapters while
//! the model loads, reading them back from a trained model, and merging them into dense weights.
//! (The LoRA branch of a projection itself is part of the model: `model::lora_linear`.)

pub mod adapter;
pub mod attach;
pub mod extract;
pub mod load;
pub mod merge;
pub mod targets;
