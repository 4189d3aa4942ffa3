//! The host allocator of sparsedm's binaries, benches and examples.
//!
//! CPU tensor ops allocate large short-lived buffers (activations, their
//! gradients, GEMM packing). With the system allocator, or with mimalloc's
//! defaults, the memory of a freed buffer goes back to the OS after a short
//! delay ("purging") and the next op of the same size faults in fresh pages
//! that the kernel must zero: in a profile of the demo U-ViT's training step
//! (batch 64) `clear_page_erms` took 10–17 % of the CPU time, all of it in
//! re-faults of memory that had just been freed. [`keep_freed_pages`] turns
//! purging off, so freed memory stays committed and is reused at once — the
//! caching allocator a deep-learning framework keeps, at the process level.
//! The process's resident memory then stays at its peak until it exits.
//!
//! A binary opts in with
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: sparsedm_tensor::host_alloc::HostAllocator = sparsedm_tensor::host_alloc::HostAllocator;
//! fn main() { sparsedm_tensor::host_alloc::keep_freed_pages(); /* ... */ }
//! ```
//! Setting the option is harmless when another global allocator is in use
//! (it only configures mimalloc's own heaps).

/// The global allocator type of sparsedm's binaries (mimalloc).
pub use mimalloc::MiMalloc as HostAllocator;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (the 16th entry of
/// `enum mi_option_e` in `include/mimalloc.h` of libmimalloc-sys 0.1.49,
/// pinned exactly in the workspace; the crate names the options around it —
/// `mi_option_eager_commit_delay` = 14, `mi_option_use_numa_nodes` = 16 — but
/// not this one).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never give freed memory back to the OS while the process runs (mimalloc
/// `purge_delay = -1`), so that buffers freed by one op are reused by the
/// next without page faults. Call it first thing in `main`.
pub fn keep_freed_pages() {
    // SAFETY: `mi_option_set` only stores an integer in mimalloc's option
    // table (an atomic write); any option index below `_mi_option_last` and
    // any value are valid inputs.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// The current purge delay in milliseconds (-1: never purge).
#[allow(clippy::useless_conversion)] // `long` is i32 on some targets
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one entry of mimalloc's option table.
    i64::from(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index is the purge delay: mimalloc 3's default for it is 1000 ms
    /// (its neighbours default to 0, 0, 1 and 0), and setting it sticks.
    #[test]
    fn purge_delay_index_is_the_purge_delay() {
        let before = purge_delay_ms();
        assert!(before == 1000 || before == -1, "option 15 is not mimalloc's purge_delay (value {before})");
        keep_freed_pages();
        assert_eq!(purge_delay_ms(), -1);
    }
}
