//! The GRPO loss (TRL `_compute_loss`).
