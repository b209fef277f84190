//! NF4 quantization (bitsandbytes-compatible) of the frozen base weights.

pub mod nf4;
pub mod nf4_grad;
pub mod nf4_linear;

#[cfg(test)]
pub(crate) mod testutil;
