//! Conversion of decoded samples to 8 bits with a policy (DESIGN.md §3): `minmax` (what the
//! original did), `percentile` (0.5..99.5) or the DICOM VOI `window`; then MONOCHROME1
//! inversion and detection of RGB images that hold grey (stored as one channel).
//!
//! The 8-bit mapping is `round((x - lo) / (hi - lo) * 255)` clamped to 0..=255, computed in
//! f64 so it matches numpy's reference to the last grey level except at exact .5 ties.

use dicom_pixeldata::{VoiLutFunction, WindowLevel, WindowLevelTransform};

use crate::config::Conversion;

/// Decoded samples before 8-bit conversion, interleaved by pixel.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    /// 8-bit data (8-bit PNG/JPEG): already display values, passed through by every policy.
    U8(Vec<u8>),
    /// 16-bit PNG samples.
    U16(Vec<u16>),
    /// DICOM values after the modality LUT (rescale slope/intercept).
    F32(Vec<f32>),
}

/// A DICOM value-of-interest transform, owned so it outlives the decoder.
#[derive(Debug, Clone, PartialEq)]
pub enum Voi {
    /// Window centre/width with its VOI LUT function (PS3.3 C.11.2.1.2).
    Window {
        /// Window Center.
        center: f64,
        /// Window Width.
        width: f64,
        /// LINEAR, LINEAR_EXACT or SIGMOID.
        function: VoiLutFunction,
    },
    /// An explicit VOI LUT: values ≤ `first_mapped` take `data[0]`, beyond the end the last.
    Lut {
        /// First input value mapped.
        first_mapped: i32,
        /// Table entries.
        data: Vec<u16>,
        /// Largest output the table can hold (2^bits - 1), the 8-bit scale's top.
        out_max: f64,
    },
}

/// An image fresh from a decoder: size, channels (1 grey, 3 colour), samples and, for DICOM,
/// the VOI transform and whether it is MONOCHROME1 (low values are white).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// 1 (grey) or 3 (RGB), interleaved.
    pub channels: u8,
    /// The samples.
    pub samples: Samples,
    /// The first VOI transform of a DICOM file, if it has one.
    pub voi: Option<Voi>,
    /// MONOCHROME1: invert after the 8-bit mapping so bone is white like MONOCHROME2.
    pub monochrome1: bool,
}

/// An 8-bit image, grey (1 channel) or RGB (3 channels, interleaved): what a shard record holds
/// once resized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image8 {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// 1 or 3.
    pub channels: u8,
    /// `height * width * channels` bytes, row-major.
    pub data: Vec<u8>,
}

/// Applies `policy`, MONOCHROME1 inversion and grey detection. 8-bit samples pass through
/// every policy unchanged (they are display values already; min-max stretching them would
/// change 8-bit PNG datasets that the original fed as is).
pub fn to_u8(dec: Decoded, policy: Conversion) -> Image8 {
    let mut data = match &dec.samples {
        Samples::U8(v) => v.clone(),
        Samples::U16(v) => map_u16(v, policy),
        Samples::F32(v) => map_values(v, |x| x as f64, policy, dec.voi.as_ref()),
    };
    if dec.monochrome1 {
        for p in &mut data {
            *p = 255 - *p;
        }
    }
    let mut img = Image8 {
        width: dec.width,
        height: dec.height,
        channels: dec.channels,
        data,
    };
    collapse_grey(&mut img);
    img
}

/// Stores RGB whose three channels are equal as one grey channel (3x less disk); colour
/// images stay RGB.
pub fn collapse_grey(img: &mut Image8) {
    if img.channels != 3
        || !img
            .data
            .chunks_exact(3)
            .all(|p| p[0] == p[1] && p[1] == p[2])
    {
        return;
    }
    img.data = img.data.chunks_exact(3).map(|p| p[0]).collect();
    img.channels = 1;
}

fn map_values<T: Copy>(
    v: &[T],
    as_f64: impl Fn(T) -> f64 + Copy,
    policy: Conversion,
    voi: Option<&Voi>,
) -> Vec<u8> {
    match (policy, voi) {
        (
            Conversion::Window,
            Some(Voi::Window {
                center,
                width,
                function,
            }),
        ) => {
            let t = WindowLevelTransform::new(
                *function,
                WindowLevel {
                    center: *center,
                    width: *width,
                },
            );
            v.iter()
                .map(|&x| quantize(t.apply(as_f64(x), 255.0)))
                .collect()
        }
        (
            Conversion::Window,
            Some(Voi::Lut {
                first_mapped,
                data,
                out_max,
            }),
        ) => {
            let scale = 255.0 / out_max.max(1.0);
            v.iter()
                .map(|&x| {
                    let i = (as_f64(x).round() as i64 - *first_mapped as i64)
                        .clamp(0, data.len() as i64 - 1) as usize;
                    quantize(data[i] as f64 * scale)
                })
                .collect()
        }
        (Conversion::Percentile, _) => {
            let (lo, hi) = percentiles(v, as_f64, 0.5, 99.5);
            linear(v, as_f64, lo, hi)
        }
        // Minmax, and Window without a VOI in the file.
        _ => {
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                    let x = as_f64(x);
                    (lo.min(x), hi.max(x))
                });
            linear(v, as_f64, lo, hi)
        }
    }
}

/// 16-bit samples: the range (min-max or percentiles from a histogram), then one 65536-entry
/// table computed with the same formula as [`linear`], so results are identical to the
/// per-pixel path at a fraction of the cost. `Window` has no VOI here, so it is min-max, as
/// in [`to_u8`].
fn map_u16(v: &[u16], policy: Conversion) -> Vec<u8> {
    let (lo, hi) = match policy {
        Conversion::Percentile => {
            let mut hist = vec![0u64; 65536];
            for &x in v {
                hist[x as usize] += 1;
            }
            percentile_range(&hist, v.len())
        }
        _ if v.is_empty() => (0.0, 0.0),
        _ => {
            let lo = v.iter().copied().fold(u16::MAX, u16::min);
            let hi = v.iter().copied().fold(0, u16::max);
            (lo as f64, hi as f64)
        }
    };
    let lut = u16_table(lo, hi);
    v.iter().map(|&x| lut[x as usize]).collect()
}

/// The 65,536-entry table that maps every 16-bit value `x` to the 8-bit level of [`linear`]
/// over `lo..hi`: one table lookup per pixel gives exactly the per-pixel formula's result.
fn u16_table(lo: f64, hi: f64) -> Vec<u8> {
    let values: Vec<u16> = (0..=u16::MAX).collect();
    linear(&values, |x| x as f64, lo, hi)
}

/// [`u16_table`] computed only for the values `first..=last` that the samples take (the other
/// entries are 0 and never looked up): a radiograph's samples span a third of the 16-bit
/// range or less, and the table is made for every image.
pub fn u16_table_within(lo: f64, hi: f64, first: u16, last: u16) -> Vec<u8> {
    let mut table = vec![0; 65536];
    if first <= last {
        let values: Vec<u16> = (first..=last).collect();
        table[first as usize..=last as usize].copy_from_slice(&linear(
            &values,
            |x| x as f64,
            lo,
            hi,
        ));
    }
    table
}

/// The `percentile` policy's range (0.5th and 99.5th percentiles, numpy's linear
/// interpolation) of `n` 16-bit samples given as a 65,536-bin histogram.
pub fn percentile_range(hist: &[u64], n: usize) -> (f64, f64) {
    percentiles_from_hist(hist, n, 0.5, 99.5)
}

/// numpy-style linear-interpolated percentiles from a histogram of u16 values.
fn percentiles_from_hist(hist: &[u64], n: usize, p_lo: f64, p_hi: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    // The value at sorted position `k`.
    let nth = |k: usize| -> f64 {
        let mut seen = 0u64;
        for (v, &c) in hist.iter().enumerate() {
            seen += c;
            if seen > k as u64 {
                return v as f64;
            }
        }
        (hist.len() - 1) as f64
    };
    let at = |p: f64| {
        let pos = p / 100.0 * (n - 1) as f64;
        let i = pos.floor() as usize;
        let j = (i + 1).min(n - 1);
        let (a, b) = (nth(i), nth(j));
        a + (b - a) * (pos - i as f64)
    };
    (at(p_lo), at(p_hi))
}

/// `round((x - lo) / (hi - lo) * 255)` clamped; a flat image (hi == lo) maps to 0.
fn linear<T: Copy>(v: &[T], as_f64: impl Fn(T) -> f64, lo: f64, hi: f64) -> Vec<u8> {
    if hi <= lo || !hi.is_finite() || !lo.is_finite() {
        return vec![0; v.len()];
    }
    let range = hi - lo;
    v.iter()
        .map(|&x| quantize((as_f64(x) - lo) / range * 255.0))
        .collect()
}

/// Rounds half away from zero (numpy's `np.round` rounds half to even; the two differ only
/// on exact ties, inside the ±1 tolerance) and clamps to a byte.
fn quantize(y: f64) -> u8 {
    y.round().clamp(0.0, 255.0) as u8
}

/// The `p_lo`-th and `p_hi`-th percentiles with numpy's default (linear) interpolation.
pub fn percentiles<T: Copy>(
    v: &[T],
    as_f64: impl Fn(T) -> f64,
    p_lo: f64,
    p_hi: f64,
) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mut s: Vec<f64> = v.iter().map(|&x| as_f64(x)).collect();
    s.sort_unstable_by(f64::total_cmp);
    let at = |p: f64| {
        let pos = p / 100.0 * (s.len() - 1) as f64;
        let i = pos.floor() as usize;
        let j = (i + 1).min(s.len() - 1);
        s[i] + (s[j] - s[i]) * (pos - i as f64)
    };
    (at(p_lo), at(p_hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey16(v: Vec<u16>) -> Decoded {
        Decoded {
            width: v.len() as u32,
            height: 1,
            channels: 1,
            samples: Samples::U16(v),
            voi: None,
            monochrome1: false,
        }
    }

    #[test]
    fn minmax_maps_the_range_onto_0_255() {
        let img = to_u8(grey16(vec![100, 150, 200, 300]), Conversion::Minmax);
        // (150-100)/200*255 = 63.75 -> 64; (200-100)/200*255 = 127.5 -> 128
        assert_eq!(img.data, vec![0, 64, 128, 255]);
    }

    #[test]
    fn table_within_the_samples_range_equals_the_full_table() {
        for (lo, hi, first, last) in [
            (100.0, 300.0, 100, 300),
            (5.0, 995.0, 0, 1000),
            (7.0, 7.0, 7, 7),
        ] {
            let (full, part) = (u16_table(lo, hi), u16_table_within(lo, hi, first, last));
            let r = first as usize..=last as usize;
            assert_eq!(full[r.clone()], part[r], "{lo} {hi}");
        }
        assert_eq!(u16_table(100.0, 300.0)[65535], 255);
    }

    #[test]
    fn flat_images_become_black_not_nan() {
        assert_eq!(
            to_u8(grey16(vec![7; 4]), Conversion::Minmax).data,
            vec![0; 4]
        );
    }

    #[test]
    fn percentile_clips_outliers_like_numpy() {
        // numpy: np.percentile(np.arange(1001), [0.5, 99.5]) == [5, 995]
        let v: Vec<u16> = (0..=1000).collect();
        assert_eq!(percentiles(&v, |x| x as f64, 0.5, 99.5), (5.0, 995.0));
        let mut hist = vec![0u64; 65536];
        v.iter().for_each(|&x| hist[x as usize] += 1);
        assert_eq!(
            percentiles_from_hist(&hist, v.len(), 0.5, 99.5),
            (5.0, 995.0)
        );
        // numpy: np.percentile([1, 2, 2, 9], [10, 90]) == [1.3, 6.9]
        let mut hist = vec![0u64; 65536];
        [1u16, 2, 2, 9].iter().for_each(|&x| hist[x as usize] += 1);
        let (a, b) = percentiles_from_hist(&hist, 4, 10.0, 90.0);
        assert!((a - 1.3).abs() < 1e-9 && (b - 6.9).abs() < 1e-9, "{a} {b}");
        let img = to_u8(grey16(v), Conversion::Percentile);
        assert_eq!(img.data[0], 0);
        assert_eq!(img.data[500], 128); // (500-5)/990*255 = 127.5
        assert_eq!(img.data[1000], 255);
    }

    #[test]
    fn window_uses_the_dicom_linear_function_and_monochrome1_inverts() {
        let dec = Decoded {
            width: 3,
            height: 1,
            channels: 1,
            samples: Samples::F32(vec![0.0, 1000.0, 5000.0]),
            voi: Some(Voi::Window {
                center: 1000.0,
                width: 1001.0,
                function: VoiLutFunction::Linear,
            }),
            monochrome1: true,
        };
        // linear: ((x - (c - 0.5)) / (w - 1) + 0.5) * 255: x = 1000 -> 127.755 -> 128
        let img = to_u8(dec.clone(), Conversion::Window);
        assert_eq!(img.data, vec![255, 255 - 128, 0]);
        // Minmax ignores the window.
        let img = to_u8(dec, Conversion::Minmax);
        assert_eq!(img.data, vec![255, 255 - 51, 0]);
    }

    #[test]
    fn rgb_holding_grey_is_stored_as_grey_and_colour_stays_rgb() {
        let mut g = Image8 {
            width: 2,
            height: 1,
            channels: 3,
            data: vec![5, 5, 5, 9, 9, 9],
        };
        collapse_grey(&mut g);
        assert_eq!((g.channels, g.data), (1, vec![5, 9]));
        let mut c = Image8 {
            width: 2,
            height: 1,
            channels: 3,
            data: vec![5, 5, 5, 9, 9, 8],
        };
        collapse_grey(&mut c);
        assert_eq!(c.channels, 3);
    }

    #[test]
    fn eight_bit_samples_pass_through_every_policy() {
        let dec = Decoded {
            width: 3,
            height: 1,
            channels: 1,
            samples: Samples::U8(vec![10, 20, 30]),
            voi: None,
            monochrome1: false,
        };
        for p in [
            Conversion::Minmax,
            Conversion::Percentile,
            Conversion::Window,
        ] {
            assert_eq!(to_u8(dec.clone(), p).data, vec![10, 20, 30]);
        }
    }
}
