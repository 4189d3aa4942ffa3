//! The CPU thread pool of sparsedm's binaries: the main thread joins it.
//!
//! CPU tensor ops run their parallel loops on rayon's global pool. Called
//! from a thread outside the pool, every such loop is handed to a pool
//! thread while the caller sleeps on a latch until it is done, so each op
//! pays a cross-thread hand-off and two futex wake-ups; a sampling forward
//! runs hundreds of ops, and in a profile of `sparsedm sample` on the demo
//! U-ViT with one thread the kernel's wake-up path took 8 % of the CPU
//! time. [`join_pool`] makes the calling thread worker 0 of the global
//! pool, so the loops it starts split and run in place (with one thread:
//! inline, no other thread involved) and the other workers steal halves.
//!
//! Call it first thing in `main`, before anything touches rayon. The pool
//! has the threads asked for (`sparsedm --threads N`) or its usual size
//! (`RAYON_NUM_THREADS`, else one thread per CPU), the main thread counted.
//! Threads of our own that start parallel loops (none do today: the data
//! loader only copies) would have them run by the other workers, or by the
//! main thread when it next waits in a parallel loop; they must not block
//! the main thread waiting for such a loop.

/// Builds rayon's global pool with the calling thread as worker 0, of
/// `threads` threads (the caller counted) or, with `None`, rayon's default
/// (`RAYON_NUM_THREADS`, else one per CPU). Returns `false` (and changes
/// nothing) if the global pool already exists.
pub fn join_pool(threads: Option<usize>) -> bool {
    let mut builder = rayon::ThreadPoolBuilder::new().use_current_thread();
    if let Some(n) = threads {
        builder = builder.num_threads(n.max(1));
    }
    builder.build_global().is_ok()
}

#[cfg(test)]
mod tests {
    /// In a fresh process (this test's own thread), joining makes the
    /// caller worker 0 and parallel loops still cover every element.
    #[test]
    fn the_caller_becomes_worker_zero() {
        let joined = std::thread::spawn(|| {
            let ok = super::join_pool(Some(3));
            use rayon::prelude::*;
            let sum: u64 = (0..10_000u64).into_par_iter().sum();
            (ok, rayon::current_thread_index(), sum, rayon::current_num_threads())
        })
        .join()
        .unwrap();
        // Another test may have built the global pool first; then nothing changed.
        if joined.0 {
            assert_eq!(joined.1, Some(0));
            assert_eq!(joined.3, 3, "the pool has the threads asked for");
        }
        assert_eq!(joined.2, 49_995_000);
    }
}
