//! Gemma 3 vision-language model in burn: config, modules, weight import, tokenizer, generation.

pub mod chat_template;
pub mod processor;
pub mod tokenizer;
