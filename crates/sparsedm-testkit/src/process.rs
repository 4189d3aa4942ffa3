//! Driving a background `sparsedm` process from a test: interrupting it as Ctrl-C does, waiting
//! for a file it writes, and collecting its output — each bounded in time, so that a process that
//! does not react fails the test instead of hanging it.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// How long [`wait_for`] and [`ended`] wait before they fail the test.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Sends SIGINT (what Ctrl-C sends) to the process `pid`.
pub fn ctrl_c(pid: u32) {
    let st = Command::new("kill").args(["-INT", &pid.to_string()]).status().expect("run kill");
    assert!(st.success(), "kill -INT {pid} failed");
}

/// Waits until `ready()` holds; panics, naming `what`, after [`PATIENCE`].
pub fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < PATIENCE, "{what} did not happen within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The output of `child` once it ends; killed, and the test failed, if that takes [`PATIENCE`]
/// (a Ctrl-C that is not acted on would otherwise hang the test).
pub fn ended(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("poll the child process").is_none() {
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("the process did not end within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("collect the child's output")
}
