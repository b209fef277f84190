//! Checkpoint directories: written under a temporary name and renamed when complete, so a
//! crash never leaves a half-written checkpoint that `--resume` would pick; old ones pruned
//! to `save_total_limit`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::epochs::Cursor;

/// The trainer's state, saved next to the adapter and the optimizer in every checkpoint
/// (`trainer_state.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub global_step: u64,
    /// Data position to continue from.
    pub cursor: Cursor,
    /// Run seed (all randomness is derived from it, the step and the item).
    pub seed: u64,
    /// Steps the run was planned for (the schedule depends on it).
    pub total_steps: u64,
}

impl TrainerState {
    /// The file name inside a checkpoint.
    pub const FILE: &str = "trainer_state.json";

    /// Reads the state of the checkpoint in `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{} has no {}", dir.display(), Self::FILE))?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// Writes it into the checkpoint directory `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join(Self::FILE), serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {} in {}", Self::FILE, dir.display()))
    }
}

/// Name of the checkpoint of optimizer step `step` (the HF Trainer's naming).
pub fn dir_name(step: u64) -> String {
    format!("checkpoint-{step}")
}

fn step_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("checkpoint-")?
        .parse()
        .ok()
}

/// Complete checkpoints of a run directory, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !run_dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(run_dir).with_context(|| format!("cannot list {}", run_dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir()
            && let Some(step) = step_of(&path)
        {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The checkpoint `--resume` means: `latest` (or empty) picks the newest complete one of
/// `run_dir`; anything else is a path to a checkpoint directory.
pub fn resolve(run_dir: &Path, which: &str) -> Result<PathBuf> {
    if which.is_empty() || which == "latest" {
        return match list(run_dir)?.pop() {
            Some((_, p)) => Ok(p),
            None => bail!("--resume: no complete checkpoint in {}", run_dir.display()),
        };
    }
    let p = PathBuf::from(which);
    if !p.is_dir() {
        bail!("--resume: {} is not a checkpoint directory", p.display());
    }
    Ok(p)
}

/// Writes checkpoint `step` by calling `write` on a fresh temporary directory, then renames
/// it into place and removes the oldest checkpoints beyond `keep` (0 keeps all).
pub fn save(
    run_dir: &Path,
    step: u64,
    keep: usize,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let final_dir = run_dir.join(dir_name(step));
    let tmp = run_dir.join(format!(".{}.tmp-{}", dir_name(step), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("writing checkpoint {step}")));
    }
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("cannot move checkpoint into {}", final_dir.display()))?;
    if keep > 0 {
        let all = list(run_dir)?;
        for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(old)
                .with_context(|| format!("cannot remove {}", old.display()))?;
        }
    }
    Ok(final_dir)
}

#[cfg(test)]
mod tests;
