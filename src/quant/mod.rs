//! NF4 quantization (bitsandbytes-compatible) of the frozen base weights.
