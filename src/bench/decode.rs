//! `medgrpo bench decode`: prefill and decode throughput of a real snapshot on CPU, printed next
//! to nothing else (compare with `scripts/bench_decode_transformers.py` on the same machine and
//! thread count). The model directory comes from `MEDGRPO_BENCH_MODEL` (bench takes one
//! positional argument only); `MEDGRPO_BENCH_PROMPT_TOKENS` (default 128) and
//! `MEDGRPO_BENCH_NEW_TOKENS` (default 32) size the run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{env_usize, peak_rss};
use crate::model::gemma3::Gemma3;
use crate::model::generate::{Prompt, SamplingOptions};

/// Runs the benchmark and prints one line per measurement.
pub fn decode() -> Result<()> {
    let dir = PathBuf::from(std::env::var("MEDGRPO_BENCH_MODEL").context(
        "set MEDGRPO_BENCH_MODEL to a Gemma 3 snapshot (e.g. the 270M made by scripts/gemma3_270m_reference.py)",
    )?);
    let n_prompt = env_usize("MEDGRPO_BENCH_PROMPT_TOKENS", 128)?;
    let n_new = env_usize("MEDGRPO_BENCH_NEW_TOKENS", 32)?;
    let t0 = Instant::now();
    let model = Gemma3::<burn::backend::Flex>::load(&dir, &Default::default())?;
    println!(
        "load: {:.2}s ({})",
        t0.elapsed().as_secs_f64(),
        dir.display()
    );
    let vocab = model.config.text.vocab_size as u32;
    // A fixed pseudo-random prompt (ids away from the special range).
    let ids: Vec<u32> = (0..n_prompt)
        .map(|i| 1000 + ((i as u32 * 7919) % (vocab - 2000)))
        .collect();
    let mut ids = ids;
    ids[0] = 2;
    // No eos: every run decodes exactly n_new tokens.
    let opts = SamplingOptions {
        greedy: true,
        max_new_tokens: n_new,
        eos_token_ids: vec![],
        ..Default::default()
    };
    // Warm-up.
    model.generate(
        &[Prompt::text(ids[..8].to_vec(), 0)],
        1,
        &SamplingOptions {
            max_new_tokens: 2,
            ..opts.clone()
        },
    )?;
    let t = Instant::now();
    let prefill_only = SamplingOptions {
        max_new_tokens: 1,
        ..opts.clone()
    };
    model.generate(&[Prompt::text(ids.clone(), 0)], 1, &prefill_only)?;
    let prefill = t.elapsed().as_secs_f64();
    println!(
        "prefill: {n_prompt} tokens in {prefill:.3}s = {:.1} tokens/s",
        n_prompt as f64 / prefill
    );
    for g in [1usize, 4] {
        let t = Instant::now();
        let out = model.generate(&[Prompt::text(ids.clone(), 0)], g, &opts)?;
        let total = t.elapsed().as_secs_f64();
        let decode = (total - prefill).max(1e-9);
        let steps = out[0][0].ids.len().saturating_sub(1).max(1);
        println!(
            "decode G={g}: {} new tokens x {g} in {total:.3}s (prefill {prefill:.3}s) = {:.1} ms/step, {:.1} tokens/s",
            out[0][0].ids.len(),
            decode * 1000.0 / steps as f64,
            (steps * g) as f64 / decode
        );
    }
    if std::env::var("MEDGRPO_BENCH_HEAD").is_ok() {
        head_variants(&model);
    }
    println!("peak RSS: {:.0} MiB", peak_rss() as f64 / (1 << 20) as f64);
    Ok(())
}

/// Times the tied LM head in two layouts at batch 1 and 4 (diagnostic, `MEDGRPO_BENCH_HEAD=1`).
fn head_variants(model: &Gemma3<burn::backend::Flex>) {
    use burn::prelude::*;
    let w = model.language_model.embed_tokens.val();
    let d = w.dims()[1];
    for b in [1usize, 4] {
        let x = Tensor::<burn::backend::Flex, 2>::ones([b, d], &w.device());
        let reps = 5;
        let t = Instant::now();
        for _ in 0..reps {
            let _ = x.clone().matmul(w.clone().transpose()).into_data();
        }
        let a = t.elapsed().as_secs_f64() * 1000.0 / reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            let _ = w.clone().matmul(x.clone().transpose()).into_data();
        }
        let c = t.elapsed().as_secs_f64() * 1000.0 / reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            for r in 0..b {
                let _ = x
                    .clone()
                    .narrow(0, r, 1)
                    .matmul(w.clone().transpose())
                    .into_data();
            }
        }
        let e = t.elapsed().as_secs_f64() * 1000.0 / reps as f64;
        println!("head batch {b}: x·Wᵀ {a:.1} ms, W·xᵀ {c:.1} ms, per-row x·Wᵀ {e:.1} ms");
    }
}
