//! `medgrpo shard`: the sharder as a pipeline of stages (list → decode ×N → writer). The
//! writer receives records in sequence order, so shard bytes never depend on the number of
//! workers; failed images are carried as data (a zero slot plus a failure entry), never
//! dropped, so slots never shift.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::format::{Failure, ShardSettings, bin_path, read_sidecar, tmp_path, write_atomic};
use super::plan::{Partition, Plan, collect_images, prepare_dir};
use super::verify::check_shard;
use super::writer::ShardWriter;
use crate::config::{Config, StageSettings};
use crate::data::convert::Image8;
use crate::data::decode::{Scratch, load_u8_with};
use crate::data::record::write_rejects;
use crate::stages::{Interrupted, Pipeline, PipelineOptions, Stage, StageOptions, install_ctrlc};

/// How to run the sharder (the command-line flags).
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Decode workers; `None` takes `stages.decode.workers` or the number of cores.
    pub workers: Option<usize>,
    /// This machine's share of the shards.
    pub partition: Partition,
    /// Print counts and disk bytes, build nothing.
    pub dry_run: bool,
    /// Fail (non-zero exit) if any image failed.
    pub strict: bool,
    /// Stop after this many images (a trial run; the last shard stays incomplete).
    pub limit: Option<usize>,
    /// Show the progress bar.
    pub progress: bool,
    /// Skip complete-looking shards without hashing them (a rerun then reads nothing it
    /// keeps, but cannot see a damaged shard); by default their checksums are checked.
    pub trust_complete: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            workers: None,
            partition: Partition::ALL,
            dry_run: false,
            strict: false,
            limit: None,
            progress: false,
            trust_complete: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct BuildSummary {
    /// Valid questions over all splits.
    pub questions: usize,
    /// Records rejected by validation.
    pub rejected_records: usize,
    /// Unique images.
    pub images: usize,
    /// Shard files in the whole layout.
    pub shards_total: usize,
    /// Shards of this partition.
    pub shards_in_partition: usize,
    /// Shards of this partition already complete (skipped).
    pub shards_skipped: usize,
    /// Shards that looked complete but whose checksum no longer matched (rebuilt).
    pub shards_damaged: usize,
    /// Shards written by this run.
    pub shards_written: usize,
    /// Images decoded by this run.
    pub images_processed: usize,
    /// Of which stored.
    pub ok: usize,
    /// Of which failed (zero slot + failure entry).
    pub failed: usize,
    /// Colour images stored as grey.
    pub colour_to_grey: usize,
    /// Failure causes of this run with counts, most frequent first.
    pub causes: Vec<(String, usize)>,
    /// Bytes of records of this partition's shards (dry run: to be written).
    pub bytes: u64,
    /// Input bytes read by this run.
    pub bytes_in: u64,
    /// Wall time.
    pub seconds: f64,
}

impl BuildSummary {
    /// Human-readable summary.
    pub fn render(&self) -> String {
        let mut s = format!(
            "questions {} ({} rejected), unique images {}, shards {} ({} in this partition: {} already complete, {} damaged, {} written)\n\
             images processed {}: {} ok, {} failed, {} colour stored as grey; {:.1} s ({:.1} images/s, {:.1} MB/s in)\n",
            self.questions,
            self.rejected_records,
            self.images,
            self.shards_total,
            self.shards_in_partition,
            self.shards_skipped,
            self.shards_damaged,
            self.shards_written,
            self.images_processed,
            self.ok,
            self.failed,
            self.colour_to_grey,
            self.seconds,
            self.images_processed as f64 / self.seconds.max(1e-9),
            self.bytes_in as f64 / 1e6 / self.seconds.max(1e-9),
        );
        for (cause, n) in &self.causes {
            s.push_str(&format!("  {n} × {cause}\n"));
        }
        s
    }
}

struct Job {
    shard: usize,
    slot: usize,
    key: String,
    path: PathBuf,
}

struct Done {
    job: Job,
    bytes_in: u64,
    result: std::result::Result<(Vec<u8>, bool), (String, String)>,
}

/// Turns a resized image into the stored channel layout; returns whether colour was dropped.
pub fn to_record(img: Image8, channels: u8) -> (Vec<u8>, bool) {
    match (img.channels, channels) {
        (a, b) if a == b => (img.data, false),
        (3, 1) => (
            // PIL's convert("L"): L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16
            img.data
                .chunks_exact(3)
                .map(|p| {
                    ((19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 0x8000)
                        >> 16) as u8
                })
                .collect(),
            true,
        ),
        _ => (img.data.iter().flat_map(|&g| [g, g, g]).collect(), false),
    }
}

/// One decode worker: its settings and the buffers it reuses from image to image.
struct DecodeWorker {
    settings: ShardSettings,
    scratch: Scratch,
}

impl Stage for DecodeWorker {
    type In = Job;
    type Out = Done;

    /// Never an error: a failed image travels on as data so its slot stays in place.
    fn process(&mut self, _seq: u64, job: Job) -> Result<Option<Done>> {
        let s = self.settings;
        let bytes_in = std::fs::metadata(&job.path).map(|m| m.len()).unwrap_or(0);
        let result = load_u8_with(&job.path, s.conversion, s.image_size, &mut self.scratch)
            .map(|img| to_record(img, s.channels))
            .map_err(|e| (format!("{e:#}"), e.root_cause().to_string()));
        Ok(Some(Done {
            job,
            bytes_in,
            result,
        }))
    }
}

/// Runs the sharder for `config` into `shards.dir`. A Ctrl-C stops it after the images in
/// flight: complete shards are kept, the error is [`Interrupted`] (exit code 130).
pub fn build(config: &Config, opts: &BuildOptions) -> Result<BuildSummary> {
    let started = Instant::now();
    let dir = PathBuf::from(&config.shards.dir);
    let (plan, mut summary, todo) = plan_run(config, opts, &dir)?;
    if opts.dry_run {
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    let manifest = plan.manifest();
    prepare_dir(&dir, &manifest)?;
    if !plan.images.rejected.is_empty() {
        write_rejects(&dir.join("rejects.jsonl"), &plan.images.rejected)?;
    }
    check_any_valid(&plan, &dir, false)?;
    for &s in &todo {
        // Leftovers of a killed run of this partition's shards (never another partition's).
        let _ = std::fs::remove_file(tmp_path(&bin_path(&dir, s)));
    }
    let default_workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut decode = config.stages.get(
        "decode",
        StageSettings::new(default_workers, 2 * default_workers),
    );
    if let Some(w) = opts.workers {
        decode.workers = w;
    }
    let writer_capacity = config
        .stages
        .get("writer", StageSettings::new(1, 4))
        .capacity;
    let total: usize = todo.iter().map(|&s| plan.range(s).len()).sum();
    let total = opts.limit.map_or(total, |l| l.min(total));
    let bar = progress_bar(opts.progress, total);

    let mut p = Pipeline::new(PipelineOptions::quiet());
    install_ctrlc(&p.stop_handle());
    let src = p.source("list", writer_capacity.max(16), jobs(&plan, todo, total));
    let settings = plan.settings;
    let decoded = p.stage("decode", StageOptions::from(decode), src, |_worker| {
        DecodeWorker {
            settings,
            scratch: Scratch::default(),
        }
    });
    let mut sink = Sink {
        plan: &plan,
        dir: &dir,
        settings_hash: &manifest.settings_hash,
        writer: None,
        causes: BTreeMap::new(),
        summary: &mut summary,
    };
    let run = p.run_sink("writer", decoded, |_seq, d: Done| {
        sink.accept(d)?;
        bar.inc(1);
        Ok(())
    });
    bar.finish_and_clear();
    let causes = std::mem::take(&mut sink.causes);
    drop(sink); // an incomplete shard keeps its temporary name
    let report = run.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    write_failures(&dir, plan.num_shards())?;
    let mut causes: Vec<(String, usize)> = causes.into_iter().collect();
    causes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    summary.causes = causes;
    summary.seconds = started.elapsed().as_secs_f64();
    if report.stopped_early {
        return Err(Interrupted::new(format!(
            "sharding stopped after {} image(s); {} shard(s) finished are kept, a rerun builds the rest",
            summary.images_processed, summary.shards_written
        ))
        .into());
    }
    check_outcome(&summary, &dir, opts.strict)?;
    Ok(summary)
}

/// Reads the dataset, lays out the shards and finds which of this partition's still need
/// building (see [`shards_to_build`]).
fn plan_run(
    config: &Config,
    opts: &BuildOptions,
    dir: &Path,
) -> Result<(Arc<Plan>, BuildSummary, Vec<usize>)> {
    let settings = ShardSettings::from_config(&config.shards)?;
    let images = collect_images(&config.data)?;
    let plan = Arc::new(Plan::new(
        settings,
        config.shards.records_per_shard,
        images,
    )?);
    let mut summary = BuildSummary {
        questions: plan.images.questions,
        rejected_records: plan.images.rejected.len(),
        images: plan.images.keys.len(),
        shards_total: plan.num_shards(),
        ..Default::default()
    };
    if opts.dry_run {
        check_any_valid(&plan, dir, true)?;
    }
    let mine: Vec<usize> = (0..plan.num_shards())
        .filter(|&s| opts.partition.owns(s))
        .collect();
    summary.shards_in_partition = mine.len();
    let workers = opts
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let check = if opts.dry_run || opts.trust_complete {
        Recheck::SizeOnly
    } else {
        Recheck::Checksum { workers }
    };
    let (todo, damaged) = shards_to_build(&plan, dir, &mine, check)?;
    summary.shards_skipped = mine.len() - todo.len();
    summary.shards_damaged = damaged;
    summary.bytes = todo
        .iter()
        .map(|&s| (plan.range(s).len() * settings.record_bytes()) as u64)
        .sum();
    Ok((plan, summary, todo))
}

/// How a rerun decides that a shard it would skip is still good.
#[derive(Debug, Clone, Copy)]
enum Recheck {
    /// Sidecar, settings, keys and `.bin` size (a dry run, `--trust-complete`).
    SizeOnly,
    /// Also the `.bin`'s SHA-256 against the sidecar: one read of every complete shard, on
    /// `workers` threads, so a rerun costs about as much as `--verify`.
    Checksum {
        /// Threads hashing shards at once.
        workers: usize,
    },
}

/// This partition's shards to build, in order, and how many of them looked complete but
/// failed their checksum (each is named on stderr and rebuilt).
fn shards_to_build(
    plan: &Plan,
    dir: &Path,
    mine: &[usize],
    check: Recheck,
) -> Result<(Vec<usize>, usize)> {
    let mut complete = Vec::new();
    let mut todo = Vec::new();
    for &s in mine {
        if dir.exists() && plan.is_complete(dir, s)? {
            complete.push(s);
        } else {
            todo.push(s);
        }
    }
    let Recheck::Checksum { workers } = check else {
        return Ok((todo, 0));
    };
    let started = Instant::now();
    let damaged = damaged_shards(dir, &complete, workers.max(1))?;
    if !complete.is_empty() {
        let bytes: usize = complete.iter().map(|&s| plan.range(s).len()).sum::<usize>()
            * plan.settings.record_bytes();
        eprintln!(
            "shards: checksums of {} complete shard(s) checked, {:.1} MB in {:.1} s (--trust-complete skips this)",
            complete.len(),
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    for (s, why) in &damaged {
        eprintln!("shard {s}: {why}; rebuilding it");
    }
    todo.extend(damaged.iter().map(|d| d.0));
    todo.sort_unstable();
    Ok((todo, damaged.len()))
}

/// The shards among `shards` whose `.bin` no longer matches its sidecar, with the reason,
/// hashed on up to `workers` threads.
fn damaged_shards(dir: &Path, shards: &[usize], workers: usize) -> Result<Vec<(usize, String)>> {
    let chunk = shards.len().div_ceil(workers).max(1);
    let found: Vec<Result<Vec<(usize, String)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut bad = Vec::new();
                    for &s in part {
                        if let Some(why) = check_shard(dir, s)? {
                            bad.push((s, why));
                        }
                    }
                    Ok(bad)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("checksum thread"))
            .collect()
    });
    let mut all = Vec::new();
    for part in found {
        all.extend(part?);
    }
    all.sort_unstable();
    Ok(all)
}

/// Fails when no record of the dataset is valid: there is nothing to shard, and a run of
/// zero images must not look like success. The error shows the first reason.
fn check_any_valid(plan: &Plan, dir: &Path, dry_run: bool) -> Result<()> {
    if plan.images.questions > 0 {
        return Ok(());
    }
    let rejected = &plan.images.rejected;
    let Some(first) = rejected.first() else {
        bail!("the dataset holds no question: nothing to shard");
    };
    let first = format!("e.g. {first}");
    let list = dir.join("rejects.jsonl");
    bail!(
        "no valid question: all {} record(s) of the dataset were rejected, {first}; {} {}",
        rejected.len(),
        if dry_run {
            "a run without --dry-run lists them all in"
        } else {
            "all reasons in"
        },
        list.display()
    )
}

/// The end-of-run verdicts: nothing written at all, or a failure under `--strict`.
fn check_outcome(summary: &BuildSummary, dir: &Path, strict: bool) -> Result<()> {
    if summary.images_processed > 0 && summary.ok == 0 {
        bail!(
            "no image could be written ({} failed; see {})",
            summary.failed,
            dir.join("failures.jsonl").display()
        );
    }
    if strict && summary.failed > 0 {
        bail!(
            "{} image(s) failed and --strict is set; see {}",
            summary.failed,
            dir.join("failures.jsonl").display()
        );
    }
    Ok(())
}

/// One job per slot of the shards to build, in order, cut at `total` (`--limit`).
fn jobs(
    plan: &Arc<Plan>,
    todo: Vec<usize>,
    total: usize,
) -> impl Iterator<Item = Result<Job>> + Send + 'static {
    let plan = plan.clone();
    todo.into_iter()
        .flat_map(move |s| {
            let p = plan.clone();
            p.range(s)
                .enumerate()
                .map(|(slot, i)| {
                    Ok(Job {
                        shard: s,
                        slot,
                        key: p.images.keys[i].clone(),
                        path: p.images.paths[i].clone(),
                    })
                })
                .collect::<Vec<_>>()
        })
        .take(total)
}

fn progress_bar(show: bool, total: usize) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images {per_sec} ETA {eta}",
        )
        .expect("valid template"),
    );
    bar
}

/// The writer end of the sharder: decoded records, in sequence order, into shard files.
struct Sink<'a> {
    plan: &'a Plan,
    dir: &'a Path,
    settings_hash: &'a str,
    writer: Option<ShardWriter>,
    causes: BTreeMap<String, usize>,
    summary: &'a mut BuildSummary,
}

impl Sink<'_> {
    fn accept(&mut self, d: Done) -> Result<()> {
        let Done {
            job,
            bytes_in,
            result,
        } = d;
        if self.writer.as_ref().map(|w| w.shard()) != Some(job.shard) {
            // A new shard starts; an unfinished previous one cannot happen (slots are
            // contiguous and in order), so its writer is simply replaced.
            let r = self.plan.range(job.shard);
            self.writer = Some(ShardWriter::create(
                self.dir,
                job.shard,
                self.plan.images.keys[r].to_vec(),
                self.plan.settings.record_bytes(),
                self.settings_hash,
            )?);
        }
        let w = self.writer.as_mut().expect("writer");
        let summary = &mut *self.summary;
        summary.images_processed += 1;
        summary.bytes_in += bytes_in;
        match result {
            Ok((bytes, grey)) => {
                summary.ok += 1;
                summary.colour_to_grey += grey as usize;
                w.push_ok(job.slot, &bytes, grey)?;
            }
            Err((reason, cause)) => {
                summary.failed += 1;
                *self.causes.entry(cause.clone()).or_default() += 1;
                w.push_failed(
                    job.slot,
                    Failure {
                        shard: job.shard,
                        slot: job.slot,
                        key: job.key,
                        path: job.path.display().to_string(),
                        reason,
                        cause,
                    },
                )?;
            }
        }
        if w.is_full() {
            self.writer.take().expect("writer").finish()?;
            summary.shards_written += 1;
        }
        Ok(())
    }
}

/// Rewrites `failures.jsonl` from every complete shard's sidecar, in shard order.
pub fn write_failures(dir: &Path, num_shards: usize) -> Result<()> {
    let mut text = String::new();
    for s in 0..num_shards {
        if let Some(sc) = read_sidecar(dir, s)? {
            for f in &sc.failures {
                text.push_str(&serde_json::to_string(f)?);
                text.push('\n');
            }
        }
    }
    write_atomic(&dir.join("failures.jsonl"), text.as_bytes())
        .context("cannot write the failure list")
}
