//! Presence checks of the CUDA libraries cudarc opens, run before any cudarc call.
//!
//! cudarc (dynamic loading) panics the first time it needs a library it cannot open. These
//! probes ask first, through cudarc's own `sys::is_culib_present()` (it tries the same names its
//! loader will, e.g. `libcuda.so.1`, `libcublas.so.13`, `libnvrtc.so.13`), and run every cudarc
//! call under [`std::panic::catch_unwind`] as a second guard, so a missing library or GPU becomes
//! an [`Error`]. (A caught panic still prints its message through the panic hook.)

use std::panic::{AssertUnwindSafe, catch_unwind};

use cudarc::driver::sys::CUresult;

use crate::Error;

/// `Ok` when the CUDA driver (libcuda) opens and sees at least one device; else
/// [`Error::MissingLibrary`], [`Error::Driver`] or [`Error::NoDevice`]. Call it before creating a
/// `cudarc::driver::CudaContext`.
pub fn driver() -> Result<(), Error> {
    match device_count()? {
        0 => Err(Error::NoDevice { detail: "cuDeviceGetCount returned 0".into() }),
        _ => Ok(()),
    }
}

/// The number of CUDA devices the driver sees (`cuInit` + `cuDeviceGetCount`), after checking that
/// libcuda opens. `CUDA_ERROR_NO_DEVICE` from `cuInit` becomes [`Error::NoDevice`].
pub fn device_count() -> Result<usize, Error> {
    present(
        "libcuda (the NVIDIA driver, libcuda.so.1)",
        // SAFETY: only tries to dlopen the driver under cudarc's candidate names and closes it
        // again; no driver function is called.
        || unsafe { cudarc::driver::sys::is_culib_present() },
        "Put the folder holding libcuda.so.1 on LD_LIBRARY_PATH (e.g. /usr/local/nvidia/lib); \
         a machine without an NVIDIA driver cannot run the CUDA backend",
    )?;
    let count = catch_unwind(cudarc::driver::CudaContext::device_count).map_err(|panic| Error::Driver {
        call: "cuInit/cuDeviceGetCount",
        message: format!("cudarc panicked: {}", panic_message(&*panic)),
    })?;
    match count {
        Ok(n) => Ok(usize::try_from(n).unwrap_or(0)),
        Err(e) if e.0 == CUresult::CUDA_ERROR_NO_DEVICE => Err(Error::NoDevice { detail: format!("cuInit: {e}") }),
        Err(e) => Err(Error::Driver { call: "cuInit/cuDeviceGetCount", message: e.to_string() }),
    }
}

/// `Ok` when cuBLAS (`libcublas.so.13`) opens, so cudarc's cuBLAS calls will not panic.
pub fn cublas() -> Result<(), Error> {
    present(
        "cuBLAS (libcublas.so.13)",
        // SAFETY: only tries to dlopen cuBLAS under cudarc's candidate names and closes it.
        || unsafe { cudarc::cublas::sys::is_culib_present() },
        "Put the folder holding libcublas.so.13 on LD_LIBRARY_PATH (e.g. /usr/local/cuda/lib64, or a \
         wheel's nvidia/cu13/lib: pip install nvidia-cublas)",
    )
}

/// `Ok` when cuBLASLt (`libcublasLt.so.13`) opens, so cudarc's cuBLASLt calls will not panic.
pub fn cublaslt() -> Result<(), Error> {
    present(
        "cuBLASLt (libcublasLt.so.13)",
        // SAFETY: only tries to dlopen cuBLASLt under cudarc's candidate names and closes it.
        || unsafe { cudarc::cublaslt::sys::is_culib_present() },
        "Put the folder holding libcublasLt.so.13 on LD_LIBRARY_PATH (e.g. /usr/local/cuda/lib64, or a \
         wheel's nvidia/cu13/lib: pip install nvidia-cublas)",
    )
}

/// `Ok` when NVRTC (`libnvrtc.so.13`) opens, so cudarc's run-time compilation will not panic.
pub fn nvrtc() -> Result<(), Error> {
    present(
        "NVRTC (libnvrtc.so.13)",
        // SAFETY: only tries to dlopen NVRTC under cudarc's candidate names and closes it.
        || unsafe { cudarc::nvrtc::sys::is_culib_present() },
        "Put the folder holding libnvrtc.so.13 on LD_LIBRARY_PATH (e.g. /usr/local/cuda/lib64, or a \
         wheel's nvidia/cu13/lib: pip install nvidia-cuda-nvrtc==13.0.*)",
    )
}

/// Runs a cudarc `is_culib_present` probe under `catch_unwind`; `false` or a panic becomes
/// [`Error::MissingLibrary`] naming `library` with `hint`.
fn present(library: &str, probe: impl FnOnce() -> bool, hint: &str) -> Result<(), Error> {
    let missing = |reason: String| Error::MissingLibrary { library: library.into(), reason, hint: hint.into() };
    match catch_unwind(AssertUnwindSafe(probe)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(missing("not found under any name cudarc tries, on the loader path".into())),
        Err(panic) => Err(missing(format!("the presence probe panicked: {}", panic_message(&*panic)))),
    }
}

/// The text of a caught panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the driver opens, asked of the loader directly (independent of cudarc).
    fn libcuda_opens() -> bool {
        // SAFETY: opening the NVIDIA driver library runs only its initialisers; it is dropped
        // (closed) at once and no symbol is used.
        unsafe { libloading::Library::new("libcuda.so.1") }.is_ok()
    }

    #[test]
    fn driver_probe_never_panics() {
        let result = std::panic::catch_unwind(driver).expect("probe::driver must not panic");
        match result {
            Ok(()) => println!("CUDA driver and device present"),
            Err(e) => {
                let msg = e.to_string();
                println!("probe::driver: {msg}");
                if !libcuda_opens() {
                    assert!(matches!(e, Error::MissingLibrary { .. }), "{e:?}");
                    assert!(msg.contains("libcuda") && msg.contains("LD_LIBRARY_PATH"), "{msg}");
                }
            }
        }
    }

    #[test]
    fn library_probes_never_panic() {
        for (name, probe) in [("cublas", cublas as fn() -> _), ("cublaslt", cublaslt), ("nvrtc", nvrtc)] {
            let result = std::panic::catch_unwind(probe).unwrap_or_else(|_| panic!("probe::{name} panicked"));
            match result {
                Ok(()) => println!("{name}: present"),
                Err(e) => {
                    assert!(matches!(e, Error::MissingLibrary { .. }), "{e:?}");
                    println!("{name}: {e}");
                }
            }
        }
    }

    #[test]
    fn panic_messages_are_extracted() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*p), "boom 1");
        let p = std::panic::catch_unwind(|| std::panic::panic_any("static")).unwrap_err();
        assert_eq!(panic_message(&*p), "static");
    }
}
