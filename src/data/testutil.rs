//! Test helpers shared by the data-path unit tests: where the real radiographs live.

use std::path::PathBuf;

/// The real radiographs (`shared/data/real-cxr`, see its SOURCES.md): `MEDGRPO_REAL_CXR`, else
/// `../shared/data/real-cxr` next to the repository (the lead's layout), else two levels up
/// (engineer worktrees), else `/work/shared/data/real-cxr`. Panics with instructions when
/// none exists, so a missing data folder is a visible failure, not a silent pass.
pub fn real_cxr_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("MEDGRPO_REAL_CXR").map(PathBuf::from),
        Some(manifest.join("../shared/data/real-cxr")),
        Some(manifest.join("../../shared/data/real-cxr")),
        Some(PathBuf::from("/work/shared/data/real-cxr")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("SOURCES.md").exists())
        .expect("real radiographs not found: set MEDGRPO_REAL_CXR to shared/data/real-cxr")
}

/// One file of the real radiographs.
pub fn real(name: &str) -> PathBuf {
    real_cxr_dir().join(name)
}

/// The committed reference fixtures of this area.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

/// The shard key of a file of the real radiographs in a dataset whose `image_root` is their
/// folder: keys are relative to the default allowed root, the folder above (see
/// `data::paths`), so they start with the folder's own name.
pub fn real_key(name: &str) -> String {
    let dir = real_cxr_dir();
    let folder = dir
        .file_name()
        .expect("the real radiographs' folder has a name")
        .to_string_lossy()
        .into_owned();
    format!("{folder}/{name}")
}
