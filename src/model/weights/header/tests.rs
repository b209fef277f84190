use std::path::Path;

use super::*;

/// A safetensors file from a header object and `data` bytes.
fn file(header: Value, data: usize) -> Vec<u8> {
    let h = header.to_string();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.resize(out.len() + data, 0);
    out
}

fn err(bytes: &[u8]) -> String {
    format!(
        "{:#}",
        read_header(bytes, Path::new("w.safetensors")).unwrap_err()
    )
}

#[test]
fn a_good_header_gives_file_offsets_in_header_order() {
    let h = serde_json::json!({
        "__metadata__": {"format": "pt"},
        "b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [16, 24]},
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
    });
    let bytes = file(h, 24);
    let t = read_header(&bytes, Path::new("w.safetensors")).unwrap();
    let data_start = bytes.len() - 24;
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].name.as_str(), t[0].dtype), ("b", Dtype::BF16));
    assert_eq!((t[0].start, t[0].end), (data_start + 16, data_start + 24));
    assert_eq!(t[1].shape, [4]);
}

/// Every way a header can be wrong names the file and, where one is at fault, the tensor.
#[test]
fn damaged_headers_name_the_file_and_the_tensor() {
    let t = |dtype: &str, shape: Value, offsets: Value| serde_json::json!({"x": {"dtype": dtype, "shape": shape, "data_offsets": offsets}});
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![1, 2, 3], "too short"),
        (u64::MAX.to_le_bytes().to_vec(), "runs past the end"),
        (file(serde_json::json!([1]), 0), "not a JSON object"),
        (
            file(
                t("Q7", serde_json::json!([1]), serde_json::json!([0, 4])),
                4,
            ),
            "`x`: dtype Q7 is not",
        ),
        (
            file(
                t("F32", serde_json::json!([-1]), serde_json::json!([0, 4])),
                4,
            ),
            "`x`: `shape` holds -1",
        ),
        (
            file(t("F32", serde_json::json!([1]), serde_json::json!([0])), 4),
            "`x`: data_offsets has 1",
        ),
        (
            file(
                t(
                    "F32",
                    serde_json::json!([1u64 << 62, 8]),
                    serde_json::json!([0, 4]),
                ),
                4,
            ),
            "overflows",
        ),
        (
            file(
                t("F32", serde_json::json!([1]), serde_json::json!([4, 0])),
                4,
            ),
            "backwards",
        ),
        (
            file(
                t("F32", serde_json::json!([2]), serde_json::json!([0, 8])),
                4,
            ),
            "past the end of the data",
        ),
        (
            file(
                t("F32", serde_json::json!([1]), serde_json::json!([0, 4])),
                8,
            ),
            "the data holds 8 bytes",
        ),
        (
            file(serde_json::json!({"x": 3}), 0),
            "`x`: is not an object",
        ),
    ];
    for (bytes, want) in cases {
        let e = err(&bytes);
        assert!(e.starts_with("w.safetensors: "), "{e}");
        assert!(e.contains(want), "{want}: {e}");
    }
}

mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// One tensor entry: a dtype name (valid or not), a small shape and offsets that are
    /// often right and often a little off.
    fn entry() -> impl Strategy<Value = (String, Vec<u64>, (u64, u64))> {
        let dtype = prop_oneof![
            Just("F32".to_string()),
            Just("BF16".to_string()),
            Just("U8".to_string()),
            Just("F64".to_string()),
            "[A-Z0-9]{1,4}",
        ];
        (dtype, vec(0u64..5, 0..3), (0u64..40, 0u64..40))
    }

    /// A header from entries: with `tidy`, each tensor's offsets are laid end to end from its
    /// shape (a valid file unless a dtype is unknown), else taken as generated.
    fn file_of(entries: &[(String, Vec<u64>, (u64, u64))], tidy: bool, slack: i64) -> Vec<u8> {
        let mut h = serde_json::Map::new();
        let mut at = 0u64;
        for (i, (dtype, shape, (a, b))) in entries.iter().enumerate() {
            let width = match dtype.as_str() {
                "F64" => 8,
                "F32" => 4,
                "BF16" => 2,
                _ => 1,
            };
            let size = shape.iter().product::<u64>() * width;
            let offsets = if tidy { (at, at + size) } else { (*a, *b) };
            at += size;
            h.insert(
                format!("t{i}"),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offsets.0, offsets.1]}),
            );
        }
        let data = (at as i64 + slack).max(0) as usize;
        file(Value::Object(h), data)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any bytes: no panic, and an error names the file.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..48)) {
            if let Err(e) = read_header(&bytes, Path::new("w.safetensors")) {
                let shown = format!("{e:#}");
                prop_assert!(shown.starts_with("w.safetensors: "), "{}", shown);
            }
        }

        /// Generated headers, tidy or not, with the header length or the data cut or padded:
        /// no panic; errors name the file; and this reader accepts exactly the files the
        /// safetensors crate accepts, with the same tensors.
        #[test]
        fn agrees_with_the_safetensors_crate(
            entries in vec(entry(), 0..4),
            tidy in any::<bool>(),
            slack in -2i64..3,
            cut in 0usize..3,
        ) {
            let mut bytes = file_of(&entries, tidy, slack);
            bytes.truncate(bytes.len().saturating_sub(cut * 7));
            let ours = read_header(&bytes, Path::new("w.safetensors"));
            let theirs = safetensors::SafeTensors::deserialize(&bytes);
            match (&ours, &theirs) {
                (Ok(t), Ok(st)) => {
                    prop_assert_eq!(t.len(), st.len());
                    for e in t {
                        let v = st.tensor(&e.name).unwrap();
                        prop_assert_eq!(v.shape(), &e.shape[..]);
                        prop_assert_eq!(v.data().len(), e.end - e.start);
                    }
                }
                (Err(e), Err(_)) => {
                    let shown = format!("{e:#}");
                    prop_assert!(shown.starts_with("w.safetensors: "), "{}", shown);
                }
                (o, t) => prop_assert!(false, "ours {:?} vs safetensors {:?}", o.as_ref().map(|_| ()), t.as_ref().map(|_| ())),
            }
        }
    }
}
