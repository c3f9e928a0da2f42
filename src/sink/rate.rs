//! A per-target request rate limiter: requests are spaced evenly so that
//! no minute holds more than the configured number, whatever the upstream's
//! window looks like. The spacing keeps a small margin (`HEADROOM`): paced
//! exactly at the limit, requests that leave on time still arrive a few
//! milliseconds apart from their slots, and half the server's windows would
//! then count one request too many. When the upstream still says "slow down" (429 with
//! Retry-After, Dify's rate-limit 403), every request of the target waits,
//! not only the one that was refused.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    /// The earliest time the next request may start.
    next: Mutex<Instant>,
}

/// The share of the configured rate actually used.
const HEADROOM: f64 = 0.98;

impl RateLimiter {
    pub fn per_minute(requests: u32) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(60.0 / (requests.max(1) as f64 * HEADROOM)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's slot. Slots are handed out in call order,
    /// so concurrent callers queue fairly.
    pub async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().expect("never poisoned: no panics inside");
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// Holds every later request back for at least `pause`.
    pub fn pause(&self, pause: Duration) {
        let mut next = self.next.lock().expect("never poisoned: no panics inside");
        *next = (*next).max(Instant::now() + pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_and_a_pause_holds_all_of_them() {
        let limiter = RateLimiter::per_minute(120);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        // The first goes at once, then one every 500 ms plus the headroom.
        let expected = Duration::from_secs_f64(0.5 / HEADROOM) * 4;
        // The paused clock advances in whole milliseconds.
        assert!(start.elapsed().abs_diff(expected) <= Duration::from_millis(1));

        limiter.pause(Duration::from_secs(10));
        let before = Instant::now();
        limiter.acquire().await;
        assert_eq!(before.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_budget() {
        let limiter = std::sync::Arc::new(RateLimiter::per_minute(600));
        let start = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move { l.acquire().await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let expected = Duration::from_secs_f64(0.1 / HEADROOM) * 9;
        assert!(start.elapsed().abs_diff(expected) <= Duration::from_millis(1));
    }
}
