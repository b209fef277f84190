use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::build::{BuildOptions, build};
use super::format::{bin_path, read_manifest, read_sidecar, sidecar_path, tmp_path};
use super::plan::Partition;
use super::verify::verify;
use crate::config::Config;
use crate::data::testutil::{real_cxr_dir, real_key};

const BROKEN: &str = "cxr_dx_pydicom-issue966_invalid-COM-marker.dcm";

/// A dataset over real radiographs (small ones), the undecodable DICOM, a missing file and a
/// bad record; 10 unique images in shards of 3 (the last holds 1).
fn dataset(dir: &Path) -> PathBuf {
    let q = |img: &[&str]| {
        json!({
            "question": "Which finding?",
            "options": ["A. one", "B. two"],
            "correct_answer": "A",
            "ImagePath": img,
            "ImageViewPosition": img.iter().map(|_| "PA").collect::<Vec<_>>(),
        })
    };
    let v = json!({
        "q1": q(&["cxr_png8_mhh-hannover_006f3a8a.png", "cxr_png8_mhh-hannover_fff13f3a.png"]),
        "q2": q(&["cxr_png8_nih-cxr14_00000001_000_512px.png"]),
        "q3": q(&["cxr_png8rgb_tbx11k_h0001.png"]),
        "q4": q(&["other_dx-canine-thorax_highdicom_dx_image.dcm"]),
        "q5": q(&[BROKEN]),
        "q6": q(&["cxr_cr_nih-kaggle_8bit-jpeg-baseline.dcm", "cxr_png8_mhh-hannover_006f3a8a.png"]),
        "q7": q(&["does/not/exist.png"]),
        "q8": q(&["cxr_png8_nih-cxr14_00000003_000.png"]),
        "q9": q(&["./cxr_png8_wikimedia-cc0_Chest_Xray_PA_3-8-2010.png"]),
        "bad": {"question": "x", "options": ["A. a"], "correct_answer": "A", "ImagePath": ["a.png"]},
    });
    let p = dir.join("train.json");
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    p
}

fn config(json: &Path, out: &Path, size: usize) -> Config {
    let yaml = format!(
        "model: {{path: 'builtin:tiny'}}\ndata: {{train: '{}', image_root: '{}'}}\nshards: {{dir: '{}', image_size: {size}, records_per_shard: 3}}\n",
        json.display(),
        real_cxr_dir().display(),
        out.display()
    );
    Config::from_yaml_str(&yaml, &[]).unwrap()
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn opts(workers: usize) -> BuildOptions {
    BuildOptions {
        workers: Some(workers),
        ..Default::default()
    }
}

/// One full run, then: partitions 0/2 + 1/2 (other worker count) give byte-identical files;
/// an interrupted run (killed inside shard 1) resumed gives byte-identical files; --verify
/// passes and catches a flipped byte; other settings in the same directory are refused.
#[test]
fn full_partitioned_and_resumed_runs_are_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let json = dataset(tmp.path());
    let full = tmp.path().join("full");
    let s = build(&config(&json, &full, 32), &opts(2)).unwrap();
    assert_eq!((s.questions, s.rejected_records, s.images), (9, 1, 10));
    assert_eq!(
        (s.shards_total, s.shards_written, s.ok, s.failed),
        (4, 4, 8, 2)
    );
    let failures = std::fs::read_to_string(full.join("failures.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = failures
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .any(|f| f["key"] == real_key(BROKEN) && f["reason"].as_str().unwrap().contains(BROKEN))
    );
    assert!(
        lines
            .iter()
            .any(|f| f["key"] == real_key("does/not/exist.png"))
    );
    assert!(
        std::fs::read_to_string(full.join("rejects.jsonl"))
            .unwrap()
            .contains("\"id\":\"bad\"")
    );
    let m = read_manifest(&full).unwrap();
    assert_eq!(
        (m.num_images, m.num_shards, m.record_bytes),
        (10, 4, 32 * 32)
    );
    let sc = read_sidecar(&full, 2).unwrap().unwrap();
    assert_eq!(sc.keys.len(), 3);
    assert_eq!(
        std::fs::metadata(bin_path(&full, 2)).unwrap().len(),
        3 * 1024
    );
    let v = verify(&full).unwrap();
    assert_eq!((v.ok, v.missing, v.bad.len()), (4, 0, 0));
    let last = read_sidecar(&full, 3).unwrap().unwrap();
    assert_eq!((last.keys.len(), last.bytes), (1, 1024));

    // Partitions, one worker each.
    let parts = tmp.path().join("parts");
    let c = config(&json, &parts, 32);
    for i in 0..2 {
        let o = BuildOptions {
            partition: Partition { index: i, count: 2 },
            ..opts(1)
        };
        let s = build(&c, &o).unwrap();
        assert_eq!(s.shards_in_partition, 2);
    }
    assert_eq!(files(&full), files(&parts));

    // Interrupted inside shard 1 (4 images: shard 0 complete, one slot of shard 1 written).
    let resumed = tmp.path().join("resumed");
    let c = config(&json, &resumed, 32);
    let s = build(
        &c,
        &BuildOptions {
            limit: Some(4),
            ..opts(2)
        },
    )
    .unwrap();
    assert_eq!((s.shards_written, s.images_processed), (1, 4));
    assert!(tmp_path(&bin_path(&resumed, 1)).exists());
    assert!(!sidecar_path(&resumed, 1).exists());
    let s = build(&c, &opts(1)).unwrap();
    assert_eq!((s.shards_skipped, s.shards_written), (1, 3));
    assert!(!tmp_path(&bin_path(&resumed, 1)).exists());
    assert_eq!(files(&full), files(&resumed));
    // A rerun of a complete directory does nothing.
    let s = build(&c, &opts(1)).unwrap();
    assert_eq!((s.shards_skipped, s.images_processed), (4, 0));

    // Damage is caught by --verify.
    let mut bytes = std::fs::read(bin_path(&resumed, 1)).unwrap();
    bytes[100] ^= 0xFF;
    std::fs::write(bin_path(&resumed, 1), bytes).unwrap();
    let v = verify(&resumed).unwrap();
    assert_eq!((v.ok, v.bad.len(), v.bad[0].0), (3, 1, 1));

    // Other settings in the same directory are refused.
    let e = build(&config(&json, &full, 16), &opts(1)).unwrap_err();
    assert!(format!("{e:#}").contains("other settings"), "{e:#}");
}

#[test]
fn dry_run_counts_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let json = dataset(tmp.path());
    let out = tmp.path().join("dry");
    let s = build(
        &config(&json, &out, 64),
        &BuildOptions {
            dry_run: true,
            ..opts(1)
        },
    )
    .unwrap();
    assert_eq!((s.images, s.shards_total, s.bytes), (10, 4, 10 * 64 * 64));
    assert!(!out.exists());
}

#[test]
fn strict_and_all_failed_runs_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let json = dataset(tmp.path());
    let e = build(
        &config(&json, &tmp.path().join("s"), 16),
        &BuildOptions {
            strict: true,
            ..opts(1)
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("--strict"), "{e:#}");

    let only_bad = tmp.path().join("bad.json");
    std::fs::write(
        &only_bad,
        json!({"q": {"question": "x", "options": ["A. a", "B. b"], "correct_answer": "A", "ImagePath": ["missing.png"]}}).to_string(),
    )
    .unwrap();
    let e = build(&config(&only_bad, &tmp.path().join("b"), 16), &opts(1)).unwrap_err();
    assert!(
        format!("{e:#}").contains("no image could be written"),
        "{e:#}"
    );
}

#[test]
fn partition_parsing() {
    assert_eq!(
        "1/4".parse::<Partition>().unwrap(),
        Partition { index: 1, count: 4 }
    );
    assert!("4/4".parse::<Partition>().is_err());
    assert!("x".parse::<Partition>().is_err());
    assert!("0/0".parse::<Partition>().is_err());
}

/// A rerun checks the checksum of every shard it would skip: one flipped byte (same size, so
/// the old size check passed) makes it rebuild that shard, byte-identical to before.
#[test]
fn a_rerun_rebuilds_a_shard_whose_checksum_no_longer_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let json = dataset(tmp.path());
    let out = tmp.path().join("s");
    let c = config(&json, &out, 16);
    build(&c, &opts(1)).unwrap();
    let before = files(&out);
    let mut bytes = std::fs::read(bin_path(&out, 1)).unwrap();
    bytes[7] ^= 0x01;
    std::fs::write(bin_path(&out, 1), bytes).unwrap();
    let s = build(&c, &opts(1)).unwrap();
    assert_eq!((s.shards_skipped, s.shards_written), (3, 1));
    assert_eq!(files(&out), before);
}

/// A dataset none of whose records is valid has nothing to shard: an error naming the
/// rejects, not a successful run of zero images.
#[test]
fn a_dataset_whose_records_are_all_rejected_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let only_bad = tmp.path().join("bad.json");
    std::fs::write(
        &only_bad,
        json!({"q": {"question": "x", "options": ["A. a"], "correct_answer": "A"}}).to_string(),
    )
    .unwrap();
    let e = build(&config(&only_bad, &tmp.path().join("b"), 16), &opts(1)).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("all 1 record(s)") && e.contains("rejected"),
        "{e}"
    );
    assert!(e.contains("rejects.jsonl"), "{e}");
}

/// `sub/a.png` and `../sub/a.png` (relative to image_root) are two different images and are
/// stored as two.
#[test]
fn two_paths_to_two_files_are_two_images() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path().join("meta");
    std::fs::create_dir_all(meta.join("sub")).unwrap();
    std::fs::create_dir_all(tmp.path().join("sub")).unwrap();
    let real = real_cxr_dir();
    std::fs::copy(
        real.join("cxr_png8_mhh-hannover_006f3a8a.png"),
        meta.join("sub/a.png"),
    )
    .unwrap();
    std::fs::copy(
        real.join("cxr_png8_nih-cxr14_00000001_000_512px.png"),
        tmp.path().join("sub/a.png"),
    )
    .unwrap();
    let q = |img: &str| json!({"question": "x", "options": ["A. a", "B. b"], "correct_answer": "A", "ImagePath": [img]});
    let json = meta.join("train.json");
    std::fs::write(
        &json,
        json!({"q1": q("sub/a.png"), "q2": q("../sub/a.png")}).to_string(),
    )
    .unwrap();
    let out = tmp.path().join("shards");
    let yaml = format!(
        "model: {{path: 'builtin:tiny'}}\ndata: {{train: '{}', image_root: '{}'}}\nshards: {{dir: '{}', image_size: 16}}\n",
        json.display(),
        meta.display(),
        out.display()
    );
    let s = build(&Config::from_yaml_str(&yaml, &[]).unwrap(), &opts(1)).unwrap();
    assert_eq!((s.questions, s.images, s.ok), (2, 2, 2));
}
