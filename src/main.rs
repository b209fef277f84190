//! The `medgrpo` binary: a thin shell over the library's command-line entry point.

fn main() {
    std::process::exit(medgrpo::cli::main());
}
