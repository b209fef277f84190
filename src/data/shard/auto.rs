//! `shards.auto`: a pipeline builds (or finishes) its shards before training, or says how to.

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::Config;

/// Builds or resumes the shards when `shards.auto` is set; otherwise, when there are none,
/// says that images will be decoded on the fly and how to build shards once.
pub fn ensure(config: &Config, config_path: &Path, progress: bool) -> Result<()> {
    let dir = Path::new(&config.shards.dir);
    if config.shards.auto {
        // A rerun keeps complete shards after checking their checksums: one read of each.
        let s = super::build(
            config,
            &super::BuildOptions {
                progress,
                ..Default::default()
            },
        )
        .with_context(|| format!("building shards in {} (shards.auto)", dir.display()))?;
        if s.shards_written > 0 {
            eprint!("shards: {}", s.render());
        }
    } else if !dir.join("manifest.json").exists() {
        eprintln!(
            "note: {} holds no shards, so images are decoded on the fly (LRU cache of data.cache_capacity images).
      For more than a few thousand images build them once: `medgrpo shard {}`, or set shards.auto: true.",
            dir.display(),
            config_path.display()
        );
    }
    Ok(())
}
