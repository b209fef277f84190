//! One module per subcommand: its arguments (clap), its `run` function, and what it prints. The
//! work itself is library code in the modules below `commands`.

pub mod bench;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod logprobs;
pub mod loss;
pub mod model_args;
pub mod pipeline;
pub mod reward;
pub mod shard;
