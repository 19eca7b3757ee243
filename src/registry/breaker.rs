//! Per-host circuit breakers: a host that keeps failing at the network
//! level is marked down, and requests to it fail at once instead of each
//! paying a connect timeout and its retries.
//!
//! What counts as a failure is what says the host cannot be talked to at
//! all: a connection refused, a name that does not resolve, a connect or
//! request timeout, a connection cut mid-body. A timeout counts because a
//! host that accepts connections and never answers holds callers exactly
//! as long as one that is unreachable. An HTTP answer of any status (`5xx`
//! and `429` included) proves the host reachable: a `5xx` is often about
//! one repository or one backend, it comes back quickly, and the retry
//! backoff already paces it; `429` has its own pause (`Retry-After`).
//!
//! States, per host: closed (requests go; consecutive failures are
//! counted), open (refused until the cool-down ends), half-open (the
//! cool-down ended: one probe is let through, everything else is still
//! refused; its success closes the breaker, its failure opens it again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::config::BreakerConfig;
use super::stats::Outcome;

/// The breakers of every host one client talks to.
pub(crate) struct Breakers {
    config: BreakerConfig,
    hosts: Mutex<HashMap<String, Host>>,
}

#[derive(Default)]
struct Host {
    state: State,
    /// The failure that opened the breaker, for the refusal's message.
    last_error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The probe is in flight.
    HalfOpen,
}

impl Default for State {
    fn default() -> Self {
        State::Closed { failures: 0 }
    }
}

/// Why a request was not sent: the host is marked down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The network failure that marked the host down.
    pub(crate) last_error: String,
}

/// Leave to send one request. Report how it went with [`Permit::settle`];
/// a probe dropped unsettled (its caller was cancelled) hands the probe to
/// the next request instead of leaving the host half-open for ever.
pub(crate) struct Permit<'a> {
    breakers: &'a Breakers,
    host: &'a str,
    probe: bool,
    settled: AtomicBool,
}

impl Breakers {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Lets a request to `host` go, or refuses it while the host is down.
    pub(crate) fn admit<'a>(&'a self, host: &'a str) -> Result<Permit<'a>, Refused> {
        let mut hosts = self.lock();
        let h = hosts.entry(host.to_owned()).or_default();
        let probe = match h.state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                h.state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => {
                return Err(Refused {
                    last_error: h.last_error.clone(),
                });
            }
        };
        Ok(Permit {
            breakers: self,
            host,
            probe,
            settled: AtomicBool::new(false),
        })
    }

    /// When `host` will next be asked, if it is marked down and its probe
    /// has not started yet.
    pub(crate) fn down_until(&self, host: &str) -> Option<Instant> {
        match self.lock().get(host)?.state {
            State::Open { until } => Some(until),
            State::Closed { .. } | State::HalfOpen => None,
        }
    }

    /// Whether a request to `host` would be refused now, without taking
    /// the probe: so that a request need not wait for its budget, nor a
    /// retry for its backoff, to find that out.
    pub(crate) fn refusal(&self, host: &str) -> Option<Refused> {
        let hosts = self.lock();
        let h = hosts.get(host)?;
        let refused = match h.state {
            State::Open { until } => Instant::now() < until,
            State::HalfOpen => true,
            State::Closed { .. } => false,
        };
        refused.then(|| Refused {
            last_error: h.last_error.clone(),
        })
    }

    fn record(&self, host: &str, probe: bool, failure: Option<&str>) {
        let threshold = self.config.failures;
        let cooldown = self.config.cooldown;
        let (before, after) = {
            let mut hosts = self.lock();
            let h = hosts.entry(host.to_owned()).or_default();
            let before = h.state;
            h.state = match (h.state, failure) {
                // Any answer proves the host reachable, whoever asked.
                (_, None) => State::Closed { failures: 0 },
                (State::Closed { failures }, Some(_)) => {
                    let failures = failures.saturating_add(1);
                    if threshold > 0 && failures >= threshold {
                        State::Open {
                            until: Instant::now() + cooldown,
                        }
                    } else {
                        State::Closed { failures }
                    }
                }
                (State::HalfOpen, Some(_)) if probe => State::Open {
                    until: Instant::now() + cooldown,
                },
                // A request let through before the host was marked down
                // fails too: that changes nothing, the probe decides.
                (state @ (State::Open { .. } | State::HalfOpen), Some(_)) => state,
            };
            if let Some(error) = failure
                && matches!(h.state, State::Open { .. })
            {
                error.clone_into(&mut h.last_error);
            }
            (before, h.state)
        };
        log_transition(host, before, after, failure, threshold, cooldown);
    }

    /// The probe's caller went away: the next request probes instead.
    fn abandon_probe(&self, host: &str) {
        if let Some(h) = self.lock().get_mut(host)
            && h.state == State::HalfOpen
        {
            h.state = State::Open {
                until: Instant::now(),
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Host>> {
        // The map holds plain states that are valid after any panic.
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn log_transition(
    host: &str,
    before: State,
    after: State,
    failure: Option<&str>,
    failures: u32,
    cooldown: Duration,
) {
    match (before, after) {
        (State::Closed { .. }, State::Open { .. }) => tracing::warn!(
            host,
            failures,
            cooldown = %humantime::format_duration(cooldown),
            error = failure.unwrap_or_default(),
            "registry host marked down: requests to it fail at once until a probe succeeds"
        ),
        (State::HalfOpen, State::Open { .. }) => tracing::info!(
            host,
            error = failure.unwrap_or_default(),
            "registry host still down"
        ),
        (State::Open { .. } | State::HalfOpen, State::Closed { .. }) => {
            tracing::info!(host, "registry host reachable again")
        }
        _ => {}
    }
}

impl Permit<'_> {
    /// Reports how the request ended; `detail` describes a failure.
    pub(crate) fn settle(&self, outcome: Outcome, detail: &str) {
        if self.settled.swap(true, Ordering::Relaxed) {
            return;
        }
        let failure = counts_as_down(outcome).then_some(detail);
        self.breakers.record(self.host, self.probe, failure);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled.load(Ordering::Relaxed) {
            self.breakers.abandon_probe(self.host);
        }
    }
}

/// Whether a request that ended with `outcome` says the host cannot be
/// talked to (see the module comment for why these and only these).
fn counts_as_down(outcome: Outcome) -> bool {
    match outcome {
        Outcome::Timeout | Outcome::NetworkError => true,
        Outcome::Ok
        | Outcome::NotFound
        | Outcome::Unauthorized
        | Outcome::RateLimited
        | Outcome::ServerError
        | Outcome::OtherStatus
        | Outcome::TooLarge
        | Outcome::DigestMismatch
        | Outcome::CircuitOpen => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(10);

    fn breakers(failures: u32) -> Breakers {
        Breakers::new(BreakerConfig {
            failures,
            cooldown: COOLDOWN,
        })
    }

    fn fail(b: &Breakers, host: &str) {
        b.admit(host)
            .expect("admitted")
            .settle(Outcome::NetworkError, "connection refused");
    }

    // Paused time keeps the clock still, so the cool-down is exact.
    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_refuses() {
        let b = breakers(3);
        fail(&b, "h");
        fail(&b, "h");
        // An answer, even an error status, resets the count.
        b.admit("h").unwrap().settle(Outcome::ServerError, "");
        fail(&b, "h");
        fail(&b, "h");
        assert!(b.admit("h").is_ok());
        fail(&b, "h");
        let refused = b.admit("h").err().expect("refused");
        assert_eq!(refused.last_error, "connection refused");
        assert_eq!(b.refusal("other"), None);
        assert_eq!(b.refusal("h"), Some(refused));
        assert_eq!(b.down_until("h"), Some(Instant::now() + COOLDOWN));
        // Other hosts are not affected.
        assert!(b.admit("other").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_after_the_cooldown_and_its_success_closes() {
        let b = breakers(1);
        fail(&b, "h");
        tokio::time::advance(COOLDOWN - Duration::from_millis(1)).await;
        assert!(b.admit("h").is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        // Looking does not take the probe.
        assert_eq!(b.refusal("h"), None);
        let probe = b.admit("h").expect("the probe");
        assert!(probe.probe);
        assert!(b.admit("h").is_err(), "only one probe at a time");
        assert_eq!(b.down_until("h"), None);
        probe.settle(Outcome::NotFound, "");
        let after = b.admit("h").expect("closed");
        assert!(!after.probe);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_for_another_cooldown() {
        let b = breakers(2);
        fail(&b, "h");
        fail(&b, "h");
        tokio::time::advance(COOLDOWN).await;
        b.admit("h").unwrap().settle(Outcome::Timeout, "timed out");
        assert_eq!(b.down_until("h"), Some(Instant::now() + COOLDOWN));
        assert_eq!(b.admit("h").err().unwrap().last_error, "timed out");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_hands_over_to_the_next_request() {
        let b = breakers(1);
        fail(&b, "h");
        tokio::time::advance(COOLDOWN).await;
        drop(b.admit("h").unwrap());
        assert!(b.admit("h").unwrap().probe);
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_of_earlier_requests_do_not_extend_the_cooldown() {
        let b = breakers(1);
        let early = b.admit("h").unwrap();
        fail(&b, "h");
        let until = b.down_until("h").unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        early.settle(Outcome::NetworkError, "late");
        assert_eq!(b.down_until("h"), Some(until));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_failures_disables_the_breaker() {
        let b = breakers(0);
        for _ in 0..100 {
            fail(&b, "h");
        }
        assert!(b.admit("h").is_ok());
    }
}
