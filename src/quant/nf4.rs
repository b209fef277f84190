//! NF4 4-bit quantization, bit-for-bit as bitsandbytes does it on CPU (ref: bitsandbytes 0.50
//! `functional.quantize_4bit` / `dequantize_4bit`, `backends/default/ops.py`, and for the nested
//! 8-bit statistics `csrc/cpu_ops.cpp::quantize_cpu_impl`).
//!
//! Layout of a quantized weight (the one bitsandbytes stores in a checkpoint):
//! - the tensor is flattened row-major and cut into blocks of `blocksize` values (64 by default;
//!   the last block may be partial);
//! - each block keeps its absmax (f32) and every value becomes the index of the nearest NF4 code
//!   to `value / absmax`, ties going to the lower code (`torch.bucketize` on the midpoints);
//! - two indices per byte, the FIRST value in the HIGH nibble; an odd count is padded with the
//!   index of 0.0 (7), as bitsandbytes pads the scaled values with a zero;
//! - double quantization replaces the f32 absmax by `absmax - mean(absmax)` quantized to 8 bits
//!   with the signed dynamic map in blocks of 256 (each with its own f32 absmax), plus the mean.
//!
//! Everything here is plain Rust (no burn) so the model loader can quantize one tensor at a time
//! while reading a checkpoint and never hold the full bf16 model.

use anyhow::{Context, Result, bail, ensure};
use half::{bf16, f16};
use std::sync::OnceLock;

/// The 16 NF4 codes (ref: bitsandbytes `get_4bit_type("nf4")`), sorted ascending; code 7 is 0.
/// Written as the f32 bit patterns torch stores, so no decimal rounding can differ.
pub const NF4_CODE: [f32; 16] = [
    f32::from_bits(0xbf800000), // -1.0
    f32::from_bits(0xbf3239b1), // -0.6961928009986877
    f32::from_bits(0xbf066b30), // -0.5250730514526367
    f32::from_bits(0xbeca32a0), // -0.39491748809814453
    f32::from_bits(0xbe91a24d), // -0.28444138169288635
    f32::from_bits(0xbe3d353f), // -0.18477343022823334
    f32::from_bits(0xbdba7871), // -0.09105003625154495
    f32::from_bits(0x00000000), // 0.0
    f32::from_bits(0x3da2faff), // 0.07958029955625534
    f32::from_bits(0x3e24cae3), // 0.16093020141124725
    f32::from_bits(0x3e7c04dd), // 0.24611230194568634
    f32::from_bits(0x3ead033a), // 0.33791524171829224
    f32::from_bits(0x3ee1a4b8), // 0.44070982933044434
    f32::from_bits(0x3f1007ab), // 0.5626170039176941
    f32::from_bits(0x3f3913b3), // 0.7229568362236023
    f32::from_bits(0x3f800000), // 1.0
];

/// Index of the NF4 code 0.0: what an all-zero block and the padding nibble hold.
pub const NF4_ZERO_INDEX: u8 = 7;

/// Block size of the nested (double) quantization of the absmax, fixed by bitsandbytes.
pub const NESTED_BLOCKSIZE: usize = 256;

/// Smallest absmax bitsandbytes divides by (`absmax.clamp(min=1e-38)`), so an all-zero block
/// scales to zeros instead of NaN.
const ABSMAX_FLOOR: f32 = 1e-38;

/// How to quantize: block size and whether the absmax are themselves quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nf4Config {
    /// Values per block (bitsandbytes accepts 32..4096, powers of two; transformers uses 64).
    pub blocksize: usize,
    /// Double quantization (`bnb_4bit_use_double_quant` / `compress_statistics`).
    pub double_quant: bool,
}

impl Default for Nf4Config {
    fn default() -> Self {
        Self {
            blocksize: 64,
            double_quant: false,
        }
    }
}

/// A borrowed weight in one of the dtypes checkpoints use, so callers quantize straight from a
/// memory-mapped tensor without making an f32 copy of it first.
#[derive(Debug, Clone, Copy)]
pub enum WeightSlice<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// bf16 values (MedGemma's checkpoint dtype).
    Bf16(&'a [bf16]),
    /// f16 values.
    F16(&'a [f16]),
}

impl WeightSlice<'_> {
    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::Bf16(v) => v.len(),
            Self::F16(v) => v.len(),
        }
    }

    #[inline]
    fn get(&self, i: usize) -> f32 {
        match self {
            Self::F32(v) => v[i],
            Self::Bf16(v) => v[i].to_f32(),
            Self::F16(v) => v[i].to_f32(),
        }
    }
}

/// The 8-bit statistics of double quantization (bitsandbytes' `state2` plus `offset`).
#[derive(Debug, Clone, PartialEq)]
pub struct NestedAbsmax {
    /// One byte per 4-bit block: index into `code`.
    pub codes: Vec<u8>,
    /// Mean of the raw absmax, subtracted before quantizing and added back after.
    pub offset: f32,
    /// f32 absmax of each nested block of `blocksize` codes.
    pub absmax: Vec<f32>,
    /// The 256-entry 8-bit map (`create_dynamic_map()` unless a checkpoint says otherwise).
    pub code: Vec<f32>,
    /// Nested block size (256).
    pub blocksize: usize,
}

impl NestedAbsmax {
    /// The absmax of 4-bit block `b` as bitsandbytes restores it: `code[q] * nested_absmax + offset`
    /// (two f32 roundings, in that order).
    #[inline]
    pub fn get(&self, b: usize) -> f32 {
        self.code[self.codes[b] as usize] * self.absmax[b / self.blocksize] + self.offset
    }
}

/// The per-block scales of a 4-bit tensor, plain or double-quantized.
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    /// One f32 per block.
    Plain(Vec<f32>),
    /// 8-bit codes per block plus nested statistics.
    Nested(NestedAbsmax),
}

impl Absmax {
    /// Number of blocks described.
    pub fn len(&self) -> usize {
        match self {
            Self::Plain(v) => v.len(),
            Self::Nested(n) => n.codes.len(),
        }
    }

    /// True when there are no blocks (an empty tensor).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 absmax of block `b` (restored from the nested codes if needed).
    #[inline]
    pub fn get(&self, b: usize) -> f32 {
        match self {
            Self::Plain(v) => v[b],
            Self::Nested(n) => n.get(b),
        }
    }

    /// Bytes these statistics occupy in memory (and on disk, as bitsandbytes stores them).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Plain(v) => 4 * v.len(),
            Self::Nested(n) => n.codes.len() + 4 * n.absmax.len() + 4 * n.code.len() + 4,
        }
    }
}

/// A weight quantized to NF4: packed codes, block scales and the original shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4Tensor {
    /// Original shape (row-major), e.g. `[out, in]` for a Linear weight.
    pub shape: Vec<usize>,
    /// Values per block.
    pub blocksize: usize,
    /// `ceil(numel / 2)` bytes, first value of each pair in the high nibble.
    pub packed: Vec<u8>,
    /// Per-block scales.
    pub absmax: Absmax,
}

/// Quantizes a weight to NF4 exactly as `bitsandbytes.functional.quantize_4bit(A, blocksize,
/// compress_statistics=cfg.double_quant, quant_type="nf4")` does on CPU.
pub fn quantize(weight: WeightSlice<'_>, shape: &[usize], cfg: Nf4Config) -> Result<Nf4Tensor> {
    let n = weight.len();
    ensure!(
        shape.iter().product::<usize>() == n,
        "NF4 quantize: shape {shape:?} does not hold {n} values"
    );
    ensure!(
        cfg.blocksize >= 2 && cfg.blocksize.is_power_of_two(),
        "NF4 quantize: blocksize {} is not a power of two >= 2",
        cfg.blocksize
    );
    let bounds = nf4_bounds();
    let bs = cfg.blocksize;
    let blocks = n.div_ceil(bs);
    let mut absmax = Vec::with_capacity(blocks);
    let mut packed = vec![0u8; n.div_ceil(2)];
    let full = n - n % bs;
    for b in 0..blocks {
        let start = b * bs;
        let end = (start + bs).min(n);
        let mut am = 0.0f32;
        for i in start..end {
            am = am.max(weight.get(i).abs());
        }
        absmax.push(am);
        let floor = am.max(ABSMAX_FLOOR);
        // bitsandbytes multiplies full blocks by the reciprocal but divides the tail block.
        let recip = 1.0f32 / floor;
        for i in start..end {
            let x = weight.get(i);
            let s = if start < full { x * recip } else { x / floor };
            let q = bucketize(s.clamp(-1.0, 1.0), &bounds);
            packed[i / 2] |= if i.is_multiple_of(2) { q << 4 } else { q };
        }
    }
    if !n.is_multiple_of(2) {
        packed[n / 2] |= NF4_ZERO_INDEX;
    }
    let absmax = if cfg.double_quant {
        Absmax::Nested(quantize_absmax(&absmax))
    } else {
        Absmax::Plain(absmax)
    };
    Ok(Nf4Tensor {
        shape: shape.to_vec(),
        blocksize: bs,
        packed,
        absmax,
    })
}

/// The 15 midpoints between consecutive NF4 codes, computed in f32 like bitsandbytes.
fn nf4_bounds() -> [f32; 15] {
    std::array::from_fn(|i| (NF4_CODE[i] + NF4_CODE[i + 1]) / 2.0)
}

/// `torch.bucketize(x, bounds, right=False)`: the number of bounds strictly below `x`, so a value
/// exactly on a midpoint takes the lower code.
#[inline]
fn bucketize(x: f32, bounds: &[f32; 15]) -> u8 {
    bounds.iter().filter(|&&b| b < x).count() as u8
}

/// Double quantization of the absmax: subtract their mean, then bitsandbytes' CPU
/// `quantize_blockwise(·, code=dynamic map, blocksize=256)`.
pub fn quantize_absmax(absmax: &[f32]) -> NestedAbsmax {
    // torch's f32 mean; the f64 sum rounded once matches it on the fixtures.
    let offset = if absmax.is_empty() {
        0.0
    } else {
        (absmax.iter().map(|&a| a as f64).sum::<f64>() / absmax.len() as f64) as f32
    };
    let centred: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let code = dynamic_map().to_vec();
    let (codes, nested) = quantize_blockwise_8bit(&centred, &code, NESTED_BLOCKSIZE);
    NestedAbsmax {
        codes,
        offset,
        absmax: nested,
        code,
        blocksize: NESTED_BLOCKSIZE,
    }
}

/// Size of bitsandbytes' CPU lookup table from a normalized value in [-1, 1] to a code index.
const LUT_SIZE: usize = 65536;

/// bitsandbytes' 8-bit blockwise quantization on CPU (0.50 `quantize_cpu_impl`): block absmax
/// from 0, an all-zero block gets index 0, otherwise the value times `1/absmax` is mapped to one
/// of 65536 bins and the bin to the code whose midpoint interval holds it (a lookup table, not an
/// exact nearest search: this is what makes our bytes identical to theirs).
pub fn quantize_blockwise_8bit(
    values: &[f32],
    code: &[f32],
    blocksize: usize,
) -> (Vec<u8>, Vec<f32>) {
    let lut = build_lut(code);
    let mut out = vec![0u8; values.len()];
    let mut absmax = Vec::with_capacity(values.len().div_ceil(blocksize));
    for (b, chunk) in values.chunks(blocksize).enumerate() {
        let am = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        absmax.push(am);
        if am == 0.0 {
            continue;
        }
        let inv = 1.0f32 / am;
        for (i, &v) in chunk.iter().enumerate() {
            let x = (v * inv).clamp(-1.0, 1.0);
            // (x + 1) * 0.5 * 65535 + 0.5, the last multiply-add fused (built with -mfma).
            let idx = ((x + 1.0) * 0.5).mul_add((LUT_SIZE - 1) as f32, 0.5) as u16;
            out[b * blocksize + i] = lut[idx as usize];
        }
    }
    (out, absmax)
}

fn build_lut(code: &[f32]) -> Vec<u8> {
    let mids: Vec<f32> = code.windows(2).map(|w| 0.5f32 * (w[0] + w[1])).collect();
    let mut lut = vec![0u8; LUT_SIZE];
    let mut ci = 0usize;
    for (i, slot) in lut.iter_mut().enumerate() {
        let val = -1.0f32 + (2.0f32 * i as f32) / (LUT_SIZE - 1) as f32;
        while ci < mids.len() && mids[ci] < val {
            ci += 1;
        }
        *slot = ci as u8;
    }
    lut
}

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True, max_exponent_bits=7,
/// total_bits=8)`), computed with torch's f32 arithmetic: `linspace(0.1, 1, 2^i + 1)`, midpoints,
/// scaled by `±10^(i-6)`, plus 0 and 1, sorted.
pub fn dynamic_map() -> &'static [f32; 256] {
    static MAP: OnceLock<[f32; 256]> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut data: Vec<f32> = Vec::with_capacity(256);
        for i in 0..7i32 {
            let items = (1usize << i) + 1;
            let bounds = linspace_f32(0.1, 1.0, items);
            // Python's `10 ** (i - 6)` as a double, then torch's f32 scalar multiply.
            let scale = [1e-6f64, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0][i as usize] as f32;
            for w in bounds.windows(2) {
                let mean = (w[0] + w[1]) / 2.0;
                data.push(scale * mean);
            }
            for w in bounds.windows(2) {
                let mean = (w[0] + w[1]) / 2.0;
                data.push(-scale * mean);
            }
        }
        data.push(0.0);
        data.push(1.0);
        data.sort_by(f32::total_cmp);
        let mut out = [0.0f32; 256];
        out.copy_from_slice(&data);
        out
    })
}

/// `torch.linspace(start, end, steps, dtype=float32)` on CPU: f32 step, the first half counted
/// up from `start`, the second half down from `end`, each a fused multiply-add (as torch's
/// compiled kernel does; checked bit for bit against torch for every size used here).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

impl Nf4Tensor {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes held in memory: packed codes plus statistics.
    pub fn bytes(&self) -> usize {
        self.packed.len() + self.absmax.bytes()
    }

    /// The 4-bit code index of value `i`.
    #[inline]
    pub fn code_index(&self, i: usize) -> u8 {
        let byte = self.packed[i / 2];
        if i.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0x0f
        }
    }

    /// Dequantizes values `[start, start + out.len())` of the flattened tensor into `out` (f32):
    /// `NF4_CODE[q] * absmax[block]`, as bitsandbytes' `dequantize_4bit` computes in f32.
    pub fn dequantize_range_into(&self, start: usize, out: &mut [f32]) {
        let bs = self.blocksize;
        let end = start + out.len();
        assert!(end <= self.numel(), "dequantize range past the tensor");
        let mut i = start;
        while i < end {
            let b = i / bs;
            let block_end = ((b + 1) * bs).min(end);
            let scale = self.absmax.get(b);
            // A table of the 16 scaled codes per block: one multiply per code, not per value
            // (same products, so the same f32 results).
            let table: [f32; 16] = std::array::from_fn(|k| NF4_CODE[k] * scale);
            for j in i..block_end {
                out[j - start] = table[self.code_index(j) as usize];
            }
            i = block_end;
        }
    }

    /// The whole tensor dequantized to f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.numel()];
        self.dequantize_range_into(0, &mut out);
        out
    }

    /// The whole tensor dequantized to bf16 (f32 product rounded to nearest even, as torch's
    /// `.to(torch.bfloat16)`).
    pub fn dequantize_bf16(&self) -> Vec<bf16> {
        self.dequantize().into_iter().map(bf16::from_f32).collect()
    }

    /// Rebuilds a tensor from the entries bitsandbytes writes for a `Linear4bit` weight in a
    /// checkpoint: `weight` (packed u8), `weight.absmax`, `weight.quant_map`, optionally
    /// `weight.nested_absmax` / `weight.nested_quant_map`, and the JSON blob
    /// `weight.quant_state.bitsandbytes__nf4` (shape, blocksize, nested offset...).
    pub fn from_bnb_state(parts: &BnbParts<'_>) -> Result<Self> {
        let meta: serde_json::Value = serde_json::from_slice(parts.quant_state_json)
            .context("quant_state.bitsandbytes__nf4 is not JSON")?;
        let qt = meta["quant_type"].as_str().unwrap_or("");
        ensure!(
            qt == "nf4",
            "quant_state says quant_type {qt:?}, only nf4 is supported"
        );
        let blocksize = meta["blocksize"]
            .as_u64()
            .context("quant_state has no blocksize")? as usize;
        let shape: Vec<usize> = meta["shape"]
            .as_array()
            .context("quant_state has no shape")?
            .iter()
            .map(|v| v.as_u64().map(|x| x as usize).context("bad shape entry"))
            .collect::<Result<_>>()?;
        let n: usize = shape.iter().product();
        ensure!(
            parts.packed.len() == n.div_ceil(2),
            "packed weight has {} bytes, shape {shape:?} needs {}",
            parts.packed.len(),
            n.div_ceil(2)
        );
        ensure!(
            parts.quant_map.len() == 16
                && parts.quant_map.iter().zip(NF4_CODE).all(|(a, b)| *a == b),
            "quant_map is not the NF4 code"
        );
        let blocks = n.div_ceil(blocksize);
        let absmax = match (parts.nested_absmax, parts.nested_quant_map) {
            (Some(nested), Some(code)) => {
                let codes = parts
                    .absmax_u8
                    .context("nested absmax codes (u8) missing")?;
                ensure!(
                    codes.len() == blocks,
                    "absmax has {} codes, expected {blocks}",
                    codes.len()
                );
                let offset = meta["nested_offset"]
                    .as_f64()
                    .context("quant_state has no nested_offset")?
                    as f32;
                let nbs = meta["nested_blocksize"].as_u64().unwrap_or(256) as usize;
                ensure!(
                    code.len() == 256,
                    "nested_quant_map has {} entries",
                    code.len()
                );
                ensure!(
                    nested.len() == blocks.div_ceil(nbs),
                    "nested_absmax has {} entries, expected {}",
                    nested.len(),
                    blocks.div_ceil(nbs)
                );
                Absmax::Nested(NestedAbsmax {
                    codes: codes.to_vec(),
                    offset,
                    absmax: nested.to_vec(),
                    code: code.to_vec(),
                    blocksize: nbs,
                })
            }
            (None, None) => {
                let a = parts.absmax_f32.context("absmax (f32) missing")?;
                ensure!(
                    a.len() == blocks,
                    "absmax has {} entries, expected {blocks}",
                    a.len()
                );
                Absmax::Plain(a.to_vec())
            }
            _ => bail!("only one of nested_absmax / nested_quant_map present"),
        };
        Ok(Self {
            shape,
            blocksize,
            packed: parts.packed.to_vec(),
            absmax,
        })
    }
}

/// The pieces of a bitsandbytes-serialized NF4 weight, borrowed from a checkpoint.
#[derive(Debug, Default)]
pub struct BnbParts<'a> {
    /// `weight`: packed bytes.
    pub packed: &'a [u8],
    /// `weight.absmax` when the statistics are plain f32.
    pub absmax_f32: Option<&'a [f32]>,
    /// `weight.absmax` when double-quantized (u8 codes).
    pub absmax_u8: Option<&'a [u8]>,
    /// `weight.quant_map`: the 16 NF4 codes.
    pub quant_map: &'a [f32],
    /// `weight.nested_absmax`.
    pub nested_absmax: Option<&'a [f32]>,
    /// `weight.nested_quant_map`.
    pub nested_quant_map: Option<&'a [f32]>,
    /// `weight.quant_state.bitsandbytes__nf4`: UTF-8 JSON bytes.
    pub quant_state_json: &'a [u8],
}

#[cfg(test)]
mod tests;
