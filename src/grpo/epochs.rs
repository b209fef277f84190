//! Which record comes when: a seeded permutation per epoch and a cursor into it, so a run
//! is reproducible and a resumed run continues with exactly the next prompt.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Position in the data stream: saved in every checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cursor {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Index into that epoch's permutation.
    pub position: u64,
}

/// The order of record indices in `epoch`: a Fisher–Yates shuffle driven by a generator
/// seeded from (seed, epoch) alone, so it does not depend on anything else in the run.
pub fn permutation(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed ^ 0x5EED_0000_0000_0000 ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

/// Record indices from `cursor` on, epoch after epoch, with the cursor after each one;
/// `None` for `max_prompts` means forever (the caller bounds it by steps or epochs).
pub fn draws(len: usize, seed: u64, start: Cursor) -> impl Iterator<Item = (Cursor, usize)> {
    let mut cursor = start;
    let mut order = if len > 0 {
        permutation(len, seed, cursor.epoch)
    } else {
        Vec::new()
    };
    std::iter::from_fn(move || {
        if len == 0 {
            return None;
        }
        if cursor.position as usize >= len {
            cursor = Cursor {
                epoch: cursor.epoch + 1,
                position: 0,
            };
            order = permutation(len, seed, cursor.epoch);
        }
        let index = order[cursor.position as usize];
        cursor.position += 1;
        Some((cursor, index))
    })
}

/// Optimizer steps a run makes: `max_steps` when set, else enough prompts for
/// `num_train_epochs` passes (rounded up to whole steps, like the HF Trainer).
pub fn total_steps(
    records: usize,
    prompts_per_step: usize,
    max_steps: i64,
    num_train_epochs: f64,
) -> u64 {
    if max_steps > 0 {
        return max_steps as u64;
    }
    let prompts = (records as f64 * num_train_epochs).ceil() as u64;
    prompts.div_ceil(prompts_per_step.max(1) as u64).max(1)
}

#[cfg(test)]
mod tests;
