//! GRPO: prompts, rewards, group advantages, the loss and the learner.

pub mod advantage;
pub mod checkpoint;
pub mod epochs;
pub mod loss;
pub mod metrics;
pub mod prompt;
pub mod reward;
