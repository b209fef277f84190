//! The loader: image key → the model's pixel input. With shards it memory-maps them and
//! reads a record in place; without shards it decodes the raw file through an LRU cache.
//! The model's input is what the Gemma 3 image processor produces: RGB, `size`×`size`,
//! `(x / 255 - 0.5) / 0.5` in [-1, 1], channel-first. Two ways to get it:
//!
//! - [`Loader::pixels`]: a plain `Vec<f32>` ([`PixelInput`], 9.6 MB at 896²), built on the
//!   CPU; writing it is memory-bandwidth bound.
//! - [`Loader::pixels_u8`]: the compact record ([`PixelBytes`], 0.8 MB for a grey 896²
//!   record) shared with the memory map (no copy) or the raw cache, already at the model's
//!   size; [`PixelBytes::to_tensor`] uploads the bytes and does u8 → [-1, 1] and grey → RGB
//!   with tensor ops (on the GPU with CUDA), [`PixelBytes::to_f32`] gives exactly what
//!   [`Loader::pixels`] gives.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use burn::prelude::{Backend, Int, Tensor, TensorData};
use burn::tensor::DType;
use lru::LruCache;
use memmap2::Mmap;

use super::convert::Image8;
use super::decode::load_u8;
use super::resize::resize;
use super::shard::build::to_record;
use super::shard::format::{Manifest, ShardSettings, bin_path, read_manifest, read_sidecar};
use crate::config::Config;

/// The model's pixel input for one image: `[3, height, width]` channel-first, in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct PixelInput {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `3 * height * width` values, plane by plane (R, G, B).
    pub data: Vec<f32>,
}

impl PixelInput {
    /// `[3, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        [3, self.height, self.width]
    }
}

/// u8 HWC (1 or 3 channels) at `size`×`size` → resized to `model_size` if needed (PIL
/// bilinear, as the image processor would) → RGB → `x / 255`, then `(x - 0.5) / 0.5`.
pub fn to_pixels(bytes: &[u8], size: u32, channels: u8, model_size: u32) -> Result<PixelInput> {
    let expected = size as usize * size as usize * channels as usize;
    if bytes.len() != expected {
        bail!("record has {} bytes, expected {expected}", bytes.len());
    }
    let resized;
    let (bytes, side) = if size != model_size {
        let img = Image8 {
            width: size,
            height: size,
            channels,
            data: bytes.to_vec(),
        };
        resized = resize(&img, model_size, model_size)?;
        (&resized.data[..], model_size as usize)
    } else {
        (bytes, size as usize)
    };
    let plane = side * side;
    let mut data = vec![0f32; 3 * plane];
    // One table for the 256 possible values: exactly the f32 arithmetic of the processor.
    let lut: [f32; 256] = std::array::from_fn(|v| (v as f32 / 255.0 - 0.5) / 0.5);
    match channels {
        1 => {
            for (i, &g) in bytes.iter().enumerate() {
                let x = lut[g as usize];
                data[i] = x;
                data[plane + i] = x;
                data[2 * plane + i] = x;
            }
        }
        3 => {
            for (i, p) in bytes.chunks_exact(3).enumerate() {
                data[i] = lut[p[0] as usize];
                data[plane + i] = lut[p[1] as usize];
                data[2 * plane + i] = lut[p[2] as usize];
            }
        }
        c => bail!("records with {c} channels are not supported"),
    }
    Ok(PixelInput {
        height: side,
        width: side,
        data,
    })
}

/// Where a [`PixelBytes`] record lives.
#[derive(Clone)]
enum Backing {
    /// A record inside a shard's memory map (kept alive by the `Arc`).
    Mapped(Arc<Mmap>, std::ops::Range<usize>),
    /// An image of the raw-file cache.
    Cached(Arc<Image8>),
    /// A record resized to the model's size.
    Owned(Arc<Vec<u8>>),
}

/// One image as the model will see it, but compact: u8, row-major, 1 (grey) or 3 (RGB,
/// interleaved) channels, already `size`×`size` at the model's input size. Cloning is cheap
/// (an `Arc`), and it is `Send + 'static`, so it can travel between pipeline stages; a shard
/// record is not copied at all until [`PixelBytes::to_tensor`] hands it to the backend.
#[derive(Clone)]
pub struct PixelBytes {
    backing: Backing,
    size: u32,
    channels: u8,
}

impl std::fmt::Debug for PixelBytes {
    /// Shape only: the bytes are an image.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PixelBytes")
            .field("size", &self.size)
            .field("channels", &self.channels)
            .finish()
    }
}

impl PixelBytes {
    /// The bytes, `size * size * channels`.
    pub fn data(&self) -> &[u8] {
        match &self.backing {
            Backing::Mapped(map, range) => &map[range.clone()],
            Backing::Cached(img) => &img.data,
            Backing::Owned(v) => v,
        }
    }

    /// Side in pixels (the model's input size).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// 1 (grey) or 3 (RGB).
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// The f32 `[3, size, size]` input, exactly what [`Loader::pixels`] gives.
    pub fn to_f32(&self) -> PixelInput {
        to_pixels(self.data(), self.size, self.channels, self.size)
            .expect("a PixelBytes always holds size*size*channels bytes")
    }

    /// The model's `[1, 3, size, size]` pixel tensor on `device`, for GPU backends: the u8
    /// bytes are uploaded as they are (0.8 MB for a grey 896² record instead of 9.6 MB of
    /// f32) and turned into `(x / 255 - 0.5) / 0.5`, channel-first RGB with tensor ops
    /// (grey → RGB is a broadcast), so the expansion runs on the GPU. Same values as
    /// [`PixelBytes::to_f32`] (tested on the CPU backend, bit for bit). On the CPU backend
    /// (`Flex`) it is about as fast as [`PixelBytes::to_tensor_host`] (`bench loader`).
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 4> {
        let (s, c) = (self.size as usize, self.channels as usize);
        // A grey HWC record is already a [1, 1, S, S] plane: no permute needed.
        let shape = if c == 1 { [1, 1, s, s] } else { [1, s, s, c] };
        let data = TensorData::new(self.data().to_vec(), shape);
        let x = Tensor::<B, 4, Int>::from_data(data, (device, DType::U8))
            .float()
            .div_scalar(255.0)
            .sub_scalar(0.5)
            .div_scalar(0.5);
        if c == 1 {
            x.expand([1, 3, s, s])
        } else {
            x.permute([0, 3, 1, 2])
        }
    }

    /// The same tensor as [`PixelBytes::to_tensor`], built as f32 on the host
    /// ([`PixelBytes::to_f32`], under 1 ms per 896² record) and uploaded: a materialised
    /// tensor, for CPU backends where there is no upload to save.
    pub fn to_tensor_host<B: Backend>(&self, device: &B::Device) -> Tensor<B, 4> {
        let p = self.to_f32();
        Tensor::from_data(TensorData::new(p.data, [1, 3, p.height, p.width]), device)
    }
}

/// Memory-mapped shards with a key → (shard, slot) index.
pub struct ShardStore {
    manifest: Manifest,
    maps: Vec<Option<Arc<Mmap>>>,
    index: HashMap<String, (u32, u32)>,
    failed: HashMap<String, String>,
}

impl ShardStore {
    /// Opens `dir`, refusing shards made with other settings than `expected` (the manifest's
    /// and every sidecar's hash must match). Shards not built yet are left out of the index.
    pub fn open(dir: &Path, expected: &ShardSettings) -> Result<Self> {
        let manifest = read_manifest(dir)?;
        if manifest.settings_hash != expected.hash() || manifest.settings() != *expected {
            bail!(
                "{} was built with other settings (size {}, channels {}, {:?}, hash {}) than the config asks for (size {}, channels {}, {:?}, hash {}): rebuild with `medgrpo shard` or point shards.dir elsewhere",
                dir.display(),
                manifest.image_size,
                manifest.channels,
                manifest.conversion,
                manifest.settings_hash,
                expected.image_size,
                expected.channels,
                expected.conversion,
                expected.hash()
            );
        }
        let mut maps = Vec::with_capacity(manifest.num_shards);
        let mut index = HashMap::with_capacity(manifest.num_images);
        let mut failed = HashMap::new();
        for s in 0..manifest.num_shards {
            let Some(sc) = read_sidecar(dir, s)? else {
                maps.push(None);
                continue;
            };
            if sc.settings_hash != manifest.settings_hash {
                bail!(
                    "shard {s} of {} has settings hash {} but the manifest says {}",
                    dir.display(),
                    sc.settings_hash,
                    manifest.settings_hash
                );
            }
            let path = bin_path(dir, s);
            let file = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            // SAFETY: shards are written once and renamed into place, never modified; the
            // mapping is read-only.
            let map = unsafe { Mmap::map(&file) }
                .with_context(|| format!("cannot map {}", path.display()))?;
            if map.len() as u64 != sc.bytes
                || sc.bytes != (sc.keys.len() * manifest.record_bytes) as u64
            {
                bail!(
                    "{} has {} bytes, its sidecar says {} for {} records",
                    path.display(),
                    map.len(),
                    sc.bytes,
                    sc.keys.len()
                );
            }
            for f in sc.failures {
                failed.insert(f.key, f.reason);
            }
            for (slot, k) in sc.keys.into_iter().enumerate() {
                index.insert(k, (s as u32, slot as u32));
            }
            maps.push(Some(Arc::new(map)));
        }
        Ok(Self {
            manifest,
            maps,
            index,
            failed,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Images reachable through the index.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no image is reachable.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every indexed key (arbitrary order).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The stored bytes of `key`, borrowed from the mapping (zero-copy). Errors for unknown
    /// keys and for images that failed when the shards were built (with the reason).
    pub fn record(&self, key: &str) -> Result<&[u8]> {
        let (map, range) = self.locate(key)?;
        Ok(&map[range])
    }

    /// The mapping holding `key`'s record and the record's byte range in it.
    fn locate(&self, key: &str) -> Result<(&Arc<Mmap>, std::ops::Range<usize>)> {
        if let Some(reason) = self.failed.get(key) {
            bail!("image {key} failed when the shards were built: {reason}");
        }
        let &(s, slot) = self.index.get(key).ok_or_else(|| {
            anyhow!("image {key} is not in the shards (not built, or another dataset)")
        })?;
        let map = self.maps[s as usize]
            .as_ref()
            .expect("indexed shard is mapped");
        let n = self.manifest.record_bytes;
        Ok((map, slot as usize * n..(slot as usize + 1) * n))
    }
}

/// Hit/miss counts of the raw-file cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Served from memory.
    pub hits: u64,
    /// Decoded from disk.
    pub misses: u64,
}

/// Decoded raw images (already converted and resized like a shard record), least recently
/// used evicted first.
pub struct RawCache {
    settings: ShardSettings,
    cache: Mutex<LruCache<PathBuf, Arc<Image8>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl RawCache {
    /// A cache of `capacity` images (at least 1).
    pub fn new(settings: ShardSettings, capacity: usize) -> Self {
        Self {
            settings,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("≥1"),
            )),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The image at `path`, decoded on a miss (outside the lock, so workers decode in
    /// parallel).
    pub fn get(&self, path: &Path) -> Result<Arc<Image8>> {
        if let Some(img) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(img.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let img = load_u8(path, self.settings.conversion, self.settings.image_size)?;
        // The same channel layout as a shard record, so both sources give the same pixels.
        let (data, _) = to_record(img, self.settings.channels);
        let img = Arc::new(Image8 {
            width: self.settings.image_size,
            height: self.settings.image_size,
            channels: self.settings.channels,
            data,
        });
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(path.to_path_buf(), img.clone());
        Ok(img)
    }

    /// Counts so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// Where images come from.
pub enum Source {
    /// Precomputed shards.
    Shards(ShardStore),
    /// Raw files decoded on demand.
    Raw(RawCache),
}

/// Image key (or path) → pixel input; shareable between loader workers (`Arc<Loader>`).
pub struct Loader {
    source: Source,
    model_size: u32,
}

impl Loader {
    /// Uses the shards in `shards.dir` when it has a manifest (refusing other settings),
    /// else decodes raw files through an LRU cache of `data.cache_capacity` images.
    /// `model_size` is the vision tower's input side (896 for MedGemma).
    pub fn open(config: &Config, model_size: u32) -> Result<Self> {
        let settings = ShardSettings::from_config(&config.shards)?;
        let dir = Path::new(&config.shards.dir);
        let source = if dir.join("manifest.json").exists() {
            Source::Shards(ShardStore::open(dir, &settings)?)
        } else {
            Source::Raw(RawCache::new(settings, config.data.cache_capacity))
        };
        Ok(Self { source, model_size })
    }

    /// A loader over an explicit source.
    pub fn new(source: Source, model_size: u32) -> Self {
        Self { source, model_size }
    }

    /// The source in use.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Pixel input of one image: by `key` from shards, or by `path` from the raw files.
    pub fn pixels(&self, key: &str, path: &Path) -> Result<PixelInput> {
        match &self.source {
            Source::Shards(s) => {
                let m = s.manifest();
                to_pixels(s.record(key)?, m.image_size, m.channels, self.model_size)
            }
            Source::Raw(c) => {
                let img = c.get(path)?;
                to_pixels(&img.data, img.width, img.channels, self.model_size)
                    .with_context(|| format!("image {}", path.display()))
            }
        }
    }

    /// The image of a question (its first, as the prompt has one image slot) in the compact
    /// form, with errors naming the question.
    pub fn record_pixels(&self, record: &crate::data::record::Record) -> Result<PixelBytes> {
        let (Some(key), Some(path)) = (record.image_keys.first(), record.image_paths.first())
        else {
            bail!(
                "question {}: no image, but the model expects one",
                record.id
            )
        };
        self.pixels_u8(key, path)
            .with_context(|| format!("question {}", record.id))
    }

    /// The compact form of [`Loader::pixels`]: the u8 record at the model's size, shared with
    /// the shard mapping (no copy) or the raw cache; resized (PIL bilinear, as `pixels`
    /// does) only when the shards were built at another size.
    pub fn pixels_u8(&self, key: &str, path: &Path) -> Result<PixelBytes> {
        let (backing, size, channels) = match &self.source {
            Source::Shards(s) => {
                let m = s.manifest();
                let (map, range) = s.locate(key)?;
                (
                    Backing::Mapped(map.clone(), range),
                    m.image_size,
                    m.channels,
                )
            }
            Source::Raw(c) => {
                let img = c.get(path)?;
                let (size, channels) = (img.width, img.channels);
                (Backing::Cached(img), size, channels)
            }
        };
        let px = PixelBytes {
            backing,
            size,
            channels,
        };
        if size == self.model_size {
            return Ok(px);
        }
        let img = Image8 {
            width: size,
            height: size,
            channels,
            data: px.data().to_vec(),
        };
        let resized = resize(&img, self.model_size, self.model_size)
            .with_context(|| format!("image {key}: resize to the model's size"))?;
        Ok(PixelBytes {
            backing: Backing::Owned(Arc::new(resized.data)),
            size: self.model_size,
            channels,
        })
    }

    /// Raw-cache hits and misses (zeros with shards).
    pub fn cache_stats(&self) -> CacheStats {
        match &self.source {
            Source::Raw(c) => c.stats(),
            Source::Shards(_) => CacheStats::default(),
        }
    }
}

#[cfg(test)]
mod tests;
