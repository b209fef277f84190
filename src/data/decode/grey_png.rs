//! The sharder's own reader of IDAT data for non-interlaced 8/16-bit grey PNGs, the usual
//! radiograph files: `fdeflate` (the inflater the `png` crate itself uses) inflates the
//! whole image into one reused buffer, then the rows are unfiltered in place and, for 16 bits,
//! their min/max taken while each row is hot in cache.
//!
//! Why not only the `png` crate: on radiograph-sized 16-bit PNGs its row unfiltering costs
//! about a third of the inflate time, most of it in Paeth, whose byte-at-a-time code for 2
//! bytes per pixel the compiler turns into a long SSE dependency chain (about 8 ns a pixel
//! here); the scalar branch-free version below does the same work about 2.5x faster, and
//! inflating into one buffer saves the crate's per-row copies. Everything else (header,
//! chunk order, ancillary chunks, colour types, interlacing, transparency) stays with the
//! `png` crate: the caller reads the header with it and falls back to it for anything but
//! plain grey, and for any file this reader refuses, so errors are the crate's own.
//!
//! Checks: the CRC of every IDAT chunk (as the `png` crate does) and the zlib Adler-32 of the
//! image data (as zlib, hence PIL, does; the `png` crate skips it by default).
//! `tests.rs` checks the rows byte for byte against the `png` crate on every filter type, both
//! depths, several IDAT chunk sizes and the real radiographs.

use anyhow::{Context, Result, bail, ensure};

/// The PNG signature.
const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Inflates and unfilters the IDAT data of a `width`×`height` non-interlaced grey PNG of
/// `bpp` bytes per sample (1: 8-bit, 2: 16-bit) into `raw`: `height` rows of
/// `1 + width * bpp` bytes, each the row's filter type followed by its unfiltered samples
/// (big-endian for 16 bits), as the PNG stream lays them out. For 16 bits, returns the
/// samples' (min, max). `max_bytes` bounds the buffer, as the `png` crate's limits do.
/// The header must have been checked by the caller (the `png` crate's `read_info`).
pub(super) fn read_grey_rows(
    bytes: &[u8],
    width: u32,
    height: u32,
    bpp: usize,
    max_bytes: usize,
    raw: &mut Vec<u8>,
) -> Result<Option<(u16, u16)>> {
    ensure!(
        bpp == 1 || bpp == 2,
        "{bpp} bytes per sample is not grey 8/16-bit"
    );
    let stride = (width as usize)
        .checked_mul(bpp)
        .and_then(|r| r.checked_add(1))
        .context("row size overflows")?;
    let total = stride
        .checked_mul(height as usize)
        .filter(|&t| t <= max_bytes)
        .context("image larger than the decoding limit")?;
    ensure!(width > 0 && height > 0, "image has no pixels");
    raw.resize(total, 0);
    inflate_idat(bytes, raw)?;
    let (mut lo, mut hi) = (u16::MAX, 0u16);
    let mut above: &mut [u8] = &mut [];
    for (y, row) in raw.chunks_exact_mut(stride).enumerate() {
        let (filter, cur) = row.split_first_mut().expect("rows are not empty");
        let prev: &[u8] = if y == 0 { &[] } else { &above[1..] };
        match bpp {
            1 => unfilter::<1>(*filter, prev, cur),
            _ => unfilter::<2>(*filter, prev, cur),
        }
        .with_context(|| format!("row {y}"))?;
        if bpp == 2 {
            let (l, h) = minmax_be16(cur);
            lo = lo.min(l);
            hi = hi.max(h);
        }
        above = row;
    }
    Ok((bpp == 2).then_some((lo, hi)))
}

/// Inflates the concatenated payloads of the consecutive IDAT chunks into `out`, which must
/// be exactly the size of the filtered image data; data past that is ignored (as libpng
/// does). Every IDAT chunk's CRC is checked, and the zlib Adler-32 when the stream ends.
fn inflate_idat(bytes: &[u8], out: &mut [u8]) -> Result<()> {
    ensure!(bytes.starts_with(SIGNATURE), "not a PNG");
    let mut inflater = fdeflate::Decompressor::new();
    let (mut pos, mut written, mut seen_idat) = (SIGNATURE.len(), 0usize, false);
    while written < out.len() && !inflater.is_done() {
        let head = bytes
            .get(pos..pos + 8)
            .context("file ends before the image data does")?;
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let kind = &head[4..8];
        let body = bytes
            .get(pos + 8..pos + 12 + len)
            .with_context(|| format!("chunk at byte {pos} runs past the end of the file"))?;
        let (data, crc) = body.split_at(len);
        pos += 12 + len;
        if kind != b"IDAT" {
            ensure!(!seen_idat, "image data ends early");
            ensure!(kind != b"IEND", "no image data");
            continue;
        }
        seen_idat = true;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(kind);
        hasher.update(data);
        if hasher.finalize() != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
            bail!("CRC error in an IDAT chunk at byte {}", pos - 12 - len);
        }
        let mut input = data;
        while !input.is_empty() && written < out.len() && !inflater.is_done() {
            let (used, made) = inflater
                .read(input, out, written, false)
                .map_err(|e| anyhow::anyhow!("corrupt image data: {e:?}"))?;
            input = &input[used..];
            written += made;
        }
    }
    if written < out.len() && !inflater.is_done() {
        let (_, made) = inflater
            .read(&[], out, written, true)
            .map_err(|e| anyhow::anyhow!("corrupt image data: {e:?}"))?;
        written += made;
    }
    ensure!(
        written >= out.len(),
        "image data ends early ({written} of {} bytes)",
        out.len()
    );
    Ok(())
}

/// (min, max) of the big-endian u16 samples of a row.
fn minmax_be16(row: &[u8]) -> (u16, u16) {
    row.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .fold((u16::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Reverses PNG filter `filter` on `cur` in place (PNG spec §9.2-9.4), `prev` being the
/// unfiltered row above or empty for the first row (taken as zeros), `BPP` bytes per pixel.
/// Each byte lane (`i % BPP`) is its own chain, so the lanes run side by side.
pub(super) fn unfilter<const BPP: usize>(filter: u8, prev: &[u8], cur: &mut [u8]) -> Result<()> {
    debug_assert!(prev.is_empty() || prev.len() == cur.len());
    match (filter, prev.is_empty()) {
        (0, _) | (2, true) => {}
        (1, _) | (4, true) => {
            // Sub; Paeth with a zero row above picks the left byte, so it is Sub.
            let mut a = [0u8; BPP];
            for px in cur.chunks_exact_mut(BPP) {
                for i in 0..BPP {
                    a[i] = px[i].wrapping_add(a[i]);
                }
                px.copy_from_slice(&a);
            }
        }
        (2, false) => {
            for (c, &b) in cur.iter_mut().zip(prev) {
                *c = c.wrapping_add(b);
            }
        }
        (3, true) => {
            let mut a = [0u8; BPP];
            for px in cur.chunks_exact_mut(BPP) {
                for i in 0..BPP {
                    a[i] = px[i].wrapping_add(a[i] >> 1);
                }
                px.copy_from_slice(&a);
            }
        }
        (3, false) => {
            let mut a = [0u8; BPP];
            for (px, up) in cur.chunks_exact_mut(BPP).zip(prev.chunks_exact(BPP)) {
                for i in 0..BPP {
                    a[i] = px[i].wrapping_add(((a[i] as u16 + up[i] as u16) >> 1) as u8);
                }
                px.copy_from_slice(&a);
            }
        }
        (4, false) => paeth::<BPP>(prev, cur),
        (f, _) => bail!("unknown PNG filter type {f}"),
    }
    Ok(())
}

/// Paeth unfiltering with a row above. The lanes' state lives in separate scalars and the
/// predictor's choices are `select_unpredictable` (conditional moves): on noisy radiographs
/// the choice is a coin toss, and the compiler's vectorised form of the crate's version has a
/// longer chain per pixel than these few scalar instructions.
fn paeth<const BPP: usize>(prev: &[u8], cur: &mut [u8]) {
    let mut a = [0i32; BPP];
    let mut c = [0i32; BPP];
    for (px, up) in cur.chunks_exact_mut(BPP).zip(prev.chunks_exact(BPP)) {
        for i in 0..BPP {
            let b = up[i] as i32;
            let x = (px[i] as i32 + paeth_predictor(a[i], b, c[i])) & 0xff;
            px[i] = x as u8;
            a[i] = x;
            c[i] = b;
        }
    }
}

/// The Paeth predictor of the PNG spec (the neighbour of `a`, `b`, `c` nearest to
/// `a + b - c`, ties to `a` then `b`), in the branch-free form of stb_image that the `png`
/// crate also uses on x86-64: with `t = 3c - a - b`, the answer is `max(a, b)` when
/// `t <= min(a, b)`, `min(a, b)` when `max(a, b) <= t`, else `c`.
#[inline(always)]
fn paeth_predictor(a: i32, b: i32, c: i32) -> i32 {
    use std::hint::select_unpredictable as sel;
    let t = 3 * c - a - b;
    let lo = sel(a < b, a, b);
    let hi = sel(a < b, b, a);
    let t0 = sel(hi <= t, lo, c);
    sel(t <= lo, hi, t0)
}

#[cfg(test)]
pub(super) fn paeth_predictor_for_tests(a: u8, b: u8, c: u8) -> u8 {
    paeth_predictor(a as i32, b as i32, c as i32) as u8
}

#[cfg(test)]
mod tests;
