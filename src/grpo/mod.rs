//! GRPO: prompts, rewards, group advantages, the loss and the learner.

pub mod advantage;
pub mod checkpoint;
pub mod epochs;
pub mod eval;
pub mod front;
pub mod group_loss;
pub mod learner;
pub mod loss;
pub mod lr_schedule;
pub mod messages;
pub mod metrics;
pub mod optim;
pub mod policy;
pub mod prompt;
pub mod reward;
pub mod run_log;
pub mod sampler;
pub mod train;
pub mod trend;
