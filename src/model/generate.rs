//! Generation with a shared-prefix KV cache, and teacher-forced completion log-probs.
//!
//! - Each prompt is prefilled once (batched prompts are left-padded); its cache is then forked into
//!   G rows, one per completion, so the prefix is never recomputed.
//! - Sampling follows transformers' warper order: temperature → top-k → top-p → min-p, then a draw
//!   from a `ChaCha8Rng` seeded per completion from (prompt seed, completion index), so results do
//!   not depend on batch composition or thread count.
//! - The log-prob kept for each sampled token is `log_softmax(logits / temperature)` over the full
//!   vocabulary (unfiltered), which is what TRL recomputes in its loss.
//! - Completions stop at any id of `eos_token_ids` (the stop token is included, as in TRL's
//!   completion ids) or are truncated at `max_new_tokens`.

use anyhow::{Result, bail};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::gemma3::{Gemma3, Keep, KvCache, Step};
use super::token_logps::token_logps_and_entropy;

/// One prompt: already-expanded token ids (image blocks included) and, when it has images, the
/// projector output for its image soft tokens.
#[derive(Debug, Clone)]
pub struct Prompt<B: Backend> {
    /// Token ids exactly as the Hugging Face processor produces them.
    pub ids: Vec<u32>,
    /// `[n_image_tokens, hidden]` image embeddings, in order of appearance.
    pub image_features: Option<Tensor<B, 2>>,
    /// Seed of this prompt's sampling (e.g. derived from run seed and item sequence number).
    pub seed: u64,
}

impl<B: Backend> Prompt<B> {
    /// A text-only prompt.
    pub fn text(ids: Vec<u32>, seed: u64) -> Self {
        Self {
            ids,
            image_features: None,
            seed,
        }
    }
}

/// Decoding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// Argmax decoding (the other sampling knobs are ignored, temperature still scales log-probs).
    pub greedy: bool,
    /// Logits are divided by it before sampling and before log-probs.
    pub temperature: f64,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest top set with probability mass ≥ top_p (1.0 = off).
    pub top_p: f64,
    /// Drop tokens with probability < min_p · max probability (0.0 = off).
    pub min_p: f64,
    /// Maximum completion length.
    pub max_new_tokens: usize,
    /// Ids that end a completion.
    pub eos_token_ids: Vec<u32>,
    /// Fed to the model for rows that already finished (their output is discarded).
    pub pad_token_id: u32,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            greedy: false,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            max_new_tokens: 64,
            eos_token_ids: vec![1, 106],
            pad_token_id: 0,
        }
    }
}

/// One generated completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated ids (the stop token included when it stopped).
    pub ids: Vec<u32>,
    /// `log_softmax(logits / temperature)` at each generated id.
    pub logprobs: Vec<f32>,
    /// True when an eos id ended it, false when `max_new_tokens` truncated it.
    pub stopped: bool,
}

/// The sampling distribution over the vocabulary after temperature, top-k, top-p and min-p, as
/// transformers' warpers compute it (filtered tokens get probability 0).
pub fn filtered_probs(logits: &[f32], opts: &SamplingOptions) -> Vec<f32> {
    let t = opts.temperature as f32;
    let mut scores: Vec<f32> = logits.iter().map(|&x| x / t).collect();
    let n = scores.len();
    let neg = f32::NEG_INFINITY;
    if opts.top_k > 0 && opts.top_k < n {
        // O(n) selection of the k-th largest (a full sort of a 262k vocabulary costs ~20 ms).
        let mut sorted = scores.clone();
        let (_, kth, _) = sorted.select_nth_unstable_by(opts.top_k - 1, |a, b| b.total_cmp(a));
        let kth = *kth;
        for s in scores.iter_mut() {
            if *s < kth {
                *s = neg;
            }
        }
    }
    if opts.top_p < 1.0 {
        // Ascending sort; drop the prefix whose cumulative probability is ≤ 1 − top_p, always
        // keeping the most likely token.
        // Already-filtered tokens have probability 0 and sort first, so only the finite ones
        // need sorting.
        let probs = softmax(&scores);
        let mut order: Vec<usize> = (0..n).filter(|&i| scores[i] > neg).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
        let mut cum = 0.0f32;
        let threshold = (1.0 - opts.top_p) as f32;
        let kept = order.len();
        for (rank, &i) in order.iter().enumerate() {
            cum += probs[i];
            if cum <= threshold && rank + 1 < kept {
                scores[i] = neg;
            }
        }
    }
    if opts.min_p > 0.0 {
        let probs = softmax(&scores);
        let top = probs.iter().copied().fold(0.0f32, f32::max);
        let cut = opts.min_p as f32 * top;
        for (s, p) in scores.iter_mut().zip(&probs) {
            if *p < cut {
                *s = neg;
            }
        }
    }
    softmax(&scores)
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|&v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// `log_softmax(logits / temperature)[token]`, computed in f64 on the host.
pub fn token_logprob(logits: &[f32], token: u32, temperature: f64) -> f32 {
    let scaled: Vec<f64> = logits.iter().map(|&x| x as f64 / temperature).collect();
    let m = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + scaled.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
    (scaled[token as usize] - lse) as f32
}

/// Index of the largest logit (first one on ties, like `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Picks the next token of one row.
pub fn sample_token(logits: &[f32], opts: &SamplingOptions, rng: &mut ChaCha8Rng) -> u32 {
    if opts.greedy {
        return argmax(logits);
    }
    let probs = filtered_probs(logits, opts);
    let u: f32 = rng.random::<f32>();
    let mut cum = 0.0f32;
    let mut last_kept = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cum += p;
            last_kept = i;
            if u < cum {
                return i as u32;
            }
        }
    }
    last_kept as u32
}

/// The generator of completion `index` of a prompt seeded with `seed`.
pub fn completion_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    rng
}

/// Left-pads prompts into one prefill step (shared by generation and the learner's batched
/// scoring, so both see the same padding and image-feature order).
pub fn prefill_step<B: Backend>(prompts: &[Prompt<B>]) -> Result<Step<B>> {
    let width = prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0);
    if width == 0 {
        bail!("empty prompt");
    }
    let mut ids = Vec::with_capacity(prompts.len());
    let mut valid = Vec::with_capacity(prompts.len());
    let mut feats = Vec::new();
    for p in prompts {
        if p.ids.is_empty() {
            bail!("empty prompt");
        }
        let pad = width - p.ids.len();
        let mut row = vec![0u32; pad];
        row.extend_from_slice(&p.ids);
        ids.push(row);
        let mut v = vec![false; pad];
        v.extend(std::iter::repeat_n(true, p.ids.len()));
        valid.push(v);
        if let Some(f) = &p.image_features {
            feats.push(f.clone());
        }
    }
    let any_padding = valid.iter().any(|v| v.iter().any(|x| !x));
    Ok(Step {
        ids,
        valid: any_padding.then_some(valid),
        image_features: if feats.is_empty() {
            None
        } else {
            Some(Tensor::cat(feats, 0))
        },
    })
}

/// The last-position logits, one host row per sequence. A NaN or infinite logit (NaN weights,
/// an overflow) is an error: sampling would otherwise turn it into token 0 at every step.
/// The check is one pass over the row already copied to the host.
fn rows_of<B: Backend>(logits: Tensor<B, 3>) -> Result<Vec<Vec<f32>>> {
    let [b, _, v] = logits.dims();
    let data = logits
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 logits");
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        bail!(
            "non-finite logit ({}) for token id {} of sequence {}: the model's weights or inputs hold NaN or infinity, so generation stops",
            data[i],
            i % v,
            i / v
        );
    }
    Ok((0..b).map(|r| data[r * v..(r + 1) * v].to_vec()).collect())
}

impl<B: Backend> Gemma3<B> {
    /// Generates `num_return` completions for each prompt; the result is indexed
    /// `[prompt][completion]`. Each prompt is prefilled once and its cache forked.
    pub fn generate(
        &self,
        prompts: &[Prompt<B>],
        num_return: usize,
        opts: &SamplingOptions,
    ) -> Result<Vec<Vec<Completion>>> {
        if prompts.is_empty() || num_return == 0 {
            return Ok(vec![Vec::new(); prompts.len()]);
        }
        let step = prefill_step(prompts)?;
        let mut cache = self.new_cache(prompts.len());
        let logits = self.forward(&step, &mut cache, Keep::Last)?;
        let prompt_rows = rows_of(logits)?;
        // Row r of the forked cache is completion r % G of prompt r / G.
        let fork: Vec<usize> = (0..prompts.len() * num_return)
            .map(|r| r / num_return)
            .collect();
        let mut cache: KvCache<B> = if num_return == 1 {
            cache
        } else {
            cache.fork(&fork)
        };
        let mut rows: Vec<Vec<f32>> = fork.iter().map(|&p| prompt_rows[p].clone()).collect();
        let mut rngs: Vec<ChaCha8Rng> = fork
            .iter()
            .enumerate()
            .map(|(r, &p)| completion_rng(prompts[p].seed, r % num_return))
            .collect();
        let mut out: Vec<Completion> = fork
            .iter()
            .map(|_| Completion {
                ids: Vec::new(),
                logprobs: Vec::new(),
                stopped: false,
            })
            .collect();
        // `active[i]` = completion index of cache row i.
        let mut active: Vec<usize> = (0..fork.len()).collect();
        for step_idx in 0..opts.max_new_tokens {
            let mut next = Vec::with_capacity(active.len());
            let mut still = Vec::new();
            for (i, &c) in active.iter().enumerate() {
                let tok = sample_token(&rows[i], opts, &mut rngs[c]);
                out[c].ids.push(tok);
                out[c]
                    .logprobs
                    .push(token_logprob(&rows[i], tok, opts.temperature));
                if opts.eos_token_ids.contains(&tok) {
                    out[c].stopped = true;
                } else {
                    still.push(i);
                }
                next.push(tok);
            }
            if still.is_empty() || step_idx + 1 == opts.max_new_tokens {
                break;
            }
            if still.len() < active.len() {
                // Drop finished rows so they cost nothing more.
                cache = cache.fork(&still);
                next = still.iter().map(|&i| next[i]).collect();
                active = still.iter().map(|&i| active[i]).collect();
            }
            let logits = self.forward(
                &Step::text(next.into_iter().map(|t| vec![t]).collect()),
                &mut cache,
                Keep::Last,
            )?;
            rows = rows_of(logits)?;
        }
        let mut grouped = Vec::with_capacity(prompts.len());
        let mut it = out.into_iter();
        for _ in prompts {
            grouped.push(it.by_ref().take(num_return).collect());
        }
        Ok(grouped)
    }

    /// Teacher-forced log-probs `log_softmax(logits / temperature)` of each completion token
    /// given the prompt: the prompt runs once, its cache is forked to the G completions, and the
    /// completions (right-padded) run in one step attending to it. Returns `[G, max_len]` on the
    /// device (padding positions hold 0) so a learner can differentiate it.
    pub fn completion_logprobs(
        &self,
        prompt: &Prompt<B>,
        completions: &[Vec<u32>],
        temperature: f64,
    ) -> Result<Tensor<B, 2>> {
        let (logps, _) =
            self.completion_token_stats(std::slice::from_ref(prompt), &[completions], temperature)?;
        let len = logps.dims()[1];
        let keep: Vec<f32> = completions
            .iter()
            .flat_map(|c| (0..len).map(move |j| if j < c.len() { 1.0 } else { 0.0 }))
            .collect();
        let keep = Tensor::from_data(
            TensorData::new(keep, [completions.len(), len]),
            &self.device(),
        );
        Ok(logps * keep)
    }

    /// Per completion token of every group: its log-prob and the entropy of the distribution it
    /// was drawn from, both of `logits / temperature`, each `[sum of G, max_len]` (padding
    /// positions score id 0; mask them). Made through the LM head in vocabulary chunks
    /// ([`super::token_logps`]), so no `[tokens × vocab]` tensor exists.
    pub fn completion_token_stats(
        &self,
        prompts: &[Prompt<B>],
        completions: &[&[Vec<u32>]],
        temperature: f64,
    ) -> Result<(Tensor<B, 2>, Tensor<B, 2>)> {
        let h = self.completion_hidden(prompts, completions)?;
        let [n, len, hidden] = h.dims();
        let ids: Vec<i64> = completions
            .iter()
            .flat_map(|g| g.iter())
            .flat_map(|c| (0..len).map(|j| c.get(j).copied().unwrap_or(0) as i64))
            .collect();
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n * len]), &self.device());
        let stats =
            token_logps_and_entropy(h.reshape([n * len, hidden]), &self.head(temperature), ids);
        let logps = stats.clone().narrow(1, 0, 1).reshape([n, len]);
        let entropy = stats.narrow(1, 1, 1).reshape([n, len]);
        Ok((logps, entropy))
    }

    /// Final hidden states `[sum of G, max_len, hidden]` predicting each completion token of
    /// every group (right-padded completions): the prompts are prefilled together (left-padded,
    /// as generation does), each prompt's cache is forked to its own completions, and every
    /// completion (right-padded to the longest of all groups) runs in one step, the groups'
    /// rows in order. Why one forward for several groups: it halves the number of tensor
    /// operations (which dominate at small sizes on the CPU backend) and gives the matrix
    /// products more rows.
    pub fn completion_hidden(
        &self,
        prompts: &[Prompt<B>],
        completions: &[&[Vec<u32>]],
    ) -> Result<Tensor<B, 3>> {
        if prompts.len() != completions.len() || prompts.is_empty() {
            bail!(
                "{} prompts for {} completion groups",
                prompts.len(),
                completions.len()
            );
        }
        let len = completions
            .iter()
            .flat_map(|g| g.iter().map(Vec::len))
            .max()
            .unwrap_or(0);
        if completions.iter().any(|g| g.is_empty()) || len == 0 {
            bail!("no completion tokens to score");
        }
        if prompts.iter().any(|p| p.ids.is_empty()) {
            bail!("empty prompt");
        }
        let mut cache = self.new_cache(prompts.len());
        let first = self.forward_hidden(&prefill_step(prompts)?, &mut cache, Keep::Last)?;
        // Row r of the forked cache belongs to prompt fork[r].
        let fork: Vec<usize> = completions
            .iter()
            .enumerate()
            .flat_map(|(p, g)| std::iter::repeat_n(p, g.len()))
            .collect();
        let n = fork.len();
        let first = if prompts.len() == 1 {
            let hidden = first.dims()[2];
            first.expand([n, 1, hidden])
        } else {
            let idx: Vec<i64> = fork.iter().map(|&p| p as i64).collect();
            first.select(
                0,
                Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [n]), &self.device()),
            )
        };
        if len == 1 {
            return Ok(first);
        }
        let mut cache = cache.fork(&fork);
        let pad = self.config.text.pad_token_id;
        let rows = || completions.iter().flat_map(|g| g.iter());
        let step = Step {
            ids: rows()
                .map(|c| {
                    (0..len - 1)
                        .map(|j| c.get(j).copied().unwrap_or(pad))
                        .collect()
                })
                .collect(),
            valid: Some(
                rows()
                    .map(|c| (0..len - 1).map(|j| j < c.len()).collect())
                    .collect(),
            ),
            image_features: None,
        };
        let rest = self.forward_hidden(&step, &mut cache, Keep::All)?;
        Ok(Tensor::cat(vec![first, rest], 1))
    }
}

#[cfg(test)]
mod tests;
