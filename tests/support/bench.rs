//! What every benchmark's `main` starts with (benches/*.rs include this support tree).

/// True when the bench binary is only asked to list or test itself (`cargo test --benches`,
/// `cargo bench -- --list`): it has nothing to list and must not boot hosts.
pub fn only_listing() -> bool {
    std::env::args().any(|a| a == "--list" || a == "--test")
}

/// `PROMD_BENCH_RUNS` (runs per fault), or `default` when unset or not a number.
pub fn runs(default: usize) -> usize {
    std::env::var("PROMD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
