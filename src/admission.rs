//! The limit on heavy requests in flight: translated lists, whose answers the gateway builds
//! from Glance's pages. Beyond it a request is answered at once with 503 and `Retry-After`, in
//! the client's dialect, rather than queued: a burst then costs the gateway a bounded amount of
//! memory (each heavy request holds about one raw Glance page and one page of answer), and its
//! clients a fast answer they know how to retry.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::layers::metrics::HeavyMetrics;

#[derive(Debug)]
pub struct Admission {
    limit: usize,
    permits: Arc<Semaphore>,
    retry_after: Duration,
    metrics: HeavyMetrics,
}

/// A heavy request admitted: counted in flight until dropped. A list answer keeps it until the
/// server has taken all but its last frame (`crate::list`).
#[derive(Debug)]
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    metrics: HeavyMetrics,
}

/// Too many heavy requests are in flight: come back after `retry_after`.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("The gateway is serving as many lists as it is configured to; retry in {} s.", retry_after_secs(*.retry_after))]
pub struct Busy {
    pub retry_after: Duration,
}

impl Admission {
    pub fn new(limit: usize, retry_after: Duration, metrics: HeavyMetrics) -> Self {
        Admission { limit, permits: Arc::new(Semaphore::new(limit)), retry_after, metrics }
    }

    /// Whether this admits as many, and asks for the same wait, as `limit` and `retry_after`.
    pub fn same_settings(&self, limit: usize, retry_after: Duration) -> bool {
        (self.limit, self.retry_after) == (limit, retry_after)
    }

    /// Admits one heavy request of `dialect`, or refuses it at once.
    pub fn try_admit(&self, dialect: &'static str) -> Result<Ticket, Busy> {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                self.metrics.in_flight.inc();
                Ok(Ticket { _permit: permit, metrics: self.metrics.clone() })
            }
            Err(_) => {
                self.metrics.refused.with_label_values(&[dialect]).inc();
                Err(Busy { retry_after: self.retry_after })
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

/// `Retry-After` counts whole seconds; never 0, which would invite an instant retry storm.
pub fn retry_after_secs(after: Duration) -> u64 {
    (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1)
}

/// The `Retry-After` header value for a wait.
pub fn retry_after_header(after: Duration) -> http::HeaderValue {
    http::HeaderValue::from(retry_after_secs(after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::metrics::Metrics;

    #[test]
    fn beyond_the_limit_requests_are_refused_and_counted() {
        let metrics = Metrics::new();
        let admission = Admission::new(2, Duration::from_secs(1), metrics.heavy());
        let a = admission.try_admit("nova").unwrap();
        let _b = admission.try_admit("alliance").unwrap();
        assert_eq!(admission.try_admit("nova").unwrap_err().retry_after, Duration::from_secs(1));
        drop(a);
        let _c = admission.try_admit("nova").expect("a ticket returned is a place freed");
        let text = metrics.render();
        assert!(text.contains("image_gateway_heavy_requests_in_flight 2"), "{text}");
        assert!(text.contains(r#"image_gateway_heavy_requests_refused_total{dialect="nova"} 1"#), "{text}");
    }

    #[test]
    fn retry_after_is_whole_seconds_never_zero() {
        for (after, secs) in [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (5000, 5)] {
            assert_eq!(retry_after_secs(Duration::from_millis(after)), secs, "{after} ms");
        }
    }
}
