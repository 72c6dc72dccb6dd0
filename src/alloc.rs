//! Process-wide allocator tuning, for binaries to call first thing (the library never does).
//!
//! glibc serves a block of at least `M_MMAP_THRESHOLD` bytes with its own mapping, returned
//! to the system on free — but every such free *raises* the threshold (up to 32 MiB), after
//! which the pipeline's multi-MiB pack and piece buffers come from per-thread heaps that
//! fragment and are kept. Measured on the end-to-end bench (docs/benchmarks.md): resident
//! memory before the last step grew from 13 to 80 MiB over five backups in one process, and
//! a restore peaked at 174 MiB; a fixed threshold keeps both flat.

/// Blocks this large or larger always get their own mapping. Above a 256 KiB chunk and its
/// blob, so per-chunk buffers stay on the fast heap path.
pub const MMAP_THRESHOLD: usize = 4 * 1024 * 1024 + 4096;

/// Free memory at the top of a heap kept for reuse instead of returned at once. glibc's
/// default (128 KiB once the mmap threshold is fixed) returned and re-faulted the
/// pipeline's buffers constantly: 180k page faults and 1.15 s of system time per bench run,
/// against 79k and 0.79 s with 16 MiB, for ~10 MiB more resident memory.
pub const TRIM_THRESHOLD: usize = 16 * 1024 * 1024;

/// At most one heap per core. glibc's default (eight per core) gives most of the restore's
/// short-lived decode threads a heap of their own, each keeping up to [`TRIM_THRESHOLD`]
/// free: restore's peak RSS grew with the stream (119 → 134 MiB from 1 to 4 GiB, in a
/// process that only restores; `examples/scale.rs`), and with one heap per core it is flat
/// (73 / 79 MiB) at the same throughput.
fn arena_max() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

/// Fixes glibc's mmap and trim thresholds and its number of heaps (see the module doc and
/// `arena_max`). A no-op on other C libraries.
pub fn bound_retained_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets tuning parameters of the allocator; it takes plain integers
    // and is safe to call at any time, from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_ARENA_MAX, libc::c_int::try_from(arena_max()).unwrap_or(8));
    }
}

/// Gives the system back the free memory inside glibc's heaps (`malloc_trim`: the top of
/// each heap, and whole free pages in the middle). A no-op on other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system; safe from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
