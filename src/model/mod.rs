//! Gemma 3 vision-language model in burn: config, modules, weight import, tokenizer, generation.

pub mod chat_template;
pub mod config;
pub mod gemma3;
pub mod generate;
pub mod linear;
pub mod lora_linear;
pub mod processor;
pub mod text;
pub mod token_logps;
pub mod tokenizer;
pub mod user_prompt;
pub mod vision;
pub mod weights;

#[cfg(test)]
pub(crate) mod test_util;
