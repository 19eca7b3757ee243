//! Request budgets: a global and a per-host token bucket, the pause a
//! registry asks for with `429 Retry-After`, and jittered retry backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::config::RateLimit;

/// Hands out permission to send one request to a host.
pub(crate) struct Limiter {
    global: Option<TokenBucket>,
    per_host: RateLimit,
    overrides: HashMap<String, RateLimit>,
    hosts: Mutex<HashMap<String, Arc<HostLimit>>>,
}

struct HostLimit {
    bucket: Option<TokenBucket>,
    blocked_until: Mutex<Option<Instant>>,
}

impl Limiter {
    pub(crate) fn new(
        global: RateLimit,
        per_host: RateLimit,
        overrides: HashMap<String, RateLimit>,
    ) -> Self {
        Self {
            global: TokenBucket::new(global),
            per_host,
            overrides,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until a request to `host` fits every budget, then takes it.
    pub(crate) async fn acquire(&self, host: &str) {
        let h = self.host(host);
        // Wait out a Retry-After before taking tokens, so that the pause does
        // not also burn the budget of other hosts.
        loop {
            let until = *lock(&h.blocked_until);
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        if let Some(bucket) = &h.bucket {
            bucket.acquire().await;
        }
        if let Some(global) = &self.global {
            global.acquire().await;
        }
    }

    /// Holds every request to `host` until `until` (a `Retry-After`). Never
    /// shortens a pause already in force.
    pub(crate) fn block_host(&self, host: &str, until: Instant) {
        let h = self.host(host);
        let mut blocked = lock(&h.blocked_until);
        if blocked.is_none_or(|t| t < until) {
            *blocked = Some(until);
        }
    }

    fn host(&self, host: &str) -> Arc<HostLimit> {
        lock(&self.hosts)
            .entry(host.to_owned())
            .or_insert_with(|| {
                let limit = self.overrides.get(host).copied().unwrap_or(self.per_host);
                Arc::new(HostLimit {
                    bucket: TokenBucket::new(limit),
                    blocked_until: Mutex::new(None),
                })
            })
            .clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are plain numbers that are valid after any panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `rate` tokens a second, at most `burst` kept: the registry client
/// waits for a token ([`TokenBucket::acquire`]), the triage API refuses
/// without one ([`TokenBucket::try_take`]).
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens (negative: owed) and when they were last counted.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `None` when `limit` sets no rate: nothing to limit.
    pub(crate) fn new(limit: RateLimit) -> Option<Self> {
        (limit.requests_per_second > 0.0).then(|| {
            let burst = f64::from(limit.burst.max(1));
            Self {
                rate: limit.requests_per_second,
                burst,
                state: Mutex::new((burst, Instant::now())),
            }
        })
    }

    /// Takes a token now, going into debt if there is none, and returns how
    /// long the caller must wait for that token to exist. Debt makes waiting
    /// callers queue in arrival order instead of racing for each new token.
    fn reserve(&self) -> Duration {
        self.with_tokens(|tokens| {
            *tokens -= 1.0;
            if *tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-*tokens / self.rate)
            }
        })
    }

    /// Takes a token if there is one now; refuses rather than waits.
    pub(crate) fn try_take(&self) -> bool {
        self.with_tokens(|tokens| {
            let taken = *tokens >= 1.0;
            if taken {
                *tokens -= 1.0;
            }
            taken
        })
    }

    /// `f` on the tokens there are now, refilled for the time since they
    /// were last counted.
    fn with_tokens<T>(&self, f: impl FnOnce(&mut f64) -> T) -> T {
        let mut state = lock(&self.state);
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        f(tokens)
    }

    async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Delay before retry number `attempt` (0-based): uniform in
/// `[0, min(max, base * 2^attempt)]` ("full jitter").
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let bound = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    bound.mul_f64(fastrand::f64())
}

/// A `Retry-After` value: delay-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_without_waiting_refuses_beyond_its_burst() {
        let bucket = TokenBucket::new(RateLimit {
            requests_per_second: 0.001,
            burst: 3,
        })
        .unwrap();
        let taken: Vec<bool> = (0..5).map(|_| bucket.try_take()).collect();
        assert_eq!(taken, [true, true, true, false, false]);
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_stays_within_its_bound() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..40 {
            let d = backoff(attempt, base, max);
            assert!(d <= base.saturating_mul(1 << attempt.min(20)).min(max));
        }
    }

    // Paused time keeps the clock still, so the waits are exact.
    #[tokio::test(start_paused = true)]
    async fn bucket_allows_the_burst_then_asks_to_wait() {
        let bucket = TokenBucket::new(RateLimit {
            requests_per_second: 1.0,
            burst: 3,
        })
        .unwrap();
        for _ in 0..3 {
            assert_eq!(bucket.reserve(), Duration::ZERO);
        }
        // The fourth token is one second away; the fifth queues behind it.
        assert_eq!(bucket.reserve(), Duration::from_secs(1));
        assert_eq!(bucket.reserve(), Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(bucket.reserve(), Duration::from_secs(1));
    }

    #[test]
    fn zero_rate_means_unlimited() {
        assert!(
            TokenBucket::new(RateLimit {
                requests_per_second: 0.0,
                burst: 0
            })
            .is_none()
        );
    }

    #[tokio::test]
    async fn a_block_is_never_shortened() {
        let limiter = Limiter::new(
            RateLimit {
                requests_per_second: 0.0,
                burst: 0,
            },
            RateLimit {
                requests_per_second: 0.0,
                burst: 0,
            },
            HashMap::new(),
        );
        let later = Instant::now() + Duration::from_secs(60);
        limiter.block_host("h", later);
        limiter.block_host("h", Instant::now());
        assert_eq!(*lock(&limiter.host("h").blocked_until), Some(later));
    }
}
