//! LoRA layers against PEFT 0.21.2 (fixtures from `scripts/bnb_peft_fixtures.py`): outputs and
//! gradients w.r.t. lora_A / lora_B of `sum(y * R)` within 1e-4, on dense and NF4 bases.

use super::*;
use crate::quant::nf4::{Nf4Config, WeightSlice};
use crate::quant::testutil::Fixture;
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tolerance;

type AB = Autodiff<Flex>;

fn t2(f: &Fixture, name: &str) -> Tensor<AB, 2> {
    let s = f.shape(name);
    Tensor::from_data(
        TensorData::new(f.f32(name), [s[0], s[1]]),
        &Default::default(),
    )
}

fn names(case: &str) -> Vec<String> {
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::quant::testutil::fixture("lora/targets.json")).unwrap(),
    )
    .unwrap();
    j[case]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn base_layer(f: &Fixture, name: &str, nf4: bool) -> LinearBase<AB> {
    let wname = format!("base.{name}.weight");
    let bias_name = format!("base.{name}.bias");
    let bias = f.names().contains(&bias_name).then(|| {
        Tensor::from_data(
            TensorData::new(f.f32(&bias_name), [f.shape(&bias_name)[0]]),
            &Default::default(),
        )
    });
    if nf4 {
        let s = f.shape(&wname);
        let w = f.f32(&wname);
        let cfg = Nf4Config {
            blocksize: 64,
            double_quant: true,
        };
        LinearBase::Nf4(
            Nf4Linear::quantize_from(WeightSlice::F32(&w), [s[0], s[1]], bias, cfg).unwrap(),
        )
    } else {
        LinearBase::Dense(DenseLinear::new(t2(f, &wname), bias))
    }
}

fn check_case(case: &str, scaling: f64, nf4_first: bool) {
    let f = Fixture::open("lora/lora_ref.safetensors");
    let names = names(case);
    assert!(!names.is_empty());
    let tol = Tolerance::absolute(1e-4);
    for (i, name) in names.iter().enumerate() {
        let base = base_layer(&f, name, nf4_first && i == 0);
        let a = t2(&f, &format!("{case}.{name}.lora_A"));
        let b = t2(&f, &format!("{case}.{name}.lora_B"));
        let layer = LoraLinear {
            base,
            lora: Some(LoraAdapter::from_tensors(
                a,
                b,
                scaling,
                0.1,
                stream_id(name),
            )),
        };
        let x = t2(&f, &format!("{case}.{name}.x"));
        let r = t2(&f, &format!("{case}.{name}.r"));
        let y = layer.forward_mode(x, LoraMode::Eval);
        y.clone()
            .into_data()
            .assert_approx_eq::<f32>(&t2(&f, &format!("{case}.{name}.y")).into_data(), tol);
        let grads = (y * r).sum().backward();
        let l = layer.lora.as_ref().unwrap();
        let ga = l.lora_a.grad(&grads).expect("grad A");
        let gb = l.lora_b.grad(&grads).expect("grad B");
        ga.into_data()
            .assert_approx_eq::<f32>(&t2(&f, &format!("{case}.{name}.grad_A")).into_data(), tol);
        gb.into_data()
            .assert_approx_eq::<f32>(&t2(&f, &format!("{case}.{name}.grad_B")).into_data(), tol);
        if let LinearBase::Dense(d) = &layer.base {
            assert!(
                d.weight.grad(&grads).is_none(),
                "{name}: base weight got a gradient"
            );
        }
    }
}

#[test]
fn dense_base_matches_peft() {
    let s = LoraSettings {
        r: 4,
        alpha: 8.0,
        dropout: 0.1,
        use_rslora: false,
    };
    assert_eq!(s.scaling(), 2.0);
    check_case("plain", s.scaling(), false);
}

#[test]
fn rslora_matches_peft() {
    let s = LoraSettings {
        r: 4,
        alpha: 8.0,
        dropout: 0.1,
        use_rslora: true,
    };
    assert_eq!(s.scaling(), 4.0);
    check_case("rslora", s.scaling(), false);
}

#[test]
fn vision_targets_match_peft() {
    let s = LoraSettings {
        r: 2,
        alpha: 16.0,
        dropout: 0.1,
        use_rslora: false,
    };
    check_case("vision", s.scaling(), false);
}

#[test]
fn nf4_base_matches_peft_on_bitsandbytes_linear4bit() {
    check_case("nf4", 2.0, true);
}

#[test]
fn init_follows_peft_and_dropout_is_seeded_and_train_only() {
    let dev = Default::default();
    let s = LoraSettings {
        r: 8,
        alpha: 16.0,
        dropout: 0.5,
        use_rslora: false,
    };
    let base = LinearBase::Dense(DenseLinear::<AB>::new(Tensor::zeros([6, 100], &dev), None));
    let layer = LoraLinear::from_base(base).with_new_adapter(&s, 42, stream_id("x.q_proj"), &dev);
    let l = layer.lora.as_ref().unwrap();
    let a: Vec<f32> = l.lora_a.val().into_data().to_vec().unwrap();
    let bound = 1.0 / 10.0;
    assert!(a.iter().all(|v| v.abs() <= bound));
    assert!(
        a.iter().any(|v| v.abs() > 0.9 * bound),
        "spans the interval"
    );
    let bsum: f32 = l.lora_b.val().abs().sum().into_scalar();
    assert_eq!(bsum, 0.0);
    // Same seed and stream -> same A; another stream -> another A.
    let again = LoraAdapter::<AB>::init(100, 6, &s, 42, stream_id("x.q_proj"), &dev);
    let other = LoraAdapter::<AB>::init(100, 6, &s, 42, stream_id("x.k_proj"), &dev);
    assert_eq!(again.lora_a.val().into_data(), l.lora_a.val().into_data());
    assert_ne!(other.lora_a.val().into_data(), l.lora_a.val().into_data());
    // Dropout: B = identity-ish so the delta exposes the mask.
    let a = Tensor::<AB, 2>::eye(4, &dev);
    let b = Tensor::<AB, 2>::eye(4, &dev);
    let ad = LoraAdapter::from_tensors(a, b, 1.0, 0.5, 7);
    let x = Tensor::<AB, 2>::ones([64, 4], &dev);
    let eval: Vec<f32> = ad
        .delta(x.clone(), LoraMode::Eval)
        .into_data()
        .to_vec()
        .unwrap();
    assert!(eval.iter().all(|&v| v == 1.0));
    let t1: Vec<f32> = ad
        .delta(x.clone(), LoraMode::Train { seed: 3 })
        .into_data()
        .to_vec()
        .unwrap();
    let t2: Vec<f32> = ad
        .delta(x.clone(), LoraMode::Train { seed: 3 })
        .into_data()
        .to_vec()
        .unwrap();
    let t3: Vec<f32> = ad
        .delta(x, LoraMode::Train { seed: 4 })
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(t1, t2);
    assert_ne!(t1, t3);
    assert!(t1.iter().all(|&v| v == 0.0 || v == 2.0));
    let dropped = t1.iter().filter(|&&v| v == 0.0).count();
    assert!(
        (96..160).contains(&dropped),
        "about half dropped: {dropped}/256"
    );
}

#[test]
fn merged_weight_gives_the_same_output() {
    let f = Fixture::open("lora/lora_ref.safetensors");
    let name = "model.language_model.layers.0.mlp.down_proj";
    let layer = LoraLinear {
        base: base_layer(&f, name, true),
        lora: Some(LoraAdapter::from_tensors(
            t2(&f, &format!("plain.{name}.lora_A")),
            t2(&f, &format!("plain.{name}.lora_B")),
            2.0,
            0.0,
            0,
        )),
    };
    let x = t2(&f, &format!("plain.{name}.x"));
    let merged = layer.merged_weight(&Default::default());
    let y1 = layer.forward_mode(x.clone(), LoraMode::Eval);
    let y2 = x.matmul(merged.transpose());
    y1.into_data()
        .assert_approx_eq::<f32>(&y2.into_data(), Tolerance::absolute(1e-5));
}

/// burn's optimizer sees only lora_A and lora_B: the NF4 weight is not a parameter and the
/// frozen bias gets no gradient, so no optimizer state exists for the base.
#[test]
fn optimizer_sees_only_the_adapter() {
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    let dev = Default::default();
    let w: Vec<f32> = (0..16 * 64)
        .map(|i| ((i % 13) as f32 - 6.0) / 6.0)
        .collect();
    let base = Nf4Linear::<AB>::quantize_from(
        WeightSlice::F32(&w),
        [16, 64],
        Some(Tensor::zeros([16], &dev)),
        Nf4Config::default(),
    )
    .unwrap();
    let s = LoraSettings {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        use_rslora: false,
    };
    let mut layer = LoraLinear::from_base(LinearBase::Nf4(base)).with_new_adapter(&s, 1, 2, &dev);
    // Make B non-zero so A gets a gradient too.
    let l = layer.lora.take().unwrap();
    let b = Tensor::<AB, 2>::ones([16, 4], &dev);
    layer.lora = Some(LoraAdapter::from_tensors(l.lora_a.val(), b, 2.0, 0.0, 0));
    let x = Tensor::<AB, 2>::ones([3, 64], &dev);
    let grads = layer.forward(x).sum().backward();
    let grads = GradientsParams::from_grads(grads, &layer);
    assert_eq!(grads.len(), 2, "only lora_A and lora_B have gradients");
    let before = layer.base.dense_weight(&dev).into_data();
    let mut opt = AdamWConfig::new().init();
    let layer = opt.step(1e-2, layer, grads);
    assert_eq!(
        layer.base.dense_weight(&dev).into_data(),
        before,
        "base unchanged"
    );
}

#[test]
fn train_dropout_applies_only_inside_the_scope_and_is_seeded() {
    let device = Default::default();
    let settings = LoraSettings {
        r: 4,
        alpha: 8.0,
        dropout: 0.5,
        use_rslora: false,
    };
    let w = Tensor::<AB, 2>::zeros([6, 8], &device);
    let mut layer = LoraLinear::new(w, None).with_new_adapter(&settings, 1, 2, &device);
    if let Some(l) = layer.lora.as_mut() {
        l.lora_b = burn::module::Param::from_tensor(Tensor::ones([6, 4], &device));
    }
    let x = Tensor::<AB, 2>::ones([3, 8], &device);
    let eval = layer.forward(x.clone()).into_data();
    let train_a = super::with_train_dropout(7, || layer.forward(x.clone())).into_data();
    let train_b = super::with_train_dropout(7, || layer.forward(x.clone())).into_data();
    let train_c = super::with_train_dropout(8, || layer.forward(x.clone())).into_data();
    assert_eq!(
        layer.forward(x.clone()).into_data(),
        eval,
        "eval again after the scope"
    );
    assert_ne!(train_a, eval, "dropout changes the output in training");
    assert_eq!(train_a, train_b, "same seed, same masks");
    assert_ne!(train_a, train_c, "another seed, other masks");
}

#[test]
fn disabled_adapters_give_the_base_output_only_inside_the_scope() {
    let device = Default::default();
    let settings = LoraSettings {
        r: 2,
        alpha: 4.0,
        dropout: 0.5,
        use_rslora: false,
    };
    let w = Tensor::<AB, 2>::from_data(
        TensorData::new((0..24).map(|i| i as f32 * 0.1 - 1.0).collect(), [4, 6]),
        &device,
    );
    let mut layer = LoraLinear::new(w.clone(), None).with_new_adapter(&settings, 3, 4, &device);
    if let Some(l) = layer.lora.as_mut() {
        l.lora_b = burn::module::Param::from_tensor(Tensor::ones([4, 2], &device));
    }
    let bare = LoraLinear::<AB>::new(w, None);
    let x = Tensor::<AB, 3>::ones([2, 3, 6], &device);
    let with_lora = layer.forward(x.clone()).into_data();
    let base = bare.forward(x.clone()).into_data();
    assert_ne!(with_lora, base, "the adapter changes the output");
    // Inside the scope: the base alone, also in training mode (dropout only touches LoRA).
    let off =
        super::with_adapters_disabled(|| super::with_train_dropout(9, || layer.forward(x.clone())));
    assert_eq!(off.dims(), [2, 3, 4]);
    assert_eq!(off.into_data(), base);
    // Nested scopes restore the outer state; after the scope the adapter is back.
    super::with_adapters_disabled(|| {
        super::with_adapters_disabled(|| ());
        assert!(super::adapters_disabled());
    });
    assert!(!super::adapters_disabled());
    assert_eq!(layer.forward(x).into_data(), with_lora);
}
