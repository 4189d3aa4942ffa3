//! `cusparselt::library()` with `SPARSEDM_CUSPARSELT_LIB` naming a file that does not exist:
//! a clean error naming the path and the variable, cached, never a panic.
//!
//! A `harness = false` test (see Cargo.toml): `library()` caches its result for the whole process
//! and the variable must be set before anything reads it, so this runs alone on one thread.

use sparsedm_cuda_sys::Error;
use sparsedm_cuda_sys::cusparselt::{LIB_ENV, library};

fn main() {
    let path = "/nonexistent/sparsedm-test/libcusparseLt.so.0";
    // SAFETY: `main` of a harness-less test binary: no other thread exists yet to read the
    // environment concurrently.
    unsafe { std::env::set_var(LIB_ENV, path) };

    let first = std::panic::catch_unwind(library).expect("library() must not panic");
    let e = first.err().expect("a nonexistent SPARSEDM_CUSPARSELT_LIB must not load");
    let msg = e.to_string();
    assert!(matches!(e, Error::MissingLibrary { ref library, .. } if library == path), "{e:?}");
    assert!(msg.contains(path), "error must name the path: {msg}");
    assert!(msg.contains(LIB_ENV), "error must name {LIB_ENV}: {msg}");

    // Cached: the same error again, without reopening.
    let second = library().err().expect("cached failure");
    assert_eq!(second, e);
    println!("library_env: ok ({msg})");
}
