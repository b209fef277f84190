//! `medgrpo bench …`: benchmarks that print figures, so speed and memory targets are measured
//! in a release build and never asserted by timed tests. One module per benchmark; this one
//! holds what they share: the knobs (environment variables, since `bench` takes only a name)
//! and the process figures (peak RSS, CPU time, the CPU model every figure is printed with).

pub mod decode;
pub mod grpo;
pub mod nf4;
pub mod reward;
pub mod shard;
pub mod stages;
pub mod synthetic;

use std::time::Instant;

use anyhow::{Context, Result};

/// A benchmark knob: the environment variable `key` as a count, `default` when unset.
pub fn env_usize(key: &str, default: usize) -> Result<usize> {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{key}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

/// The CPU's model name (`/proc/cpuinfo`), printed with every figure: machines differ from run
/// to run, and a figure means nothing without the machine that gave it.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The machine line every benchmark starts with: CPU model, SIMD level the kernels can use,
/// cores, and the worker threads (`RAYON_NUM_THREADS`, else all cores).
pub fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| cores.to_string());
    format!(
        "machine: {} ({}), {cores} cores, {threads} threads",
        cpu_model(),
        simd_level()
    )
}

/// The widest x86 vector extension this CPU offers (what run-time dispatch picks).
fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "AVX2";
        }
    }
    "no AVX2"
}

/// Median wall time of `reps` runs of `f`, after one warm-up run.
pub fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Peak resident memory of this process (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    proc_status_kb("VmHWM:") * 1024
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds this process has used, all threads (`/proc/self/stat` fields 14
/// and 15, in the kernel's fixed 100 ticks per second): the work done, whatever else runs on a
/// shared machine.
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The command name (field 2) may hold spaces; the fields after its ')' are plain.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so each run's peak is its own.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
