//! `medgrpo inspect shards`: what a shard directory holds (settings, counts, failures, disk
//! use) and, for one key, the record written out as a PNG exactly as stored, so a user can
//! see what the model will see.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::loader::ShardStore;
use super::shard::format::{read_manifest, read_sidecar};

/// A readable report of `dir`.
pub fn describe(dir: &Path) -> Result<String> {
    let m = read_manifest(dir)?;
    let (mut built, mut images, mut failed, mut grey) = (0, 0, 0, 0);
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples = Vec::new();
    for s in 0..m.num_shards {
        if let Some(sc) = read_sidecar(dir, s)? {
            built += 1;
            images += sc.keys.len();
            failed += sc.failures.len();
            grey += sc.colour_to_grey;
            for f in sc.failures {
                *causes.entry(f.cause.clone()).or_default() += 1;
                if examples.len() < 5 {
                    examples.push(format!("{} ({})", f.key, f.reason));
                }
            }
        }
    }
    let mut disk = 0u64;
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        disk += e?.metadata()?.len();
    }
    let mut s = String::new();
    writeln!(s, "{}", dir.display())?;
    writeln!(
        s,
        "  format v{}, {}x{}x{} u8 records ({} bytes), conversion {:?}, resize {}, settings hash {}",
        m.format_version,
        m.image_size,
        m.image_size,
        m.channels,
        m.record_bytes,
        m.conversion,
        m.resize,
        m.settings_hash
    )?;
    writeln!(
        s,
        "  shards: {built} of {} complete ({} records each); images: {images} of {} stored, {} ok, {failed} failed, {grey} colour stored as grey",
        m.num_shards,
        m.records_per_shard,
        m.num_images,
        images - failed
    )?;
    writeln!(s, "  disk: {:.3} GB", disk as f64 / 1e9)?;
    let mut causes: Vec<_> = causes.into_iter().collect();
    causes.sort_by_key(|c| std::cmp::Reverse(c.1));
    for (c, n) in causes {
        writeln!(s, "  failures: {n} × {c}")?;
    }
    for e in examples {
        writeln!(s, "    e.g. {e}")?;
    }
    Ok(s)
}

/// Writes the record of `key` as a PNG (grey or RGB, at the stored size, bytes unchanged).
pub fn export_png(dir: &Path, key: &str, out: &Path) -> Result<()> {
    let m = read_manifest(dir)?;
    let store = ShardStore::open(dir, &m.settings())?;
    let bytes = store.record(key)?;
    let color = if m.channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    image::save_buffer_with_format(
        out,
        bytes,
        m.image_size,
        m.image_size,
        color,
        image::ImageFormat::Png,
    )
    .with_context(|| format!("cannot write {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::loader::ShardStore;

    #[test]
    fn describes_and_exports_a_record_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let root = crate::data::testutil::real_cxr_dir();
        let json = tmp.path().join("d.json");
        std::fs::write(
            &json,
            serde_json::json!({
                "q1": {"question": "?", "options": ["A. a", "B. b"], "correct_answer": "A",
                       "ImagePath": ["cxr_png8_mhh-hannover_006f3a8a.png", "missing.png"]}
            })
            .to_string(),
        )
        .unwrap();
        let shards = tmp.path().join("s");
        let yaml = format!(
            "model: {{path: 'builtin:tiny'}}\ndata: {{train: '{}', image_root: '{}'}}\nshards: {{dir: '{}', image_size: 20, records_per_shard: 8}}\n",
            json.display(),
            root.display(),
            shards.display()
        );
        let c = crate::config::Config::from_yaml_str(&yaml, &[]).unwrap();
        crate::data::shard::build(&c, &Default::default()).unwrap();
        let text = describe(&shards).unwrap();
        assert!(
            text.contains("1 of 1 complete") && text.contains("1 ok, 1 failed"),
            "{text}"
        );
        assert!(text.contains("missing.png"), "{text}");

        let key = crate::data::testutil::real_key("cxr_png8_mhh-hannover_006f3a8a.png");
        let key = key.as_str();
        let out = tmp.path().join("x.png");
        export_png(&shards, key, &out).unwrap();
        let png = image::open(&out).unwrap().into_luma8();
        let store = ShardStore::open(&shards, &read_manifest(&shards).unwrap().settings()).unwrap();
        assert_eq!(png.as_raw().as_slice(), store.record(key).unwrap());
        assert!(export_png(&shards, "missing.png", &out).is_err());
    }
}
