//! Where a dataset's image paths may point, and the shard key of each image.
//!
//! A dataset names its images with paths relative to `data.image_root` (or to the JSON file's
//! folder); ReXVQA's start with `../deid_png/…`, one level above its `metadata` folder. Two
//! rules keep such paths from reading the wrong file:
//!
//! - **Confinement.** A path is resolved (joined to its base, `.` and `..` folded lexically)
//!   and must then lie inside one of the allowed roots: `data.allowed_roots` when the config
//!   lists them, else the parent folder of the base (image_root, or each split's folder),
//!   which is what ReXVQA's `../deid_png` needs; a base whose parent is the filesystem root
//!   is its own allowed root. Anything else (`../../../../etc/passwd`, an absolute path
//!   elsewhere) rejects the record, naming it. The check is lexical: a symbolic link inside an
//!   allowed root is followed, as datasets are often linked into place.
//! - **Keys.** An image's shard key is its resolved path relative to the anchor, the deepest
//!   folder that holds every allowed root (for one root, the root itself). Two different
//!   files can therefore never share a key, and the keys of a dataset do not depend on where
//!   it is mounted: ReXVQA's `../deid_png/p1/s1/x.png` under `/data/rexvqa/metadata` has the
//!   key `deid_png/p1/s1/x.png` on every machine.

use std::path::{Component, Path, PathBuf};

use crate::clip::clip;
use crate::config::DataConfig;

/// The allowed roots and the key anchor of one configuration (every split shares them, so
/// an image has the same key whichever split names it).
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePaths {
    image_root: Option<PathBuf>,
    roots: Vec<PathBuf>,
    anchor: PathBuf,
}

/// An image path as the data path uses it: the file to read and its shard key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Absolute, lexically normalised path.
    pub path: PathBuf,
    /// Shard key: `path` relative to the anchor, `/`-separated.
    pub key: String,
}

impl ImagePaths {
    /// The rules of a `data:` section over all its splits.
    pub fn from_config(data: &DataConfig) -> Self {
        let splits: Vec<&Path> = [Some(&data.train), data.val.as_ref(), data.test.as_ref()]
            .into_iter()
            .flatten()
            .map(Path::new)
            .collect();
        Self::new(
            data.image_root.as_deref().map(Path::new),
            data.allowed_roots.as_deref(),
            &splits,
        )
    }

    /// The rules for `image_root` (None: each split's folder is its base), an explicit root
    /// list (None: the default described in the module docs) and the split files.
    pub fn new(image_root: Option<&Path>, allowed: Option<&[String]>, splits: &[&Path]) -> Self {
        let image_root = image_root.map(absolute);
        let mut roots: Vec<PathBuf> = match allowed {
            Some(list) => list.iter().map(|r| absolute(Path::new(r))).collect(),
            None => {
                let bases: Vec<PathBuf> = match &image_root {
                    Some(r) => vec![r.clone()],
                    None => splits.iter().map(|s| base_of_split(None, s)).collect(),
                };
                bases.iter().map(|b| default_root(b)).collect()
            }
        };
        roots.sort();
        roots.dedup();
        let anchor = common_ancestor(&roots);
        Self {
            image_root,
            roots,
            anchor,
        }
    }

    /// The resolver of one split file.
    pub fn resolver(&self, json_path: &Path) -> PathResolver {
        PathResolver {
            base: base_of_split(self.image_root.as_deref(), json_path),
            rules: self.clone(),
        }
    }

    /// The allowed roots, sorted.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The folder keys are relative to.
    pub fn anchor(&self) -> &Path {
        &self.anchor
    }
}

/// Resolves the image paths of one split: its base folder plus the shared rules.
#[derive(Debug, Clone)]
pub struct PathResolver {
    base: PathBuf,
    rules: ImagePaths,
}

impl PathResolver {
    /// The file `given` names and its key, or why it may not be read (outside every allowed
    /// root, or naming a root folder itself).
    pub fn resolve(&self, given: &str) -> Result<ResolvedImage, String> {
        let p = Path::new(given);
        let path = if p.is_absolute() {
            normalize(p)
        } else {
            normalize(&self.base.join(p))
        };
        if !self.rules.roots.iter().any(|r| path.starts_with(r)) {
            return Err(format!(
                "`{}` resolves to {}, outside the allowed image folders ({}); add its folder to data.allowed_roots if it is meant to be read",
                clip(given),
                clip(&path.display().to_string()),
                self.rules
                    .roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let rel = path
            .strip_prefix(&self.rules.anchor)
            .expect("every allowed root lies under the anchor");
        let key = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if key.is_empty() || self.rules.roots.contains(&path) {
            return Err(format!(
                "`{}` names the image folder {} itself, not a file",
                clip(given),
                path.display()
            ));
        }
        Ok(ResolvedImage { path, key })
    }
}

/// Where the relative paths of `json_path` resolve: image_root, else the JSON's folder.
fn base_of_split(image_root: Option<&Path>, json_path: &Path) -> PathBuf {
    match image_root {
        Some(r) => r.to_path_buf(),
        None => absolute(json_path.parent().unwrap_or(Path::new(""))),
    }
}

/// A base folder's default allowed root: its parent, unless that is the filesystem root.
fn default_root(base: &Path) -> PathBuf {
    match base.parent() {
        Some(p) if p.parent().is_some() => p.to_path_buf(),
        _ => base.to_path_buf(),
    }
}

/// The deepest folder holding every path (all absolute, so at worst `/`).
fn common_ancestor(paths: &[PathBuf]) -> PathBuf {
    let Some(first) = paths.first() else {
        return PathBuf::from("/");
    };
    let mut anchor = first.clone();
    for p in &paths[1..] {
        while !p.starts_with(&anchor) {
            if !anchor.pop() {
                break;
            }
        }
    }
    anchor
}

/// `p` made absolute against the working directory (without touching the filesystem) and
/// normalised; an empty path is the working directory.
fn absolute(p: &Path) -> PathBuf {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    normalize(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// Lexical normalisation: `.` dropped, `a/..` folded; `..` above the root stays at the root.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests;
