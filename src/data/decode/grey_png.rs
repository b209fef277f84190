//! The sharder's own reader of IDAT data for non-interlaced 8/16-bit grey PNGs, the usual
//! radiograph files: `fdeflate` (the inflater the `png` crate itself uses) inflates the
//! whole image into one reused buffer, then the rows are unfiltered in place and, for 16 bits,
//! their min/max taken while each row is hot in cache.
//!
//! Why not only the `png` crate: on the benchmark's 2000×2500 16-bit PNGs, everything its
//! row reader does besides inflating (unfiltering, per-row copies) took about 7.5 ms of the
//! 23 ms decode, most of it in Paeth, whose byte-at-a-time code for 2-byte pixels the
//! compiler turns into a long SSE dependency chain (about 8 ns a pixel here). The scalar
//! branch-free filters below, with two rows run side by side where both are serial chains,
//! do it with the min/max in about 4 ms. Everything else (header, chunk order, ancillary
//! chunks, colour types, interlacing, transparency) stays with the `png` crate: the caller
//! reads the header with it and falls back to it for anything but plain grey, and for any
//! file this reader refuses, so errors are the crate's own.
//!
//! Checks, the same as the `png` crate's defaults (what the sharder did before): the CRC of
//! every IDAT chunk, not the zlib Adler-32 (the CRCs already cover every compressed byte).
//! PIL does the reverse: it skips IDAT CRCs and leaves the Adler-32 to zlib.
//! `tests.rs` checks the rows byte for byte against the `png` crate on every filter type and
//! pair of filter types, both depths, several IDAT chunk sizes and the real radiographs.

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
    unfilter_rows(raw, stride, bpp)
}

/// Unfilters the `raw` rows of `stride` bytes (filter type byte first, kept) in place, `bpp`
/// bytes per pixel; for `bpp == 2`, returns the big-endian samples' (min, max). Consecutive
/// rows that are both Sub, Avg or Paeth go through [`serial_pair`].
pub(super) fn unfilter_rows(
    raw: &mut [u8],
    stride: usize,
    bpp: usize,
) -> Result<Option<(u16, u16)>> {
    let (mut lo, mut hi) = (u16::MAX, 0u16);
    let mut range = |row: &[u8]| {
        if bpp == 2 {
            let (l, h) = minmax_be16(row);
            lo = lo.min(l);
            hi = hi.max(h);
        }
    };
    let serial = |f: u8| matches!(f, 1 | 3 | 4);
    let height = raw.len() / stride;
    let mut y = 0;
    while y < height {
        let (done, rest) = raw.split_at_mut(y * stride);
        let prev: &[u8] = if y == 0 {
            &[]
        } else {
            &done[done.len() - stride + 1..]
        };
        let (upper, rest) = rest.split_at_mut(stride);
        if y > 0 && y + 1 < height && serial(upper[0]) && serial(rest[0]) {
            // Two rows whose filters are serial chains: run them side by side (the lower
            // row one pixel behind needs only what the upper row has just produced).
            let (f1, f2) = (upper[0], rest[0]);
            let lower = &mut rest[1..stride];
            match bpp {
                1 => serial_pair::<1>(f1, f2, prev, &mut upper[1..], lower),
                _ => serial_pair::<2>(f1, f2, prev, &mut upper[1..], lower),
            }
            range(&upper[1..]);
            range(lower);
            y += 2;
        } else {
            let (filter, cur) = upper.split_first_mut().expect("rows are not empty");
            match bpp {
                1 => unfilter::<1>(*filter, prev, cur),
                _ => unfilter::<2>(*filter, prev, cur),
            }
            .with_context(|| format!("row {y}"))?;
            range(cur);
            y += 1;
        }
    }
    Ok((bpp == 2).then_some((lo, hi)))
}

/// Inflates the concatenated payloads of the consecutive IDAT chunks into `out`, which must
/// be exactly the size of the filtered image data; data past that is ignored (as libpng
/// does). Every IDAT chunk's CRC is checked; the zlib Adler-32 is not (see the module doc).
fn inflate_idat(bytes: &[u8], out: &mut [u8]) -> Result<()> {
    ensure!(bytes.starts_with(SIGNATURE), "not a PNG");
    let mut inflater = fdeflate::Decompressor::new();
    inflater.ignore_adler32();
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
        // The last 4 bytes of a chunk go in a call of their own: in the last chunk they are
        // the Adler-32, and fdeflate, even told to ignore it, sums everything the call that
        // reaches it has written (the whole image when one call inflates it all, ~0.35 ms).
        // Once the image is complete it is never reached.
        let (head, tail) = data.split_at(data.len().saturating_sub(4));
        for mut input in [head, tail] {
            while !input.is_empty() && written < out.len() && !inflater.is_done() {
                let (used, made) = inflater
                    .read(input, out, written, false)
                    .map_err(|e| anyhow::anyhow!("corrupt image data: {e:?}"))?;
                input = &input[used..];
                written += made;
            }
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
        (1, _) | (4, true) => serial_row::<Sub, BPP>(&[], cur),
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
        (3, false) => serial_row::<Avg, BPP>(prev, cur),
        (4, false) => serial_row::<Paeth, BPP>(prev, cur),
        (f, _) => bail!("unknown PNG filter type {f}"),
    }
    Ok(())
}

/// One byte lane of a filter whose bytes form a serial chain along the row (Sub, Avg,
/// Paeth): the unfiltered byte from the filtered byte `x` and the unfiltered neighbours `a`
/// (left), `b` (above), `c` (above-left). The chain through `a` is what limits the speed.
trait Serial {
    fn step(a: i32, b: i32, c: i32, x: i32) -> i32;
}

/// Filter type 1: `x + a`.
struct Sub;
/// Filter type 3: `x + (a + b) / 2`.
struct Avg;
/// Filter type 4: `x + paeth(a, b, c)`.
struct Paeth;

impl Serial for Sub {
    #[inline(always)]
    fn step(a: i32, _b: i32, _c: i32, x: i32) -> i32 {
        (x + a) & 0xff
    }
}

impl Serial for Avg {
    #[inline(always)]
    fn step(a: i32, b: i32, _c: i32, x: i32) -> i32 {
        (x + ((a + b) >> 1)) & 0xff
    }
}

impl Serial for Paeth {
    #[inline(always)]
    fn step(a: i32, b: i32, c: i32, x: i32) -> i32 {
        (x + paeth_predictor(a, b, c)) & 0xff
    }
}

/// Unfilters one row of a serial filter `F`; `prev` empty means a zero row above (only used
/// with Sub, for which the row above does not matter). The lanes' state lives in separate
/// scalars and Paeth's choices are conditional moves: on noisy radiographs the choice is a
/// coin toss, and the compiler's vectorised form of the `png` crate's Paeth for 2-byte pixels
/// has a longer chain per pixel than these few scalar instructions.
fn serial_row<F: Serial, const BPP: usize>(prev: &[u8], cur: &mut [u8]) {
    let (mut a, mut c) = ([0i32; BPP], [0i32; BPP]);
    if prev.is_empty() {
        for px in cur.chunks_exact_mut(BPP) {
            for i in 0..BPP {
                a[i] = F::step(a[i], 0, 0, px[i] as i32);
                px[i] = a[i] as u8;
            }
        }
        return;
    }
    for (px, up) in cur.chunks_exact_mut(BPP).zip(prev.chunks_exact(BPP)) {
        for i in 0..BPP {
            let b = up[i] as i32;
            a[i] = F::step(a[i], b, c[i], px[i] as i32);
            px[i] = a[i] as u8;
            c[i] = b;
        }
    }
}

/// Two consecutive rows with serial filters `f1` (upper) and `f2` (lower), unfiltered side by
/// side: pixel `j` of the lower row needs pixels `j - 1` and `j` of the upper row, which the
/// same iteration has just made, so the two latency chains overlap and the pair costs about
/// what one row costs. `prev` is the unfiltered row above the upper one (not empty).
fn serial_pair<const BPP: usize>(f1: u8, f2: u8, prev: &[u8], upper: &mut [u8], lower: &mut [u8]) {
    fn with_upper<F: Serial, const BPP: usize>(
        f2: u8,
        prev: &[u8],
        upper: &mut [u8],
        lower: &mut [u8],
    ) {
        match f2 {
            1 => pair::<F, Sub, BPP>(prev, upper, lower),
            3 => pair::<F, Avg, BPP>(prev, upper, lower),
            _ => pair::<F, Paeth, BPP>(prev, upper, lower),
        }
    }
    match f1 {
        1 => with_upper::<Sub, BPP>(f2, prev, upper, lower),
        3 => with_upper::<Avg, BPP>(f2, prev, upper, lower),
        _ => with_upper::<Paeth, BPP>(f2, prev, upper, lower),
    }
}

/// The loop of [`serial_pair`] for one pair of filters.
fn pair<F: Serial, G: Serial, const BPP: usize>(prev: &[u8], upper: &mut [u8], lower: &mut [u8]) {
    let (mut ua, mut uc) = ([0i32; BPP], [0i32; BPP]);
    let (mut la, mut lc) = ([0i32; BPP], [0i32; BPP]);
    let rows = upper.chunks_exact_mut(BPP).zip(lower.chunks_exact_mut(BPP));
    for ((u, l), p) in rows.zip(prev.chunks_exact(BPP)) {
        for i in 0..BPP {
            let b = p[i] as i32;
            ua[i] = F::step(ua[i], b, uc[i], u[i] as i32);
            u[i] = ua[i] as u8;
            uc[i] = b;
            la[i] = G::step(la[i], ua[i], lc[i], l[i] as i32);
            l[i] = la[i] as u8;
            lc[i] = ua[i];
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
