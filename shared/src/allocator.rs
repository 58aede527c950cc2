//! glibc's allocator: why every binary fixes the mmap threshold, and why the scan trims.
//!
//! **The mmap threshold.**
//! The seal's writer allocates each multipart part whole (`COMPACTOR_PART_BYTES`, 8 MiB by
//! default) and frees it once uploaded. glibc serves the first from an `mmap` of its own and,
//! when it is freed, raises its dynamic mmap threshold past it: every later part then comes
//! from an arena's heap, whose freed memory glibc keeps, so the more parts a run writes the more
//! of them stay resident. Bench `tiny` (issue 16): the seal of 1,000,000 tiny objects (two
//! outputs of 16 parts) peaked at 70 MiB against 48-52 MiB for 100,000 (one of 4 parts); with
//! the threshold fixed at 1 MiB, 53.6 and 43-45 MiB. Buffers under 1 MiB, the many small ones,
//! stay in the heaps as before.
//!
//! **The scan's trims.** glibc gives each new thread an arena of its own, up to 8 per core, and
//! keeps what is freed in each. The longer a run, the more of the blocking pool's threads have
//! allocated, and the more arenas hold freed pages: the backfill scan of 1,000,000 local files
//! peaked 1.11-1.14x above that of 100,000 run alone, 1.20-1.27x in the benchmark's rows. A cap
//! on the arenas (`MALLOC_ARENA_MAX=2`) brought it to 1.06-1.07x, but made the seal of 100,000
//! objects 11-19% slower, its threads then sharing two arenas' locks; the scan instead gives
//! the free pages back every 64 pages of keys ([`give_back_free_memory`]), which gave
//! 1.05-1.07x at no cost in time (release, 2026-12-03, about 18:45 UTC).

/// The size from which glibc serves an allocation by `mmap`, returned to the system when freed.
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

/// Fixes glibc's mmap threshold at 1 MiB, which also stops it from rising; call it first in
/// `main`. Left alone when `MALLOC_MMAP_THRESHOLD_` is set (glibc has read it already), and a
/// no-op where the C library is not glibc.
pub fn return_freed_parts_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
            return;
        }
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        /// `M_MMAP_THRESHOLD` in glibc's malloc.h.
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: `mallopt` only changes the allocator's tuning, under glibc's own arena lock;
        // any allocation before or after it stays valid.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        }
    }
}

/// Gives the free memory glibc holds back to the system: whole free pages inside each arena's
/// heaps, not only at their tops. It walks every arena's free chunks under its lock, so it is
/// for a long loop's checkpoints, not for every turn. A no-op where the C library is not glibc.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: `malloc_trim` only returns free pages to the system, under each arena's lock;
        // no allocation is moved or freed.
        unsafe {
            malloc_trim(0);
        }
    }
}
