//! The NF4 product under autodiff, with its own backward, as bitsandbytes' `MatMul4Bit`:
//! forward dequantizes the frozen weight chunk by chunk and keeps nothing of it; backward
//! re-dequantizes it to compute the input gradient `dX = dY · W` and never computes `dW` (the
//! base is frozen). Without it, burn's matmul backward keeps its right operand — each
//! dequantized f32 chunk — alive until backward: the whole model in f32 (about 15 GB at
//! MedGemma's 34 layers).
//!
//! burn has no generic hook for a backend-specific backward: custom operations are written
//! against `Autodiff<B>` itself. The model code is generic over its backend, so
//! [`try_autodiff`] recognises the autodiff backends this build has (`Autodiff<Flex>`, and
//! `Autodiff<Cuda>` with the `cuda` feature) by type and runs the op on them; on any other
//! backend the caller's plain product runs.

use std::any::Any;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::nf4_linear::Nf4Linear;

/// The backward of `x · Wᵀ` with an NF4 `W`: its state is the layer itself (the shared packed
/// weight), so nothing dense outlives the forward.
#[derive(Debug)]
struct Nf4MatmulBackward;

impl<B: Backend> Backward<B, 1> for Nf4MatmulBackward {
    type State = Nf4Linear<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let layer = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            let dy = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(grad));
            layer.input_grad(dy).into_primitive().tensor()
        });
    }
}

/// `x · Wᵀ` on `Autodiff<B, C>` with `layer`'s NF4 weight, computed on the inner backend.
pub fn matmul<B: Backend, C: CheckpointStrategy>(
    layer: Nf4Linear<B>,
    x: Tensor<Autodiff<B, C>, 2>,
) -> Tensor<Autodiff<B, C>, 2> {
    let x = x.into_primitive().tensor();
    let inner = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(x.primitive.clone()));
    let y = layer.matmul_dequantized(inner).into_primitive().tensor();
    let out = match Nf4MatmulBackward
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(layer, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `x · Wᵀ` through [`matmul`] when `B` is `Autodiff<I>` for an inner backend `I` of this
/// build; `None` otherwise.
pub fn try_autodiff<B: Backend>(layer: &Nf4Linear<B>, x: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let y = on::<B, burn::backend::Flex>(layer, x);
    #[cfg(feature = "cuda")]
    let y = y.or_else(|| on::<B, burn::backend::Cuda>(layer, x));
    y
}

/// [`matmul`] when `B` is `Autodiff<I>`.
fn on<B: Backend, I: Backend>(layer: &Nf4Linear<B>, x: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let x = (x as &dyn Any)
        .downcast_ref::<Tensor<Autodiff<I>, 2>>()?
        .clone();
    let y: Box<dyn Any> = Box::new(matmul(layer.share::<I>(), x));
    y.downcast::<Tensor<B, 2>>().ok().map(|y| *y)
}

#[cfg(test)]
mod tests;
