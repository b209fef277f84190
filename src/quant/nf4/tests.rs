//! NF4 against bitsandbytes 0.50.2 (fixtures from `scripts/bnb_peft_fixtures.py`).

use super::*;
use crate::quant::testutil::Fixture;

fn reference() -> Fixture {
    Fixture::open("nf4/nf4_ref.safetensors")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn codes_are_bitsandbytes_nf4() {
    let f = reference();
    assert_eq!(bits(&f.f32("nf4_code")), bits(&NF4_CODE));
    assert_eq!(NF4_CODE[NF4_ZERO_INDEX as usize], 0.0);
}

#[test]
fn dynamic_map_is_bitsandbytes() {
    let f = reference();
    assert_eq!(bits(&f.f32("dynamic_map")), bits(dynamic_map()));
}

/// 481 values (not a multiple of 64, odd), an all-zero block and values exactly on midpoints.
#[test]
fn plain_quantize_and_dequantize_match_bitsandbytes() {
    let f = reference();
    let w = f.f32("small.weight");
    let q = quantize(WeightSlice::F32(&w), &[13, 37], Nf4Config::default()).unwrap();
    assert_eq!(q.packed, f.u8("small.packed"));
    let Absmax::Plain(a) = &q.absmax else {
        panic!("expected plain absmax")
    };
    assert_eq!(bits(a), bits(&f.f32("small.absmax")));
    assert_eq!(a[1], 0.0, "block 1 is all zeros");
    assert_eq!(bits(&q.dequantize()), bits(&f.f32("small.dequant")));
    // The tie block: a midpoint takes the lower code.
    assert_eq!(q.code_index(129), 0);
    assert_eq!(q.code_index(128 + 1 + 7), 7);
}

#[test]
fn bf16_input_and_output_match_bitsandbytes() {
    let f = reference();
    let w = f.bf16("bf16.weight");
    let q = quantize(WeightSlice::Bf16(&w), &[9, 41], Nf4Config::default()).unwrap();
    assert_eq!(q.packed, f.u8("bf16.packed"));
    assert_eq!(q.absmax, Absmax::Plain(f.f32("bf16.absmax")));
    let got: Vec<u16> = q.dequantize_bf16().iter().map(|x| x.to_bits()).collect();
    let want: Vec<u16> = f.bf16("bf16.dequant").iter().map(|x| x.to_bits()).collect();
    assert_eq!(got, want);
}

#[test]
fn double_quant_matches_bitsandbytes() {
    let f = reference();
    let w = f.f32("dq.weight");
    let cfg = Nf4Config {
        blocksize: 64,
        double_quant: true,
    };
    let q = quantize(WeightSlice::F32(&w), &[150, 131], cfg).unwrap();
    assert_eq!(q.packed, f.u8("dq.packed"));
    let Absmax::Nested(n) = &q.absmax else {
        panic!("expected nested absmax")
    };
    assert_eq!(n.offset.to_bits(), f.f32("dq.offset")[0].to_bits());
    assert_eq!(n.codes, f.u8("dq.qabsmax"));
    assert_eq!(bits(&n.absmax), bits(&f.f32("dq.nested_absmax")));
    assert_eq!(bits(&n.code), bits(&f.f32("dq.nested_quant_map")));
    let restored: Vec<f32> = (0..q.absmax.len()).map(|b| q.absmax.get(b)).collect();
    assert_eq!(bits(&restored), bits(&f.f32("dq.absmax_restored")));
    assert_eq!(bits(&q.dequantize()), bits(&f.f32("dq.dequant")));
}

#[test]
fn loads_a_bitsandbytes_prequantized_weight() {
    let f = Fixture::open("nf4/bnb_prequantized.safetensors");
    let r = reference();
    let packed = f.u8("layer.weight");
    let absmax = f.u8("layer.weight.absmax");
    let qmap = f.f32("layer.weight.quant_map");
    let nabs = f.f32("layer.weight.nested_absmax");
    let nmap = f.f32("layer.weight.nested_quant_map");
    let json = f.u8("layer.weight.quant_state.bitsandbytes__nf4");
    let t = Nf4Tensor::from_bnb_state(&BnbParts {
        packed: &packed,
        absmax_u8: Some(&absmax),
        quant_map: &qmap,
        nested_absmax: Some(&nabs),
        nested_quant_map: Some(&nmap),
        quant_state_json: &json,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(t.shape, vec![150, 131]);
    assert_eq!(bits(&t.dequantize()), bits(&r.f32("dq.dequant")));
    // And it is what we produce ourselves from the same weight.
    let w = r.f32("dq.weight");
    let ours = quantize(
        WeightSlice::F32(&w),
        &[150, 131],
        Nf4Config {
            blocksize: 64,
            double_quant: true,
        },
    )
    .unwrap();
    assert_eq!(ours, t);
}

#[test]
fn partial_ranges_equal_the_full_dequantization() {
    let f = reference();
    let w = f.f32("dq.weight");
    let q = quantize(WeightSlice::F32(&w), &[150, 131], Nf4Config::default()).unwrap();
    let full = q.dequantize();
    let mut part = vec![0.0; 300];
    q.dequantize_range_into(1000, &mut part);
    assert_eq!(bits(&part), bits(&full[1000..1300]));
}

#[test]
fn rejects_bad_shapes_and_blocksizes() {
    let w = [0.0f32; 10];
    assert!(quantize(WeightSlice::F32(&w), &[3, 3], Nf4Config::default()).is_err());
    let cfg = Nf4Config {
        blocksize: 48,
        double_quant: false,
    };
    assert!(quantize(WeightSlice::F32(&w), &[10], cfg).is_err());
}
