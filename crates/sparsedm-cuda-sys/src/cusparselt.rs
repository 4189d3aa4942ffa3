//! cuSPARSELt 0.8: the raw bindings (re-exported from the generated `cusparselt_bindings.rs`) and
//! their loader.
//!
//! The library is opened at run time (bindgen `--dynamic-loading`, struct [`CuSparseLt`]); every
//! symbol is resolved when it is opened (`--dynamic-link-require-all`), so a missing symbol is a
//! load error, never a panic at call time. After opening, the loader asks the library for its
//! version and refuses one whose major.minor differs from the header the bindings came from:
//! the opaque structs and enum values are only guaranteed within a minor release.
//!
//! Where the library comes from: the file named by `SPARSEDM_CUSPARSELT_LIB` when that variable
//! is set, else `libcusparseLt.so.0` through the loader path (`LD_LIBRARY_PATH`). The wheel
//! `nvidia-cusparselt-cu13==0.8.0` has it in `nvidia/cusparselt/lib`, which is not on the loader
//! path by default (shared/GPU.md §4).
//!
//! Version queries: `cusparseLtGetVersion` needs a handle made by `cusparseLtInit` (it returns
//! `CUSPARSE_STATUS_INVALID_VALUE` for a zeroed one), and `cusparseLtInit` needs a GPU. So the
//! loader uses `cusparseLtGetProperty(MAJOR_VERSION / MINOR_VERSION / PATCH_LEVEL)`, which works
//! without a GPU; [`check_handle_version`] runs `cusparseLtGetVersion` on an initialised handle.
//! Both are compared as `major*1000 + minor*100 + patch` (0.8.0 reports 800), the header's
//! `CUSPARSELT_VERSION` formula.

use std::ffi::{OsStr, c_int};
use std::ops::RangeInclusive;
use std::sync::OnceLock;

use crate::Error;
pub use crate::cusparselt_bindings::*;

/// Environment variable naming the cuSPARSELt shared library file to open instead of looking up
/// [`SONAME`] on the loader path.
pub const LIB_ENV: &str = "SPARSEDM_CUSPARSELT_LIB";

/// The name looked up on the loader path when [`LIB_ENV`] is unset.
pub const SONAME: &str = "libcusparseLt.so.0";

/// The versions (`major*1000 + minor*100 + patch`) these bindings accept: any patch release of the
/// header's major.minor (0.8.x: `800..=899`).
pub const SUPPORTED_VERSIONS: RangeInclusive<i32> = {
    let base = (CUSPARSELT_VER_MAJOR * 1000 + CUSPARSELT_VER_MINOR * 100) as i32;
    base..=base + 99
};

/// How to get the library, appended to load errors.
const GET_LIBRARY: &str = "pip install nvidia-cusparselt-cu13==0.8.0 (file: nvidia/cusparselt/lib/libcusparseLt.so.0)";

/// The process-wide cuSPARSELt library, opened and version-checked on first use.
///
/// The result, success or failure, is cached: later calls return the same library or a clone of
/// the same error (so [`LIB_ENV`] is read once). Never panics. Use [`load_from`] for an uncached
/// load of a given file.
pub fn library() -> Result<&'static CuSparseLt, Error> {
    static LIBRARY: OnceLock<Result<CuSparseLt, Error>> = OnceLock::new();
    LIBRARY.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Opens cuSPARSELt as [`library`] does, but uncached: the file named by [`LIB_ENV`] if set
/// (and non-empty), else [`SONAME`] through the loader path.
pub fn load() -> Result<CuSparseLt, Error> {
    match std::env::var_os(LIB_ENV) {
        Some(path) if !path.is_empty() => load_with_hint(
            &path,
            &format!("It was named by {LIB_ENV}: point that at libcusparseLt.so.0 or unset it to use the loader path; {GET_LIBRARY}"),
        ),
        _ => load_with_hint(
            OsStr::new(SONAME),
            &format!("Add the folder holding {SONAME} to LD_LIBRARY_PATH or set {LIB_ENV} to the file; {GET_LIBRARY}"),
        ),
    }
}

/// Opens the cuSPARSELt library at `path` (a file path, or a bare name looked up on the loader
/// path), resolves every symbol and checks its version against [`SUPPORTED_VERSIONS`]. Uncached:
/// each call opens the library again (the OS shares one copy).
pub fn load_from(path: impl AsRef<OsStr>) -> Result<CuSparseLt, Error> {
    let path = path.as_ref();
    load_with_hint(path, &format!("Check the file, or set {LIB_ENV} / LD_LIBRARY_PATH; {GET_LIBRARY}"))
}

fn load_with_hint(path: &OsStr, hint: &str) -> Result<CuSparseLt, Error> {
    let shown = path.to_string_lossy().into_owned();
    // SAFETY: opening a shared library runs its initialisers; libcusparseLt's only set up C++
    // statics (it opens without a GPU or libcuda, which it does not link). Every symbol is then
    // given the type bindgen read from cusparseLt.h; the version check right below rejects a
    // library whose major.minor (and so whose ABI) differs from that header's.
    let lib = unsafe { CuSparseLt::new(path) }.map_err(|e| Error::MissingLibrary {
        library: shown.clone(),
        reason: error_chain(&e),
        hint: hint.to_string(),
    })?;
    let found = library_version(&lib)?;
    check_version(found).map_err(|e| match e {
        Error::VersionMismatch { library, found, expected, .. } => {
            Error::VersionMismatch { library, found, expected, hint: format!("; loaded from {shown}") }
        }
        other => other,
    })?;
    Ok(lib)
}

/// `error: source: source…` (libloading's `Display` leaves the `dlerror` text to `source()`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The library's version as `major*1000 + minor*100 + patch`, from `cusparseLtGetProperty`
/// (needs no handle and no GPU).
pub fn library_version(lib: &CuSparseLt) -> Result<i32, Error> {
    let mut parts = [0 as c_int; 3];
    let properties = [libraryPropertyType::MAJOR_VERSION, libraryPropertyType::MINOR_VERSION, libraryPropertyType::PATCH_LEVEL];
    for (part, property) in parts.iter_mut().zip(properties) {
        // SAFETY: `part` is a valid, writable `c_int`; the call takes an enum by value and
        // writes one `int`.
        let status = unsafe { lib.cusparseLtGetProperty(property, part) };
        check(status, "cusparseLtGetProperty")?;
    }
    Ok(parts[0] * 1000 + parts[1] * 100 + parts[2])
}

/// Runs `cusparseLtGetVersion` on `handle` and checks the result against
/// [`SUPPORTED_VERSIONS`]; returns the version (`major*1000 + minor*100 + patch`).
///
/// The loader already checked the version through `cusparseLtGetProperty`; this is the check the
/// upper crate can make once it holds a handle (it needs a GPU).
///
/// # Safety
/// `handle` must be a handle initialised by `lib.cusparseLtInit` and not yet destroyed (the library
/// rejects a zeroed handle with `CUSPARSE_STATUS_INVALID_VALUE`, but reads whatever the bytes hold).
pub unsafe fn check_handle_version(lib: &CuSparseLt, handle: &cusparseLtHandle_t) -> Result<i32, Error> {
    let mut version: c_int = 0;
    // SAFETY: `handle` is initialised (caller's contract) and `version` is a writable `int`.
    let status = unsafe { lib.cusparseLtGetVersion(handle, &mut version) };
    check(status, "cusparseLtGetVersion")?;
    check_version(version)?;
    Ok(version)
}

/// `Ok` if `found` (`major*1000 + minor*100 + patch`) is in [`SUPPORTED_VERSIONS`], else
/// [`Error::VersionMismatch`].
pub fn check_version(found: i32) -> Result<(), Error> {
    if SUPPORTED_VERSIONS.contains(&found) {
        Ok(())
    } else {
        Err(Error::VersionMismatch { library: "cuSPARSELt", found, expected: SUPPORTED_VERSIONS, hint: String::new() })
    }
}

/// The name of a status code (`CUSPARSE_STATUS_NOT_SUPPORTED`), or `None` for a code the header
/// does not know (a newer library may return one).
pub fn status_name(status: cusparseStatus_t) -> Option<&'static str> {
    Some(match status {
        cusparseStatus_t::CUSPARSE_STATUS_SUCCESS => "CUSPARSE_STATUS_SUCCESS",
        cusparseStatus_t::CUSPARSE_STATUS_NOT_INITIALIZED => "CUSPARSE_STATUS_NOT_INITIALIZED",
        cusparseStatus_t::CUSPARSE_STATUS_ALLOC_FAILED => "CUSPARSE_STATUS_ALLOC_FAILED",
        cusparseStatus_t::CUSPARSE_STATUS_INVALID_VALUE => "CUSPARSE_STATUS_INVALID_VALUE",
        cusparseStatus_t::CUSPARSE_STATUS_ARCH_MISMATCH => "CUSPARSE_STATUS_ARCH_MISMATCH",
        cusparseStatus_t::CUSPARSE_STATUS_MAPPING_ERROR => "CUSPARSE_STATUS_MAPPING_ERROR",
        cusparseStatus_t::CUSPARSE_STATUS_EXECUTION_FAILED => "CUSPARSE_STATUS_EXECUTION_FAILED",
        cusparseStatus_t::CUSPARSE_STATUS_INTERNAL_ERROR => "CUSPARSE_STATUS_INTERNAL_ERROR",
        cusparseStatus_t::CUSPARSE_STATUS_MATRIX_TYPE_NOT_SUPPORTED => "CUSPARSE_STATUS_MATRIX_TYPE_NOT_SUPPORTED",
        cusparseStatus_t::CUSPARSE_STATUS_ZERO_PIVOT => "CUSPARSE_STATUS_ZERO_PIVOT",
        cusparseStatus_t::CUSPARSE_STATUS_NOT_SUPPORTED => "CUSPARSE_STATUS_NOT_SUPPORTED",
        cusparseStatus_t::CUSPARSE_STATUS_INSUFFICIENT_RESOURCES => "CUSPARSE_STATUS_INSUFFICIENT_RESOURCES",
        _ => return None,
    })
}

/// `"CUSPARSE_STATUS_NOT_SUPPORTED (10)"`, or `"unknown cusparseStatus_t 42"`.
pub(crate) fn status_label(status: cusparseStatus_t) -> String {
    match status_name(status) {
        Some(name) => format!("{name} ({})", status.0),
        None => format!("unknown cusparseStatus_t {}", status.0),
    }
}

/// `Ok(())` for `CUSPARSE_STATUS_SUCCESS`, else [`Error::Status`] naming `what` (the call) and the
/// status. Use as `check(unsafe { lib.cusparseLtInit(&mut h) }, "cusparseLtInit")?`.
pub fn check(status: cusparseStatus_t, what: &'static str) -> Result<(), Error> {
    if status == cusparseStatus_t::CUSPARSE_STATUS_SUCCESS { Ok(()) } else { Err(Error::Status { call: what, status }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::mem::{align_of, size_of};

    /// 64-bit FNV-1a, as `cargo xtask bindgen` records it.
    fn fnv1a64(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
    }

    /// The real library: [`LIB_ENV`] if set, else [`SONAME`] on the loader path; `None` (with the
    /// reason printed) when neither opens.
    fn real_library() -> Option<CuSparseLt> {
        match load() {
            Ok(lib) => Some(lib),
            Err(e) => {
                eprintln!("skipped: cuSPARSELt not available ({e})");
                None
            }
        }
    }

    #[test]
    fn header_hash_matches_bindings() {
        let Some(dir) = std::env::var_os("SPARSEDM_CUSPARSELT_INCLUDE") else {
            eprintln!("skipped: SPARSEDM_CUSPARSELT_INCLUDE is not set (folder of cusparseLt.h)");
            return;
        };
        let path = std::path::Path::new(&dir).join("cusparseLt.h");
        let Ok(header) = std::fs::read(&path) else {
            eprintln!("skipped: cannot read {}", path.display());
            return;
        };
        assert_eq!(
            fnv1a64(&header),
            CUSPARSELT_HEADER_FNV1A64,
            "{} is not the header the bindings came from: run `cargo xtask bindgen`",
            path.display()
        );
        // The recorded hash is also in the file's header comment.
        let bindings = include_str!("cusparselt_bindings.rs");
        assert!(bindings.contains(&format!("header FNV-1a 64: `{CUSPARSELT_HEADER_FNV1A64:#018x}`")));
        let text = String::from_utf8_lossy(&header);
        for (name, value) in [
            ("CUSPARSELT_VER_MAJOR", CUSPARSELT_VER_MAJOR),
            ("CUSPARSELT_VER_MINOR", CUSPARSELT_VER_MINOR),
            ("CUSPARSELT_VER_PATCH", CUSPARSELT_VER_PATCH),
        ] {
            assert!(text.contains(&format!("#define {name} {value}\n")), "{name} != {value}");
        }
    }

    #[test]
    fn bindings_are_cusparselt_0_8() {
        assert_eq!((CUSPARSELT_VER_MAJOR, CUSPARSELT_VER_MINOR), (0, 8));
        assert_eq!(CUSPARSELT_VERSION, 800 + CUSPARSELT_VER_PATCH);
        assert_eq!(SUPPORTED_VERSIONS, 800..=899);
        assert!(include_str!("cusparselt_bindings.rs").contains("version 0.8."));
    }

    #[test]
    fn opaque_structs_are_512_bytes_16_aligned() {
        fn check<T>(name: &str) {
            assert_eq!(size_of::<T>(), 512, "size of {name}");
            assert_eq!(align_of::<T>(), 16, "alignment of {name}");
        }
        check::<cusparseLtHandle_t>("cusparseLtHandle_t");
        check::<cusparseLtMatDescriptor_t>("cusparseLtMatDescriptor_t");
        check::<cusparseLtMatmulDescriptor_t>("cusparseLtMatmulDescriptor_t");
        check::<cusparseLtMatmulAlgSelection_t>("cusparseLtMatmulAlgSelection_t");
        check::<cusparseLtMatmulPlan_t>("cusparseLtMatmulPlan_t");
        // Status and the enums are C `int`-sized newtypes, not Rust enums.
        assert_eq!(size_of::<cusparseStatus_t>(), size_of::<c_int>());
        assert_eq!(size_of::<cusparseOrder_t>(), size_of::<c_int>());
    }

    #[test]
    fn check_names_the_call_and_the_status() {
        assert_eq!(check(cusparseStatus_t::CUSPARSE_STATUS_SUCCESS, "cusparseLtInit"), Ok(()));
        let e = check(cusparseStatus_t::CUSPARSE_STATUS_NOT_SUPPORTED, "cusparseLtMatmulPlanInit").unwrap_err();
        assert_eq!(e.to_string(), "cusparseLtMatmulPlanInit failed: CUSPARSE_STATUS_NOT_SUPPORTED (10)");
        assert!(matches!(e, Error::Status { call: "cusparseLtMatmulPlanInit", status } if status.0 == 10));
        let e = check(cusparseStatus_t(42), "cusparseLtMatmul").unwrap_err();
        assert_eq!(e.to_string(), "cusparseLtMatmul failed: unknown cusparseStatus_t 42");
        for code in 0..=11 {
            assert!(status_name(cusparseStatus_t(code)).is_some(), "{code}");
        }
        assert_eq!(status_name(cusparseStatus_t(12)), None);
    }

    #[test]
    fn version_check_accepts_only_0_8_x() {
        for ok in [800, 801, 899] {
            assert_eq!(check_version(ok), Ok(()));
        }
        for bad in [0, 700, 799, 900, 1000, 10_000, -1] {
            let e = check_version(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("reports {bad}, these bindings need 800..=899")), "{e}");
        }
    }

    #[test]
    fn load_from_missing_file_is_a_clean_error() {
        let path = "/nonexistent/sparsedm/libcusparseLt.so.0";
        let e = load_from(path).err().expect("a missing file must not load");
        assert!(matches!(e, Error::MissingLibrary { ref library, .. } if library == path));
        let msg = e.to_string();
        assert!(msg.contains(path) && msg.contains(LIB_ENV), "{msg}");
    }

    #[test]
    fn load_from_non_library_is_a_clean_error() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let e = load_from(path).err().expect("a text file must not load");
        assert!(e.to_string().contains("Cargo.toml"), "{e}");
    }

    /// Opens the real library if it is available (`SPARSEDM_CUSPARSELT_LIB` or the loader path).
    /// It opens without a GPU; `cusparseLtInit` then fails cleanly, or on a GPU machine succeeds
    /// and `cusparseLtGetVersion` is checked too.
    #[test]
    fn real_library_loads_and_reports_its_version() {
        let Some(lib) = real_library() else { return };
        let version = library_version(&lib).expect("cusparseLtGetProperty");
        assert!(SUPPORTED_VERSIONS.contains(&version), "{version}");
        assert_eq!(version / 100, CUSPARSELT_VERSION as i32 / 100);

        // Our stub cusparse.h agrees with the library's own names for every status.
        for code in 0..=11 {
            let status = cusparseStatus_t(code);
            // SAFETY: takes a status by value and returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(lib.cusparseLtGetErrorName(status)) };
            assert_eq!(Some(name.to_str().unwrap()), status_name(status), "status {code}");
        }

        // A zeroed handle is rejected, not dereferenced (documented in the module docs).
        let zeroed = cusparseLtHandle_t { data: [0; 512] };
        let mut v: c_int = -1;
        // SAFETY: both pointers are valid; the library validates the handle.
        let status = unsafe { lib.cusparseLtGetVersion(&zeroed, &mut v) };
        assert_eq!(status, cusparseStatus_t::CUSPARSE_STATUS_INVALID_VALUE);

        let mut handle = cusparseLtHandle_t { data: [0; 512] };
        // SAFETY: `handle` is a writable 512-byte, 16-aligned struct, as cusparseLtInit expects.
        match check(unsafe { lib.cusparseLtInit(&mut handle) }, "cusparseLtInit") {
            Ok(()) => {
                // SAFETY: `handle` was just initialised.
                let v = unsafe { check_handle_version(&lib, &handle) }.expect("cusparseLtGetVersion");
                assert_eq!(v, version);
                // SAFETY: initialised and destroyed once.
                check(unsafe { lib.cusparseLtDestroy(&handle) }, "cusparseLtDestroy").unwrap();
            }
            Err(e) => {
                eprintln!("cusparseLtInit failed (expected without a GPU): {e}");
                assert!(e.to_string().starts_with("cusparseLtInit failed: CUSPARSE_STATUS_"), "{e}");
            }
        }
    }
}
