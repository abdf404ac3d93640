//! The `herald` binary: parses the command line and hands over to the library.

/// mimalloc instead of the system's malloc: the send path allocates per request (bodies,
/// headers, futures) from several threads, and glibc's malloc spent ≈ 20 % of a `herald send`
/// there (README, *Benchmarks*).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    herald::cli::main()
}
