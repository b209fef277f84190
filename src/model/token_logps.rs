//! Per-token log-probabilities and entropies through the LM head, in vocabulary chunks: the
//! learner's and the reference model's `log_softmax(logits / T)` at the chosen tokens (TRL's
//! `selective_log_softmax`) and the entropy of each next-token distribution (TRL's
//! `entropy_from_logits`), without ever holding a `[tokens × vocab]` tensor.
//!
//! MedGemma's vocabulary is 262,208: the logits of 1,000 completion tokens would be 1 GB of
//! f32, and autodiff would keep them until backward. Instead the head's logits are made one
//! chunk of `VOCAB_CHUNK` rows of the head at a time and folded into running statistics per
//! token (an online softmax: running max `m`, `s = Σ e^(z−m)`, `t = Σ e^(z−m)·z`, and the chosen
//! token's `z`), giving `logp = z_y − lse` and `entropy = lse − t/s` with `lse = m + ln s`.
//! Under autodiff the op has its own backward (the same downcast as `quant::nf4_grad`), which
//! makes the chunks again and adds `dz · W_chunk` into `dh` with
//! `dz = g_logp·(onehot − p) − g_entropy·p·(z − E_p[z])`, so memory stays at one chunk.
//! The head is frozen (tied embeddings, or an untied head without adapters): no head gradient.

use std::any::Any;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::prelude::*;
use burn::tensor::{IndexingUpdateOp, TensorPrimitive};

/// Head rows turned into logits at once: 16 Ki rows × 1,000 tokens is 64 MB of f32.
pub const VOCAB_CHUNK: usize = 16 * 1024;

/// The LM head's settings: `[vocab, hidden]` weight, temperature, final softcap (0 = none).
#[derive(Debug, Clone)]
pub struct Head<B: Backend> {
    /// The head (the tied embedding, or `lm_head`), `[vocab, hidden]`.
    pub weight: Tensor<B, 2>,
    /// Logits are divided by it (after the softcap), as TRL scales them.
    pub temperature: f64,
    /// `cap · tanh(logits / cap)` when positive (Gemma 2's final softcap; Gemma 3 has none).
    pub softcap: f64,
    /// Head rows per chunk.
    pub chunk: usize,
}

impl<B: Backend> Head<B> {
    /// The scaled logits `[n, rows]` of head rows `[v0, v0 + rows)` for hidden states `h`.
    fn logits(&self, h: Tensor<B, 2>, v0: usize, rows: usize) -> Tensor<B, 2> {
        let w = self.weight.clone().narrow(0, v0, rows);
        let mut z = super::linear::x_times_wt(h, w);
        if self.softcap > 0.0 {
            z = z.div_scalar(self.softcap).tanh().mul_scalar(self.softcap);
        }
        if self.temperature != 1.0 {
            z = z.div_scalar(self.temperature);
        }
        z
    }

    /// The chunks `(v0, rows)` of the vocabulary.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + use<B> {
        let (vocab, chunk) = (self.weight.dims()[0], self.chunk.max(1));
        (0..vocab)
            .step_by(chunk)
            .map(move |v0| (v0, chunk.min(vocab - v0)))
    }

    /// The same head on another backend (the inner backend of an autodiff one).
    fn inner<I: Backend>(&self, weight: Tensor<I, 2>) -> Head<I> {
        Head {
            weight,
            temperature: self.temperature,
            softcap: self.softcap,
            chunk: self.chunk,
        }
    }
}

/// Where `ids` fall in head rows `[v0, v0 + rows)`: the local index (clamped into range) and
/// whether it is inside.
fn local_ids<B: Backend>(
    ids: &Tensor<B, 1, Int>,
    v0: usize,
    rows: usize,
) -> (Tensor<B, 2, Int>, Tensor<B, 1>) {
    let local = ids.clone().sub_scalar(v0 as i64);
    let inside = local
        .clone()
        .greater_equal_elem(0)
        .bool_and(local.clone().lower_elem(rows as i64))
        .float();
    (local.clamp(0, rows as i64 - 1).unsqueeze_dim(1), inside)
}

/// The per-token statistics of one pass over the vocabulary.
#[derive(Debug, Clone)]
struct Stats<B: Backend> {
    /// `log Σ e^z`, `[n]`.
    lse: Tensor<B, 1>,
    /// `E_p[z]`, `[n]`.
    mean_z: Tensor<B, 1>,
    /// `z` of the chosen token, `[n]`.
    chosen: Tensor<B, 1>,
}

impl<B: Backend> Stats<B> {
    /// One pass over the head's chunks (an online softmax).
    fn of(h: &Tensor<B, 2>, head: &Head<B>, ids: &Tensor<B, 1, Int>) -> Self {
        let mut acc: Option<[Tensor<B, 1>; 4]> = None;
        for (v0, rows) in head.chunks() {
            let z = head.logits(h.clone(), v0, rows);
            let (local, inside) = local_ids(ids, v0, rows);
            let picked = z.clone().gather(1, local).squeeze_dim::<1>(1) * inside;
            let cm = z.clone().max_dim(1).squeeze_dim::<1>(1);
            acc = Some(match acc {
                None => {
                    let e = (z.clone() - cm.clone().unsqueeze_dim(1)).exp();
                    let (s, t) = (e.clone().sum_dim(1), (e * z).sum_dim(1));
                    [cm, s.squeeze_dim(1), t.squeeze_dim(1), picked]
                }
                Some([m, s, t, chosen]) => {
                    let m2 = m.clone().max_pair(cm);
                    let alpha = (m - m2.clone()).exp();
                    let e = (z.clone() - m2.clone().unsqueeze_dim(1)).exp();
                    let s2 = s * alpha.clone() + e.clone().sum_dim(1).squeeze_dim(1);
                    let t2 = t * alpha + (e * z).sum_dim(1).squeeze_dim(1);
                    [m2, s2, t2, chosen + picked]
                }
            });
        }
        let [m, s, t, chosen] = acc.expect("a head has at least one row");
        Self {
            lse: m + s.clone().log(),
            mean_z: t / s,
            chosen,
        }
    }

    /// `[n, 2]`: the chosen token's log-prob and the entropy.
    fn output(&self) -> Tensor<B, 2> {
        let logp = self.chosen.clone() - self.lse.clone();
        let entropy = self.lse.clone() - self.mean_z.clone();
        Tensor::stack(vec![logp, entropy], 1)
    }

    /// `dh` for the output gradient `g [n, 2]`, making each chunk's logits again.
    fn input_grad(
        &self,
        h: &Tensor<B, 2>,
        head: &Head<B>,
        ids: &Tensor<B, 1, Int>,
        g: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let g_logp = g.clone().narrow(1, 0, 1);
        let g_ent = g.narrow(1, 1, 1);
        let (lse, mean_z) = (
            self.lse.clone().unsqueeze_dim(1),
            self.mean_z.clone().unsqueeze_dim(1),
        );
        let mut dh = h.zeros_like();
        for (v0, rows) in head.chunks() {
            let z = head.logits(h.clone(), v0, rows);
            let p = (z.clone() - lse.clone()).exp();
            let (local, inside) = local_ids(ids, v0, rows);
            let onehot =
                p.zeros_like()
                    .scatter(1, local, inside.unsqueeze_dim(1), IndexingUpdateOp::Add);
            let mut dz = g_logp.clone() * (onehot - p.clone())
                - g_ent.clone() * p * (z.clone() - mean_z.clone());
            if head.temperature != 1.0 {
                dz = dz.div_scalar(head.temperature);
            }
            if head.softcap > 0.0 {
                // d(cap·tanh(u/cap))/du = 1 − tanh², with tanh = z·T / cap.
                let tanh = z.mul_scalar(head.temperature / head.softcap);
                dz = dz * (tanh.clone() * tanh).neg().add_scalar(1.0);
            }
            let w = head.weight.clone().narrow(0, v0, rows);
            dh = dh + dz.matmul(w);
        }
        dh
    }
}

/// `[n, 2]`: for each row of `h [n, hidden]`, the log-prob of `ids[i]` and the entropy of the
/// next-token distribution of `head`, computed in vocabulary chunks.
pub fn token_logps_and_entropy<B: Backend>(
    h: Tensor<B, 2>,
    head: &Head<B>,
    ids: Tensor<B, 1, Int>,
) -> Tensor<B, 2> {
    if let Some(out) = try_autodiff(&h, head, &ids) {
        return out;
    }
    Stats::of(&h, head, &ids).output()
}

/// What the backward needs: the inputs (the head's weight is shared, not copied) and the
/// forward's statistics.
#[derive(Debug, Clone)]
struct SavedHead<B: Backend> {
    h: Tensor<B, 2>,
    head: Head<B>,
    ids: Tensor<B, 1, Int>,
    stats: Stats<B>,
}

#[derive(Debug)]
struct TokenLogpsBackward;

impl<B: Backend> Backward<B, 1> for TokenLogpsBackward {
    type State = SavedHead<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            let g = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(grad));
            s.stats
                .input_grad(&s.h, &s.head, &s.ids, g)
                .into_primitive()
                .tensor()
        });
    }
}

/// The op on `Autodiff<I, C>`: forward on the inner backend, gradient to `h` only.
fn on_autodiff<I: Backend, C: CheckpointStrategy>(
    h: Tensor<Autodiff<I, C>, 2>,
    head: &Head<Autodiff<I, C>>,
    ids: &Tensor<Autodiff<I, C>, 1, Int>,
) -> Tensor<Autodiff<I, C>, 2> {
    let h = h.into_primitive().tensor();
    let inner_h = Tensor::<I, 2>::from_primitive(TensorPrimitive::Float(h.primitive.clone()));
    let inner_head = head.inner(head.weight.clone().inner());
    let inner_ids = ids.clone().inner();
    let stats = Stats::of(&inner_h, &inner_head, &inner_ids);
    let out = stats.output().into_primitive().tensor();
    let out = match TokenLogpsBackward
        .prepare::<C>([h.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            SavedHead {
                h: inner_h,
                head: inner_head,
                ids: inner_ids,
                stats,
            },
            out,
        ),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The op through [`on_autodiff`] when `B` is `Autodiff<I>` for an inner backend of this build.
fn try_autodiff<B: Backend>(
    h: &Tensor<B, 2>,
    head: &Head<B>,
    ids: &Tensor<B, 1, Int>,
) -> Option<Tensor<B, 2>> {
    let y = on::<B, burn::backend::Flex>(h, head, ids);
    #[cfg(feature = "cuda")]
    let y = y.or_else(|| on::<B, burn::backend::Cuda>(h, head, ids));
    y
}

fn on<B: Backend, I: Backend>(
    h: &Tensor<B, 2>,
    head: &Head<B>,
    ids: &Tensor<B, 1, Int>,
) -> Option<Tensor<B, 2>> {
    let h = (h as &dyn Any).downcast_ref::<Tensor<Autodiff<I>, 2>>()?;
    let head = (head as &dyn Any).downcast_ref::<Head<Autodiff<I>>>()?;
    let ids = (ids as &dyn Any).downcast_ref::<Tensor<Autodiff<I>, 1, Int>>()?;
    let y: Box<dyn Any> = Box::new(on_autodiff(h.clone(), head, ids));
    y.downcast::<Tensor<B, 2>>().ok().map(|y| *y)
}

#[cfg(test)]
mod tests;
