//! The crate's error type: every way loading or probing a CUDA library can fail, each with enough
//! context (library, call, environment variable) to fix it without a debugger.

use std::ops::RangeInclusive;

use crate::cusparselt::{self, cusparseStatus_t};

/// Why a CUDA library could not be used.
///
/// `Clone` so that [`cusparselt::library`] can cache a failed load and hand out the same error on
/// every call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A shared library could not be opened, or lacks a symbol the bindings need.
    #[error("cannot load {library}: {reason}. {hint}")]
    MissingLibrary {
        /// The file or soname that was tried (e.g. `libcusparseLt.so.0`, or a path).
        library: String,
        /// The loader's message (`dlerror`), or what a probe saw.
        reason: String,
        /// What to set to fix it: `LD_LIBRARY_PATH` or an environment variable of ours.
        hint: String,
    },
    /// The library opened but its version is not the one the bindings were generated for.
    #[error(
        "{library} version mismatch: the library reports {found}, these bindings need {}..={} \
         (major*1000 + minor*100 + patch){hint}",
        .expected.start(),
        .expected.end()
    )]
    VersionMismatch {
        /// Which library.
        library: &'static str,
        /// The version it reports, `major*1000 + minor*100 + patch` (cuSPARSELt 0.8.0: 800).
        found: i32,
        /// The accepted range.
        expected: RangeInclusive<i32>,
        /// Where the library came from, as `"; loaded from …"` (may be empty).
        hint: String,
    },
    /// A cuSPARSELt call returned a status other than `CUSPARSE_STATUS_SUCCESS`.
    #[error("{call} failed: {}", cusparselt::status_label(*.status))]
    Status {
        /// The function that failed (e.g. `cusparseLtInit`).
        call: &'static str,
        /// The raw status; compare with the `cusparseStatus_t::CUSPARSE_STATUS_*` constants.
        status: cusparseStatus_t,
    },
    /// A CUDA driver call failed (libcuda was found).
    #[error("CUDA driver: {call} failed: {message}")]
    Driver {
        /// The driver function, or the step of a probe.
        call: &'static str,
        /// cudarc's description of the `CUresult`, or of a caught panic.
        message: String,
    },
    /// The driver works but sees no CUDA device.
    #[error("no CUDA device: {detail}")]
    NoDevice {
        /// What the driver said.
        detail: String,
    },
}
