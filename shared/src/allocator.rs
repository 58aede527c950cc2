//! glibc's allocator and the writer's parts: why every binary fixes the mmap threshold.
//!
//! The seal's writer allocates each multipart part whole (`COMPACTOR_PART_BYTES`, 8 MiB by
//! default) and frees it once uploaded. glibc serves the first from an `mmap` of its own and,
//! when it is freed, raises its dynamic mmap threshold past it: every later part then comes
//! from an arena's heap, whose freed memory glibc keeps, so the more parts a run writes the more
//! of them stay resident. Bench `tiny` (issue 16): the seal of 1,000,000 tiny objects (two
//! outputs of 16 parts) peaked at 70 MiB against 48-52 MiB for 100,000 (one of 4 parts); with
//! the threshold fixed at 1 MiB, 53.6 and 43-45 MiB. Buffers under 1 MiB, the many small ones,
//! stay in the heaps as before.

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
