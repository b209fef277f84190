//! GRPO: prompts, rewards, group advantages, the loss and the learner.

pub mod advantage;
pub mod loss;
pub mod optim;
pub mod prompt;
pub mod reward;
pub mod schedule;
