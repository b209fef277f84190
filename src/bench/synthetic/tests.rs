use super::*;

#[test]
fn synthetic_images_are_seeded_16_bit_and_smooth_plus_noise() {
    let a = synthetic_cxr(64, 80, 3);
    assert_eq!(a, synthetic_cxr(64, 80, 3));
    assert_ne!(a, synthetic_cxr(64, 80, 4));
    let (lo, hi) = (a.iter().min().unwrap(), a.iter().max().unwrap());
    assert!(hi - lo > 10_000, "wide 16-bit range: {lo}..{hi}");
    // Lung fields darker than the mediastinum on the same row.
    let row = 36 * 64;
    assert!(a[row + 20] < a[row + 32]);
}
