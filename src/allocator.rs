//! The process's allocator, glibc's malloc, told how to behave: few arenas, and free pages given
//! back after a large parse. The one module of the node with `unsafe` (two calls into libc
//! that take no pointers); elsewhere the crate denies it.
//!
//! Calls nothing else in the crate.
#![allow(unsafe_code)]

/// Limit glibc to two arenas. glibc gives every thread that allocates an arena of its own (up
/// to 8 per core) and keeps what is freed there: SOAP answers of a few MiB, built on the
/// workers and released on whichever thread wrote them out, left the heap at 2.7x the working
/// set (957 MiB vs 358 MiB after 100 first scans of a 10,000-update catalog). Two arenas keep
/// it near the working set; the CPU cost was within the run-to-run noise. Call before any
/// other thread exists.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hand the pages the allocator holds free back to the system. glibc returns only the top of
/// each arena on free; the millions of small nodes of a large parse, freed below live ones,
/// otherwise stay resident (60 MiB after a refused 2-million-element rollup).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
