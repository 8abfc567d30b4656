//! Named threads for pipeline stages, and joining them with the panic turned into an error.
//!
//! Every stage of both pipelines is a thread started with [`spawn`] (its name shows in the
//! log lines it writes and in a debugger) and ended by its input disconnecting: the stage
//! before it drops its sender. [`join`] collects the stage's result; a panic becomes an error
//! that points at the panic message already printed.

use std::thread::{self, JoinHandle};

use anyhow::{anyhow, Context};

/// A running stage: its thread, returning what the stage returns (its stats, or `()`).
pub type Stage<T = ()> = JoinHandle<anyhow::Result<T>>;

/// Starts `f` on a thread called `name`.
pub fn spawn<T, F>(name: impl Into<String>, f: F) -> anyhow::Result<Stage<T>>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let name = name.into();
    thread::Builder::new().name(name.clone()).spawn(f).with_context(|| format!("cannot start the {name} thread"))
}

/// Waits for the stage `name` and returns its result, a panic as an error.
pub fn join<T>(h: Stage<T>, name: &str) -> anyhow::Result<T> {
    h.join().unwrap_or_else(|_| Err(panicked(name)))
}

/// Waits for a stage that was expected to keep running (it was to report something first):
/// its error, or why it ended without one.
pub fn join_early<T>(h: Stage<T>, name: &str) -> anyhow::Error {
    match h.join() {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => anyhow!("{name} ended early"),
        Err(_) => panicked(name),
    }
}

/// Waits for a thread that returns nothing (a per-connection helper), logging a panic.
pub fn join_quietly(h: JoinHandle<()>, name: &str) {
    if h.join().is_err() {
        tracing::warn!("{}", panicked(name));
    }
}

fn panicked(name: &str) -> anyhow::Error {
    anyhow!("{name} thread panicked; look for the panic message above")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_returns_its_value_under_its_name() {
        let h = spawn("stage-test", || Ok(thread::current().name().map(str::to_owned))).unwrap();
        assert_eq!(join(h, "stage-test").unwrap().as_deref(), Some("stage-test"));
    }

    #[test]
    fn a_panic_becomes_an_error_naming_the_stage() {
        let h = spawn::<(), _>("boom", || panic!("deliberate")).unwrap();
        let e = join(h, "boom").unwrap_err();
        assert_eq!(e.to_string(), "boom thread panicked; look for the panic message above");
    }

    #[test]
    fn a_stage_that_should_have_kept_running_says_why_it_ended() {
        let ok = spawn("quiet", || Ok(())).unwrap();
        assert_eq!(join_early(ok, "quiet").to_string(), "quiet ended early");
        let failed = spawn::<(), _>("loud", || Err(anyhow!("no camera"))).unwrap();
        assert_eq!(join_early(failed, "loud").to_string(), "no camera");
    }
}
