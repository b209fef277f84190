//! The built-in demo: a synthetic chest-X-ray-like dataset whose answers can only be read
//! from the image, so a run that learns shows it on CPU in minutes with no download.

pub mod data;
pub mod report;
pub mod synth;
pub mod warm_start;

/// `--set` overrides that put a demo run's data (`dir/data`), shards and output (`dir/run`)
/// under `dir`, so tests built on `pipelines/demo.yaml` never touch `runs/demo`.
#[cfg(test)]
pub(crate) fn overrides_under(dir: &std::path::Path) -> Vec<String> {
    let d = dir.display();
    vec![
        format!("output_dir={d}/run"),
        format!("data.train={d}/data/train.json"),
        format!("data.val={d}/data/val.json"),
        format!("shards.dir={d}/shards"),
    ]
}
