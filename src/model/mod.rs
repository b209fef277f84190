//! Gemma 3 vision-language model in burn: config, modules, weight import, tokenizer, generation.
