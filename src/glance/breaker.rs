//! A per-upstream circuit breaker: after `threshold` consecutive failures (unreachable, timed
//! out, 5xx, unusable answers) calls fail at once for `cooldown`, then one trial call decides
//! whether the upstream is back. A Glance that is down then costs its clients nothing but a
//! fast 503, and costs the gateway no pile-up of waiting requests.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    /// Open until then; `None` when closed.
    open_until: Option<Instant>,
    /// A trial call is under way after the cooldown.
    probing: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker { threshold: threshold.max(1), cooldown, state: Mutex::default() }
    }

    /// Whether a call may go out now; `Err` says how long the breaker stays open.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match s.open_until {
            None => Ok(()),
            Some(until) => {
                let now = Instant::now();
                if now < until || s.probing {
                    Err(until.saturating_duration_since(now))
                } else {
                    s.probing = true;
                    Ok(())
                }
            }
        }
    }

    /// Records the outcome of an admitted call.
    pub fn record(&self, failed: bool) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.probing = false;
        if !failed {
            if s.open_until.take().is_some() {
                tracing::info!("upstream is answering again: circuit closed");
            }
            s.failures = 0;
            return;
        }
        s.failures = s.failures.saturating_add(1);
        if s.failures >= self.threshold {
            if s.open_until.is_none() {
                tracing::warn!(
                    failures = s.failures,
                    cooldown_secs = self.cooldown.as_secs_f64(),
                    "upstream failing: circuit open"
                );
            }
            s.open_until = Some(Instant::now() + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_good_trial() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(b.admit().is_ok());
            b.record(true);
        }
        assert!(b.admit().is_ok());
        b.record(false); // a success resets the count
        for _ in 0..3 {
            assert!(b.admit().is_ok());
            b.record(true);
        }
        assert!(b.admit().is_err(), "open after three failures in a row");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit().is_ok(), "one trial after the cooldown");
        assert!(b.admit().is_err(), "only one trial at a time");
        b.record(true);
        assert!(b.admit().is_err(), "a failed trial opens it again");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit().is_ok());
        b.record(false);
        assert!(b.admit().is_ok() && b.admit().is_ok(), "closed again");
    }
}
