//! NF4 quantization (bitsandbytes-compatible) of the frozen base weights.

pub mod nf4;

#[cfg(test)]
pub(crate) mod testutil;
