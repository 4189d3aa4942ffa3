//! Ctrl-C (SIGINT) or SIGTERM during the long commands that can stop cleanly (`train`, `repro`,
//! `sample`): the first signal asks the command to stop at its next safe point — `train` saves a
//! checkpoint of the step it finished, so `--resume` loses nothing; `repro` does the same for the
//! row in training (or stops its sampling after the batch in progress), and `repro --resume`
//! continues; `sample` removes its unfinished npz (PNG files already written stay) — and the
//! process exits with 130. The handler resets itself to
//! the default action (`SA_RESETHAND`), so a second Ctrl-C ends the process at once, as usual.
//!
//! Commands that do not check [`requested`] never install it: for them Ctrl-C keeps its default
//! meaning (the process ends; outputs are written atomically, so nothing half-written is left
//! under its final name).

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The exit status after an interruption (128 + SIGINT, what shells report for Ctrl-C).
pub const EXIT_STATUS: u8 = 130;

/// The error a command returns when it stopped early on a signal; `main` exits with
/// [`EXIT_STATUS`] for it.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted: {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

#[cfg(unix)]
extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM (once per process; later calls do nothing).
pub fn install() {
    #[cfg(unix)]
    {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            for sig in [libc::SIGINT, libc::SIGTERM] {
                // SAFETY: `action` is zero-initialised and then filled in as sigaction(2) expects;
                // the handler only stores to an atomic, which is async-signal-safe.
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                    action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
                    libc::sigemptyset(&mut action.sa_mask);
                    libc::sigaction(sig, &action, std::ptr::null_mut());
                }
            }
        });
    }
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
