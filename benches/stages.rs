//! `cargo bench --bench stages`: items/s through a 7-stage chain of trivial stages with
//! capacity 64, and the unloaded per-hop latency. Target: ≥ 200,000 items/s on 2 cores.

fn main() {
    medgrpo::bench::stages::print_standard();
}
