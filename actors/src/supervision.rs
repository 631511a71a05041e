//! What the control plane does when one of its actors panics (kameo stops a panicking actor
//! unless its `on_panic` says to go on).
//!
//! Controllers are level-triggered, so a panicking controller is restarted from a fresh list
//! after a back-off ([`RestartBackoff`]); GitSync reports the failed sync and keeps polling;
//! the store ends the process, because its in-memory state (watch log, caches) can no longer
//! be trusted and a restart resumes from redb. Each restart is counted in
//! `shipshape_actor_restarts_total` and logged with the actor's name and the panic message.

use std::any::Any;
use std::time::{Duration, Instant};

use kameo::error::PanicError;

/// The first wait before a panicked controller lists again.
pub const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);

/// The longest wait between restarts of a controller that keeps panicking.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// A controller that ran this long since its last restart starts over at
/// [`FIRST_RESTART_DELAY`]: a crash loop restarts at most every [`MAX_RESTART_DELAY`] plus
/// a list, so a quiet spell twice that long means the loop is over.
pub const RESTART_QUIET_PERIOD: Duration = Duration::from_secs(60);

/// The waits between restarts of one actor: [`FIRST_RESTART_DELAY`] doubling up to
/// [`MAX_RESTART_DELAY`], as Kubernetes backs off a crash-looping container, so that a
/// controller that panics on every list does not spin on the store.
#[derive(Debug, Default)]
pub struct RestartBackoff {
    /// Restarts since the last quiet period.
    consecutive: u32,
    /// When the last restart was asked for.
    last: Option<Instant>,
}

impl RestartBackoff {
    /// How long to wait before the restart asked for at `now`.
    pub fn next_delay(&mut self, now: Instant) -> Duration {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) >= RESTART_QUIET_PERIOD)
        {
            self.consecutive = 0;
        }
        self.last = Some(now);
        let doubled = 2u32
            .checked_pow(self.consecutive)
            .and_then(|factor| FIRST_RESTART_DELAY.checked_mul(factor))
            .unwrap_or(MAX_RESTART_DELAY);
        self.consecutive = self.consecutive.saturating_add(1);
        doubled.min(MAX_RESTART_DELAY)
    }
}

/// The text of a panic payload (`panic!("…")` gives a `&str` or a `String`).
pub fn payload_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The text of what kameo hands `on_panic`: the panic message, or the error a `tell`
/// handler returned.
pub fn panic_message(error: &PanicError) -> String {
    error
        .with_str(str::to_string)
        .unwrap_or_else(|| error.with(|inner| format!("{inner:?}")))
}

/// Counts and logs one restart of `actor` after `message`.
pub fn record_restart(actor: &str, message: &str, delay: Duration) {
    crate::metrics::METRICS.actor_restarted(actor);
    tracing::error!(actor, panic = message, restart_in = ?delay, "actor panicked; restarting it");
}

/// The line printed when the store fails, before the process ends.
pub fn store_failure_line(message: &str, database: &std::path::Path) -> String {
    // One line, whatever the panic said.
    let message = message.replace('\n', " ");
    format!(
        "shipshape: the store failed: {message}; restart resumes from {}",
        database.display()
    )
}

/// Ends the process after the store failed: the state it holds in memory (the watch log,
/// the object cache, writes queued for the committer) can no longer be trusted, and every
/// caller would otherwise wait on a store that never answers. Committed writes are durable, so
/// a restart resumes from the database.
pub fn store_failed(message: &str, database: &std::path::Path) -> ! {
    crate::metrics::METRICS.actor_restarted("store");
    // Printed rather than logged: it must reach the terminal whatever SHIPSHAPE_LOG says.
    eprintln!("{}", store_failure_line(message, database));
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_doubling_to_a_cap_and_start_over_after_a_quiet_period() {
        let mut backoff = RestartBackoff::default();
        let start = Instant::now();
        let delays: Vec<u64> = (0..8)
            .map(|i| backoff.next_delay(start + Duration::from_secs(i)).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        let later = start + Duration::from_secs(7) + RESTART_QUIET_PERIOD;
        assert_eq!(backoff.next_delay(later), FIRST_RESTART_DELAY);
        assert_eq!(backoff.next_delay(later), Duration::from_secs(2));
    }

    #[test]
    fn the_back_off_survives_any_number_of_restarts() {
        let mut backoff = RestartBackoff {
            consecutive: u32::MAX - 1,
            last: None,
        };
        let now = Instant::now();
        assert_eq!(backoff.next_delay(now), MAX_RESTART_DELAY);
        assert_eq!(backoff.next_delay(now), MAX_RESTART_DELAY);
    }

    #[test]
    fn panic_payloads_read_as_their_message() {
        let text: Box<dyn Any + Send> = Box::new("static text");
        assert_eq!(payload_message(text.as_ref()), "static text");
        let formatted: Box<dyn Any + Send> = Box::new(format!("key {}", 7));
        assert_eq!(payload_message(formatted.as_ref()), "key 7");
        let other: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(payload_message(other.as_ref()), "a panic without a message");
    }

    /// Set in the child process that [`a_store_that_panics_ends_the_process`] starts.
    const STORE_PANIC_CHILD: &str = "SHIPSHAPE_TEST_STORE_PANIC_DIR";

    /// A message that makes the store actor panic, as a bug in a handler would.
    struct PanicNow;

    impl kameo::message::Message<PanicNow> for crate::StoreActor {
        type Reply = ();

        async fn handle(&mut self, _: PanicNow, _: &mut kameo::message::Context<Self, ()>) {
            panic!("injected\nfailure");
        }
    }

    /// The child's half of [`a_store_that_panics_ends_the_process`]: a store whose handler
    /// panics must end this process before the ask answers.
    #[tokio::test(flavor = "multi_thread")]
    async fn store_panic_child() {
        use kameo::actor::Spawn;
        let Some(dir) = std::env::var_os(STORE_PANIC_CHILD) else {
            return;
        };
        let path = std::path::Path::new(&dir).join("shipshape.redb");
        let store = crate::StoreActor::spawn(crate::StoreActor::new(
            crate::Store::open(&path).expect("opens"),
        ));
        let _ = store.ask(PanicNow).await;
        // The process should be gone by now; give the exit a moment before failing.
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!("STILL RUNNING");
    }

    #[test]
    fn a_store_that_panics_ends_the_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = std::env::current_exe().expect("the test binary");
        let child = std::process::Command::new(exe)
            .args([
                "--exact",
                "supervision::tests::store_panic_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(STORE_PANIC_CHILD, dir.path())
            .output()
            .expect("runs the child");
        let stdout = String::from_utf8_lossy(&child.stdout);
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert!(!stdout.contains("STILL RUNNING"), "{stdout}");
        assert_eq!(child.status.code(), Some(1), "{stdout}\n{stderr}");
        let expected = format!(
            "shipshape: the store failed: injected failure; restart resumes from {}",
            dir.path().join("shipshape.redb").display()
        );
        assert!(
            stderr.lines().any(|line| line == expected),
            "no line {expected:?} in:\n{stderr}"
        );
    }
}
