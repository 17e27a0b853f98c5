//! A per-upstream circuit breaker on consecutive failures, after linkerd2-proxy's.
//!
//! After `threshold` failures in a row (unreachable, timed out, 5xx, unusable answers: never a
//! refusal of the client's own request) calls fail at once for `cooldown`; then one trial call
//! decides whether the upstream is back (a call admitted before the opening that succeeds
//! late closes it too: the upstream answered). A Glance that is down then costs its clients a fast
//! 503, and costs the gateway no pile-up of waiting requests.
//!
//! Every admitted call holds a [`Permit`]. The trial's permit is the only way out of the open
//! state, so it frees the trial slot when it is dropped undecided (a client hanging up, a
//! request deadline, a readiness probe giving up): a lost trial never keeps the circuit open.
//!
//! Time is tokio's, so tests drive the cooldown on a paused clock. The state, each opening
//! and each refusal show in the upstream's metrics ([`UpstreamMetrics`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::layers::metrics::UpstreamMetrics;

/// Where a breaker stands, as `image_gateway_circuit_breaker_state` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed = 0,
    Open = 1,
    /// Open, with the trial call under way.
    HalfOpen = 2,
}

#[derive(Debug)]
pub struct Breaker {
    /// The upstream, in log lines.
    name: Box<str>,
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
    metrics: UpstreamMetrics,
}

#[derive(Debug, Default)]
struct Inner {
    failures: u32,
    /// Open until then; `None` when closed.
    open_until: Option<Instant>,
    /// The trial call is under way.
    probing: bool,
}

/// What an admitted call turned out to say about the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered usably, whatever it answered (a 404 is a healthy answer).
    Healthy,
    /// The upstream failed: it is the upstream's health speaking, not the request.
    Failed,
}

/// The right to make one call. Decide it with [`Permit::record`]; dropped undecided, it
/// counts for nothing and, if it was the trial, frees the trial slot.
#[derive(Debug)]
#[must_use = "a permit records the call's outcome"]
pub struct Permit {
    breaker: Arc<Breaker>,
    trial: bool,
    decided: bool,
}

impl Breaker {
    pub fn new(name: &str, threshold: u32, cooldown: Duration, metrics: UpstreamMetrics) -> Self {
        Breaker { name: name.into(), threshold: threshold.max(1), cooldown, inner: Mutex::default(), metrics }
    }

    /// Whether `other` opens and cools down as this one does (and for the same upstream name).
    pub fn same_settings(&self, other: &Breaker) -> bool {
        (&self.name, self.threshold, self.cooldown) == (&other.name, other.threshold, other.cooldown)
    }

    /// The upstream's name in metrics and logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit to call now, or how long the circuit stays open.
    pub fn admit(self: &Arc<Self>) -> Result<Permit, Duration> {
        let mut s = self.lock();
        let trial = match s.open_until {
            None => false,
            Some(until) => {
                let now = Instant::now();
                if now < until || s.probing {
                    drop(s);
                    self.metrics.refused.inc();
                    return Err(until.saturating_duration_since(now));
                }
                s.probing = true;
                self.metrics.state.set(State::HalfOpen as i64);
                true
            }
        };
        Ok(Permit { breaker: Arc::clone(self), trial, decided: false })
    }

    fn decide(&self, trial: bool, outcome: Outcome) {
        let mut s = self.lock();
        if trial {
            s.probing = false;
        }
        if outcome == Outcome::Healthy {
            // The trial, or a call admitted before the circuit opened: either way Glance answers.
            if s.open_until.take().is_some() {
                tracing::info!(upstream = &*self.name, "upstream is answering again: circuit closed");
                self.metrics.state.set(State::Closed as i64);
            }
            s.failures = 0;
            self.metrics.up.set(1);
            return;
        }
        self.metrics.up.set(0);
        s.failures = s.failures.saturating_add(1);
        // A call admitted before the circuit opened may fail after: it keeps the circuit open
        // but does not push the trial further out.
        if s.failures >= self.threshold && (s.open_until.is_none() || trial) {
            if s.open_until.is_none() {
                self.metrics.opened.inc();
                tracing::warn!(
                    upstream = &*self.name,
                    failures = s.failures,
                    cooldown_secs = self.cooldown.as_secs_f64(),
                    "upstream failing: circuit open"
                );
            }
            s.open_until = Some(Instant::now() + self.cooldown);
        }
        if s.open_until.is_some() && !s.probing {
            self.metrics.state.set(State::Open as i64);
        }
    }

    /// The trial ended without a verdict: the next call after the cooldown may try again (if a
    /// late success closed the circuit meanwhile, it stays closed).
    fn release_trial(&self) {
        let mut s = self.lock();
        s.probing = false;
        if s.open_until.is_some() {
            self.metrics.state.set(State::Open as i64);
        }
    }
}

impl Permit {
    pub fn record(mut self, outcome: Outcome) {
        self.decided = true;
        self.breaker.decide(self.trial, outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.trial && !self.decided {
            self.breaker.release_trial();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::{Failed, Healthy};

    const CLOSED: i64 = State::Closed as i64;
    const OPEN: i64 = State::Open as i64;
    const HALF_OPEN: i64 = State::HalfOpen as i64;

    fn breaker(threshold: u32) -> Arc<Breaker> {
        let metrics = crate::layers::metrics::Metrics::new().upstream("glance");
        Arc::new(Breaker::new("glance", threshold, Duration::from_secs(5), metrics))
    }

    /// State, up, opened, refused, as the metrics show them.
    fn shown(b: &Breaker) -> (i64, i64, u64, u64) {
        let m = &b.metrics;
        (m.state.get(), m.up.get(), m.opened.get(), m.refused.get())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_closes_after_a_good_trial() {
        let b = breaker(3);
        for _ in 0..2 {
            b.admit().unwrap().record(Failed);
        }
        b.admit().unwrap().record(Healthy); // a success resets the count
        for _ in 0..3 {
            b.admit().unwrap().record(Failed);
        }
        assert_eq!(b.admit().unwrap_err(), Duration::from_secs(5), "open after three failures in a row");
        assert_eq!(shown(&b), (OPEN, 0, 1, 1));
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(b.admit().is_err(), "still cooling down");
        tokio::time::advance(Duration::from_millis(1)).await;
        let trial = b.admit().expect("one trial after the cooldown");
        assert_eq!(shown(&b).0, HALF_OPEN);
        assert!(b.admit().is_err(), "only one trial at a time");
        trial.record(Failed);
        assert!(b.admit().is_err(), "a failed trial opens it again");
        tokio::time::advance(Duration::from_secs(5)).await;
        b.admit().unwrap().record(Healthy);
        assert!(b.admit().is_ok() && b.admit().is_ok(), "closed again");
        assert_eq!(shown(&b), (CLOSED, 1, 1, 4), "a failed trial does not count as a new opening");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_dropped_undecided_frees_the_slot() {
        let b = breaker(1);
        b.admit().unwrap().record(Failed);
        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = b.admit().unwrap();
        assert!(b.admit().is_err());
        // The caller gave up: a readiness probe's timeout, a client hanging up.
        drop(trial);
        assert_eq!(shown(&b).0, OPEN);
        b.admit().expect("the next call is the trial").record(Healthy);
        assert_eq!(shown(&b).0, CLOSED);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_lost_inside_a_timed_out_future_frees_the_slot() {
        let b = breaker(1);
        b.admit().unwrap().record(Failed);
        tokio::time::advance(Duration::from_secs(5)).await;
        let hung = {
            let b = b.clone();
            async move {
                let _permit = b.admit().unwrap();
                std::future::pending::<()>().await;
            }
        };
        assert!(tokio::time::timeout(Duration::from_secs(2), hung).await.is_err());
        b.admit().expect("not stuck open").record(Healthy);
        assert_eq!(shown(&b).0, CLOSED);
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_of_calls_admitted_before_the_opening_do_not_extend_it() {
        let b = breaker(1);
        let late = b.admit().unwrap();
        b.admit().unwrap().record(Failed);
        tokio::time::advance(Duration::from_secs(4)).await;
        late.record(Failed);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.admit().is_ok(), "the cooldown counts from the opening");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_success_closes_the_circuit_and_a_trial_dropped_after_it_leaves_it_closed() {
        let b = breaker(1);
        let late = b.admit().unwrap();
        b.admit().unwrap().record(Failed);
        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = b.admit().unwrap();
        late.record(Healthy);
        assert_eq!((shown(&b).0, shown(&b).1), (CLOSED, 1), "closed and up");
        drop(trial);
        assert_eq!(shown(&b).0, CLOSED, "a dropped trial does not show the closed circuit as open");
        assert!(b.admit().is_ok() && b.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn undecided_ordinary_calls_count_for_nothing() {
        let b = breaker(2);
        b.admit().unwrap().record(Failed);
        drop(b.admit().unwrap());
        assert_eq!(shown(&b).0, CLOSED, "one failure, one call without a verdict");
        b.admit().unwrap().record(Failed);
        assert_eq!(shown(&b).0, OPEN);
    }
}
