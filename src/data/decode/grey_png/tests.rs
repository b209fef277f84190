//! The own grey-PNG reader against the `png` crate, byte for byte: every filter type, both
//! depths, odd sizes, one and many IDAT chunks, the real radiographs; and damaged files.

use std::io::{Cursor, Write};

use super::*;
use crate::data::testutil::{real, real_cxr_dir};

/// The `png` crate's decoding of a whole file: (width, height, bytes per sample, samples).
fn png_crate(bytes: &[u8]) -> (u32, u32, usize, Vec<u8>) {
    let mut dec = png::Decoder::new(Cursor::new(bytes));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut r = dec.read_info().unwrap();
    let mut out = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut out).unwrap();
    let bpp = if info.bit_depth == png::BitDepth::Sixteen {
        2
    } else {
        1
    };
    out.truncate(info.buffer_size());
    (info.width, info.height, bpp, out)
}

/// A 16-bit image's (min, max), as [`read_grey_rows`] returns it.
type Range16 = Option<(u16, u16)>;

/// Our rows with the filter bytes removed, and the 16-bit range.
fn ours(bytes: &[u8]) -> Result<(Vec<u8>, Range16)> {
    let (w, h, bpp, _) = png_crate(bytes);
    let mut raw = Vec::new();
    let range = read_grey_rows(bytes, w, h, bpp, 1 << 30, &mut raw)?;
    let stride = 1 + w as usize * bpp;
    Ok((
        raw.chunks_exact(stride)
            .flat_map(|r| &r[1..])
            .copied()
            .collect(),
        range,
    ))
}

fn assert_same_as_png_crate(bytes: &[u8], what: &str) {
    let (_, _, bpp, want) = png_crate(bytes);
    let (got, range) = ours(bytes).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    assert!(got == want, "{what}: samples differ from the png crate's");
    if bpp == 2 {
        let v: Vec<u16> = want
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        let minmax = (*v.iter().min().unwrap(), *v.iter().max().unwrap());
        assert_eq!(range, Some(minmax), "{what}");
    } else {
        assert_eq!(range, None, "{what}");
    }
}

/// A grey PNG of `samples` written by the `png` crate with one filter for every row and the
/// image data split into IDAT chunks of `chunk` bytes (`None`: one chunk).
fn encode(
    w: u32,
    h: u32,
    depth: png::BitDepth,
    filter: png::Filter,
    chunk: Option<usize>,
    samples: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(depth);
    enc.set_filter(filter);
    let mut wr = enc.write_header().unwrap();
    match chunk {
        None => wr.write_image_data(samples).unwrap(),
        Some(n) => {
            let mut s = wr.stream_writer_with_size(n).unwrap();
            s.write_all(samples).unwrap();
            s.finish().unwrap();
        }
    }
    drop(wr);
    out
}

/// Samples with smooth content plus noise, so every filter and every Paeth branch is taken.
fn samples(w: u32, h: u32, bpp: usize, seed: u64) -> Vec<u8> {
    let v = crate::bench::synthetic::synthetic_cxr(w, h, seed);
    if bpp == 2 {
        v.iter().flat_map(|x| x.to_be_bytes()).collect()
    } else {
        v.iter().map(|&x| (x >> 8) as u8).collect()
    }
}

const FILTERS: [png::Filter; 7] = [
    png::Filter::NoFilter,
    png::Filter::Sub,
    png::Filter::Up,
    png::Filter::Avg,
    png::Filter::Paeth,
    png::Filter::Adaptive,
    png::Filter::MinEntropy,
];

#[test]
fn rows_equal_the_png_crate_for_every_filter_depth_size_and_chunking() {
    for (depth, bpp) in [(png::BitDepth::Eight, 1), (png::BitDepth::Sixteen, 2)] {
        for (w, h) in [(1, 1), (7, 5), (33, 40), (160, 9)] {
            let px = samples(w, h, bpp, (w * h) as u64);
            for filter in FILTERS {
                for chunk in [None, Some(1), Some(97)] {
                    let png = encode(w, h, depth, filter, chunk, &px);
                    assert_same_as_png_crate(
                        &png,
                        &format!("{depth:?} {w}x{h} {filter:?} {chunk:?}"),
                    );
                }
            }
        }
    }
}

/// Random filtered rows (any bytes are valid filtered data) whose filter types take every
/// serial pair (Sub, Avg, Paeth after one another, which [`unfilter_rows`] runs side by side)
/// and every other sequence, against the `png` crate, for both depths and odd widths.
#[test]
fn every_pair_of_row_filters_equals_the_png_crate() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut filters = vec![4u8];
    for f1 in 0..5 {
        for f2 in 0..5 {
            // A None row after each pair, so the pairing restarts on the next pair.
            filters.extend([f1, f2, 0]);
        }
    }
    filters.extend((0..40).map(|_| rng.random_range(0..5u8)));
    for (depth, bpp) in [(8u8, 1usize), (16, 2)] {
        for w in [1u32, 2, 31] {
            let h = filters.len() as u32;
            let stride = 1 + w as usize * bpp;
            let mut rows: Vec<u8> = (0..h as usize * stride).map(|_| rng.random()).collect();
            for (row, &f) in rows.chunks_exact_mut(stride).zip(&filters) {
                row[0] = f;
            }
            let png = handmade(w, h, depth, &rows);
            assert_same_as_png_crate(&png, &format!("random rows, {depth} bits, width {w}"));
        }
    }
}

/// The exhaustive check of the branch-free predictor against the spec's definition.
#[test]
fn paeth_predictor_is_the_specs_for_all_inputs() {
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            for c in 0..=255u8 {
                let p = a as i16 + b as i16 - c as i16;
                let (pa, pb, pc) = (
                    (p - a as i16).abs(),
                    (p - b as i16).abs(),
                    (p - c as i16).abs(),
                );
                let want = if pa <= pb && pa <= pc {
                    a
                } else if pb <= pc {
                    b
                } else {
                    c
                };
                assert_eq!(paeth_predictor_for_tests(a, b, c), want, "{a} {b} {c}");
            }
        }
    }
}

/// Every real grey PNG of the radiograph folder, and a 16-bit PNG of RG1's stored values
/// written with each filter type and as the `image` crate writes it.
#[test]
fn real_radiographs_equal_the_png_crate() {
    let mut n = 0;
    for entry in std::fs::read_dir(real_cxr_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            let bytes = std::fs::read(&path).unwrap();
            let info = png::Decoder::new(Cursor::new(&bytes[..]))
                .read_info()
                .unwrap()
                .info()
                .clone();
            if info.color_type == png::ColorType::Grayscale && !info.interlaced {
                assert_same_as_png_crate(&bytes, &path.display().to_string());
                n += 1;
            }
        }
    }
    assert!(n >= 4, "only {n} grey PNGs among the real radiographs");

    let dec = crate::data::decode::decode_file(&real("cxr_cr_nema-wg04_RG1_UNCR.dcm")).unwrap();
    let crate::data::convert::Samples::F32(v) = &dec.samples else {
        panic!("DICOM gives modality values")
    };
    let be: Vec<u8> = v.iter().flat_map(|&x| (x as u16).to_be_bytes()).collect();
    for filter in [png::Filter::Avg, png::Filter::Paeth, png::Filter::Adaptive] {
        let png = encode(
            dec.width,
            dec.height,
            png::BitDepth::Sixteen,
            filter,
            Some(65536),
            &be,
        );
        assert_same_as_png_crate(&png, &format!("RG1 16-bit {filter:?}"));
    }
    let raw: Vec<u16> = v.iter().map(|&x| x as u16).collect();
    let mut bytes = Vec::new();
    image::ImageBuffer::<image::Luma<u16>, _>::from_raw(dec.width, dec.height, raw)
        .unwrap()
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    assert_same_as_png_crate(&bytes, "RG1 16-bit via image");
}

/// Offset of the first IDAT chunk's length field.
fn first_idat(png: &[u8]) -> usize {
    png.windows(4).position(|w| w == b"IDAT").unwrap() - 4
}

/// Rewrites the CRC of the chunk at `at` so that only the damage under test remains.
fn fix_crc(png: &mut [u8], at: usize) {
    let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&png[at + 4..at + 8 + len]);
    png[at + 8 + len..at + 12 + len].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn damaged_image_data_is_refused() {
    let (w, h) = (40, 30);
    let good = encode(
        w,
        h,
        png::BitDepth::Sixteen,
        png::Filter::Paeth,
        None,
        &samples(w, h, 2, 3),
    );
    let at = first_idat(&good);
    let len = u32::from_be_bytes(good[at..at + 4].try_into().unwrap()) as usize;
    let read = |png: &[u8]| read_grey_rows(png, w, h, 2, 1 << 30, &mut Vec::new());
    assert!(read(&good).is_ok());

    let mut bad_crc = good.clone();
    bad_crc[at + 8 + len / 2] ^= 0x55;
    let e = format!("{:#}", read(&bad_crc).unwrap_err());
    assert!(e.contains("CRC"), "{e}");

    // The same flip with its CRC fixed: neither reader checks the Adler-32, so both refuse
    // the stream or both read the same rows.
    let mut bad_data = bad_crc.clone();
    fix_crc(&mut bad_data, at);
    let theirs = {
        let mut dec = png::Decoder::new(Cursor::new(&bad_data[..]));
        dec.set_transformations(png::Transformations::IDENTITY);
        let mut r = dec.read_info().unwrap();
        let mut out = vec![0; r.output_buffer_size().unwrap()];
        r.next_frame(&mut out).map(|_| out)
    };
    let mine = {
        let mut raw = Vec::new();
        read_grey_rows(&bad_data, w, h, 2, 1 << 30, &mut raw).map(|_| {
            let rows = raw.chunks_exact(1 + 2 * w as usize);
            rows.flat_map(|r| &r[1..]).copied().collect::<Vec<u8>>()
        })
    };
    match (mine, theirs) {
        (Ok(a), Ok(b)) => assert!(a == b, "a damaged stream read differently"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "one reader refused the damaged stream: {:?} {:?}",
            a.is_ok(),
            b.is_ok()
        ),
    }

    // The image data cut short (chunk shortened, CRC fixed, IEND after it).
    let mut short = good[..at].to_vec();
    let keep = len / 2;
    short.extend_from_slice(&(keep as u32).to_be_bytes());
    short.extend_from_slice(&good[at + 4..at + 8 + keep]);
    short.extend_from_slice(&[0; 4]);
    fix_crc(&mut short, at);
    short.extend_from_slice(&good[good.len() - 12..]);
    let e = format!("{:#}", read(&short).unwrap_err());
    assert!(e.contains("ends early"), "{e}");

    // A row whose filter type byte is beyond 4.
    let mut rows = vec![0u8; h as usize * (1 + 2 * w as usize)];
    rows[(1 + 2 * w as usize) * 7] = 5;
    let e = format!("{:#}", read(&handmade(w, h, 16, &rows)).unwrap_err());
    assert!(e.contains("row 7") && e.contains("filter type 5"), "{e}");
}

/// A damaged grey PNG still fails through the whole path with the file named, and with the
/// `png` crate's reason (the fast path hands refused files to the general path).
#[test]
fn damaged_files_fail_through_the_general_path() {
    let (w, h) = (40, 30);
    let mut png = encode(
        w,
        h,
        png::BitDepth::Sixteen,
        png::Filter::Up,
        None,
        &samples(w, h, 2, 4),
    );
    let at = first_idat(&png);
    png[at + 20] ^= 0x55;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("damaged16.png");
    std::fs::write(&p, &png).unwrap();
    let e = format!(
        "{:#}",
        crate::data::decode::load_u8(&p, crate::config::Conversion::Minmax, 16).unwrap_err()
    );
    assert!(
        e.contains("damaged16.png") && e.contains("cannot decode"),
        "{e}"
    );
}

/// A grey PNG of `depth` bits made by hand from its filtered rows (filter bytes included).
fn handmade(w: u32, h: u32, depth: u8, rows: &[u8]) -> Vec<u8> {
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    };
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &fdeflate::compress_to_vec(rows));
    chunk(&mut out, b"IEND", &[]);
    out
}
