//! The demo's data, made when a demo config needs it and remade when its settings change.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::config::Config;

/// Makes the demo's synthetic data when the config asks for it and it is missing or was made
/// with other settings (a `<split>.stamp.json` beside each split records them), so a changed
/// `demo` section, or data from an older medgrpo, never trains on stale questions. Regenerated
/// images keep their names, so the demo's shards are then removed and rebuilt too.
pub fn ensure(config: &Config) -> Result<()> {
    let Some(demo) = &config.demo else {
        return Ok(());
    };
    let mut replaced = false;
    for (path, n, split) in [
        (
            Some(config.data.train.as_str()),
            demo.train_questions,
            "train",
        ),
        (config.data.val.as_deref(), demo.val_questions, "val"),
    ] {
        let Some(path) = path else { continue };
        let path = Path::new(path);
        let dir = path.parent().context("demo data path has no directory")?;
        let want = format!("{split}.json");
        if path.file_name().and_then(|f| f.to_str()) != Some(want.as_str()) {
            bail!(
                "demo data for the {split} split must be called {want} (got {})",
                path.display()
            );
        }
        let stamp_path = dir.join(format!("{split}.stamp.json"));
        let stamp = serde_json::json!({
            "questions": n,
            "image_size": demo.image_size,
            "seed": config.seed,
            "task": demo.task,
            "shuffle_options": demo.shuffle_options,
        });
        let current = std::fs::read_to_string(&stamp_path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if path.exists() && current.as_ref() == Some(&stamp) {
            continue;
        }
        if path.exists() {
            replaced = true;
            eprintln!(
                "demo: {} was made with other demo settings; regenerating it",
                path.display()
            );
        }
        eprintln!(
            "demo: generating {n} synthetic {split} questions in {}",
            dir.display()
        );
        super::synth::generate_with(
            dir,
            split,
            n,
            demo.image_size,
            config.seed,
            demo.task,
            demo.shuffle_options,
        )?;
        std::fs::write(&stamp_path, serde_json::to_string_pretty(&stamp)?)
            .with_context(|| format!("cannot write {}", stamp_path.display()))?;
    }
    let shards = Path::new(&config.shards.dir);
    if replaced && config.shards.auto && shards.join("manifest.json").exists() {
        eprintln!(
            "demo: removing {}, built from the old images",
            shards.display()
        );
        std::fs::remove_dir_all(shards)
            .with_context(|| format!("cannot remove {}", shards.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
