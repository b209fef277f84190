//! The chunked op against the full-vocabulary computation (burn's `log_softmax` over all
//! logits, then gather and `−Σ p log p`): values and input gradients, with chunks that do not
//! divide the vocabulary, a temperature and a softcap, on the plain and the autodiff backend.

use super::*;
use burn::backend::Flex;
use burn::tensor::Tolerance;
use burn::tensor::activation::log_softmax;

type AB = Autodiff<Flex>;

fn data<Bk: Backend>(n: usize, m: usize, seed: usize, scale: f32) -> Tensor<Bk, 2> {
    let v: Vec<f32> = (0..n * m)
        .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0) * scale)
        .collect();
    Tensor::from_data(TensorData::new(v, [n, m]), &Default::default())
}

/// The reference: full logits, log-softmax, chosen log-prob and entropy, both differentiable.
fn full<Bk: Backend>(h: Tensor<Bk, 2>, head: &Head<Bk>, ids: Tensor<Bk, 1, Int>) -> Tensor<Bk, 2> {
    let vocab = head.weight.dims()[0];
    let z = head.logits(h, 0, vocab);
    let lp = log_softmax(z, 1);
    let chosen = lp
        .clone()
        .gather(1, ids.unsqueeze_dim(1))
        .squeeze_dim::<1>(1);
    let entropy = (lp.clone().exp() * lp).sum_dim(1).neg().squeeze_dim::<1>(1);
    Tensor::stack(vec![chosen, entropy], 1)
}

fn cases() -> Vec<(f64, f64, usize)> {
    // (temperature, softcap, chunk): chunks of 7 and 64 do not divide the vocabulary of 100.
    vec![
        (1.0, 0.0, 7),
        (0.7, 0.0, 64),
        (1.0, 30.0, 13),
        (1.3, 5.0, 100),
        (1.0, 0.0, 1000),
    ]
}

#[test]
fn values_equal_the_full_vocabulary_log_softmax() {
    let (n, hidden, vocab) = (6, 16, 100);
    for (temperature, softcap, chunk) in cases() {
        let head = Head::<Flex> {
            weight: data(vocab, hidden, 1, 3.0),
            temperature,
            softcap,
            chunk,
        };
        let h = data::<Flex>(n, hidden, 2, 2.0);
        let ids = Tensor::<Flex, 1, Int>::from_data(
            TensorData::new(vec![0i64, 99, 7, 42, 63, 64], [n]),
            &Default::default(),
        );
        let got = token_logps_and_entropy(h.clone(), &head, ids.clone());
        let want = full(h, &head, ids);
        got.into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
    }
}

#[test]
fn input_gradient_equals_autodiff_through_the_full_vocabulary() {
    let (n, hidden, vocab) = (5, 12, 100);
    for (temperature, softcap, chunk) in cases() {
        let head = Head::<AB> {
            weight: data(vocab, hidden, 3, 3.0),
            temperature,
            softcap,
            chunk,
        };
        let ids = Tensor::<AB, 1, Int>::from_data(
            TensorData::new(vec![3i64, 98, 50, 13, 77], [n]),
            &Default::default(),
        );
        // Weights on both outputs, so both gradients matter.
        let wts = data::<AB>(n, 2, 4, 1.0);
        let h1 = data::<AB>(n, hidden, 5, 2.0).require_grad();
        let out = token_logps_and_entropy(h1.clone(), &head, ids.clone());
        let g1 = h1.grad(&(out * wts.clone()).sum().backward()).unwrap();
        let h2 = data::<AB>(n, hidden, 5, 2.0).require_grad();
        let g2 = h2
            .grad(&(full(h2.clone(), &head, ids) * wts).sum().backward())
            .unwrap();
        g1.into_data()
            .assert_approx_eq::<f32>(&g2.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
    }
}
