//! What a sharding run will do: the sorted list of unique images over every split, the fixed
//! slice of it each shard holds, and which shards a partition `i/n` builds.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::format::{FORMAT_VERSION, Manifest, RESIZE, ShardSettings, bin_path, hex, read_sidecar};
use crate::config::DataConfig;
use crate::data::paths::ImagePaths;
use crate::data::record::{RecordError, for_each_valid};

/// `--partition i/n`: this machine builds the shards whose index is `i` modulo `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// 0-based index.
    pub index: usize,
    /// Number of partitions.
    pub count: usize,
}

impl Partition {
    /// The whole job.
    pub const ALL: Partition = Partition { index: 0, count: 1 };

    /// Whether shard `s` belongs to this partition.
    pub fn owns(&self, s: usize) -> bool {
        s % self.count == self.index
    }
}

impl FromStr for Partition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("partition `{s}` is not of the form i/n (e.g. 0/4)"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("partition index `{i}` is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("partition count `{n}` is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("partition {index}/{count}: need 0 <= i < n"));
        }
        Ok(Partition { index, count })
    }
}

/// Unique images named by the dataset, sorted by key.
#[derive(Debug, Default)]
pub struct ImageList {
    /// Sorted unique keys.
    pub keys: Vec<String>,
    /// Resolved file of each key.
    pub paths: Vec<PathBuf>,
    /// Valid questions read.
    pub questions: usize,
    /// Records dropped by validation (`on_bad_item: skip`).
    pub rejected: Vec<RecordError>,
}

/// Reads every configured split (train, val, test) record by record and keeps only the
/// image keys: memory is the key list, not the records. Keys are injective (see
/// [`crate::data::paths`]), so each key names exactly one file.
pub fn collect_images(data: &DataConfig) -> Result<ImageList> {
    let mut map: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut out = ImageList::default();
    let rules = ImagePaths::from_config(data);
    for split in [Some(&data.train), data.val.as_ref(), data.test.as_ref()]
        .into_iter()
        .flatten()
    {
        let questions = &mut out.questions;
        for_each_valid(
            Path::new(split),
            &rules,
            data.on_bad_item,
            &mut out.rejected,
            |r| {
                *questions += 1;
                for (k, p) in r.image_keys.into_iter().zip(r.image_paths) {
                    map.entry(k).or_insert(p);
                }
            },
        )?;
    }
    (out.keys, out.paths) = map.into_iter().unzip();
    Ok(out)
}

/// The shard layout of an image list under given settings.
#[derive(Debug)]
pub struct Plan {
    /// What the records depend on.
    pub settings: ShardSettings,
    /// Slots per shard.
    pub records_per_shard: usize,
    /// The images, sorted by key.
    pub images: ImageList,
}

impl Plan {
    /// A plan; `records_per_shard` must be at least 1.
    pub fn new(
        settings: ShardSettings,
        records_per_shard: usize,
        images: ImageList,
    ) -> Result<Self> {
        if records_per_shard == 0 {
            bail!("shards.records_per_shard must be at least 1");
        }
        Ok(Self {
            settings,
            records_per_shard,
            images,
        })
    }

    /// Number of shard files.
    pub fn num_shards(&self) -> usize {
        self.images.keys.len().div_ceil(self.records_per_shard)
    }

    /// Indices into the image list held by shard `s`.
    pub fn range(&self, s: usize) -> Range<usize> {
        let start = s * self.records_per_shard;
        start..(start + self.records_per_shard).min(self.images.keys.len())
    }

    /// The manifest every partition writes identically.
    pub fn manifest(&self) -> Manifest {
        let mut h = Sha256::new();
        for k in &self.images.keys {
            h.update(k.as_bytes());
            h.update(b"\n");
        }
        Manifest {
            format_version: FORMAT_VERSION,
            image_size: self.settings.image_size,
            channels: self.settings.channels,
            conversion: self.settings.conversion,
            resize: RESIZE.to_string(),
            settings_hash: self.settings.hash(),
            record_bytes: self.settings.record_bytes(),
            records_per_shard: self.records_per_shard,
            num_images: self.images.keys.len(),
            num_shards: self.num_shards(),
            keys_sha256: hex(&h.finalize()),
        }
    }

    /// Whether shard `s` is already complete in `dir` with these settings and keys (a
    /// sidecar with the same hash and key list, and a `.bin` of the right size).
    pub fn is_complete(&self, dir: &Path, s: usize) -> Result<bool> {
        let Some(sc) = read_sidecar(dir, s)? else {
            return Ok(false);
        };
        let r = self.range(s);
        let bin_len = std::fs::metadata(bin_path(dir, s)).map(|m| m.len()).ok();
        Ok(sc.settings_hash == self.settings.hash()
            && sc.keys.as_slice() == &self.images.keys[r.clone()]
            && bin_len == Some((r.len() * self.settings.record_bytes()) as u64))
    }
}

/// Checks that `dir` holds no shards of a different dataset or settings, then writes (or
/// keeps) its manifest.
pub fn prepare_dir(dir: &Path, manifest: &Manifest) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("manifest.json");
    if path.exists() {
        let old = super::format::read_manifest(dir)?;
        if old.settings_hash != manifest.settings_hash {
            bail!(
                "{} holds shards made with other settings (size {}, channels {}, {:?}; now size {}, channels {}, {:?}): use another shards.dir or delete it",
                dir.display(),
                old.image_size,
                old.channels,
                old.conversion,
                manifest.image_size,
                manifest.channels,
                manifest.conversion
            );
        }
        if old == *manifest {
            return Ok(());
        }
        // Same settings, different dataset or layout: complete shards whose keys still match
        // are reused, the others rebuilt; the manifest describes the new key list.
    }
    super::format::write_atomic(&path, &serde_json::to_vec_pretty(manifest)?)
}
