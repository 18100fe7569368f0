//! Deadline-bounded waiting for a condition, for tests that watch another process.

use std::time::{Duration, Instant};

/// Polls `check` every `every` until it returns `Some`, or fails the test after `timeout` with
/// `what` and the last state `describe` gives. The poll interval is not a synchronisation
/// sleep: the wait ends as soon as the condition holds.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; {}",
            describe()
        );
        std::thread::sleep(every);
    }
}
