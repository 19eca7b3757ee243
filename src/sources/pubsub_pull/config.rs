//! The `pubsub.pull` configuration, its validation, and the errors of the
//! pull source.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PullStats;
use crate::pubsub::{self, ClientError, EndpointError, Target};

/// The `pubsub.pull` section of the service configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// Google Cloud project of the subscription (required).
    pub project: String,

    /// The pull subscription on the `gcr` topic: an id (`image-auditor`) or a
    /// full name (`projects/P/subscriptions/S`, whose project must then be
    /// `project`). Required.
    pub subscription: String,

    /// Parallel StreamingPull streams on the subscription. One stream from
    /// the emulator delivers about 2 000 messages/s (100 every 50 ms), and
    /// throughput grows with streams; real Pub/Sub delivers far more per
    /// stream. 1–64, default `1`.
    #[serde(default = "defaults::streams")]
    pub streams: usize,

    /// Handlers running at once, across all streams: our own bound, since the
    /// emulator ignores flow control and the client buffers without limit.
    /// Also sent as each stream's `max_outstanding_messages`. At least 1,
    /// default `128`.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,

    /// How far each lease extension pushes a held message's deadline (the
    /// stream ack deadline, overriding the subscription's). Also how long a
    /// crashed consumer's messages stay invisible. 10 s–600 s, default `10s`.
    #[serde(default = "defaults::max_lease_extension", with = "humantime_serde")]
    pub max_lease_extension: Duration,

    /// How long a message is kept leased while its handler runs; after that
    /// it may be delivered again. At least `max_lease_extension`, default
    /// `1h`.
    #[serde(default = "defaults::max_lease", with = "humantime_serde")]
    pub max_lease: Duration,

    /// Time allowed for the start-up check that the subscription exists.
    /// Default `10s`.
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,

    /// How long an undecided message is held before it is nacked (and so
    /// redelivered) the first time; doubled at each further retry of the
    /// same message. Default `10s`.
    #[serde(default = "defaults::undecided_backoff", with = "humantime_serde")]
    pub undecided_backoff: Duration,

    /// The most an undecided message is held before it is nacked. At most
    /// `max_lease`, default `10m`.
    #[serde(default = "defaults::undecided_backoff_max", with = "humantime_serde")]
    pub undecided_backoff_max: Duration,

    /// Endpoint override: `http://host:port` for an emulator (anonymous
    /// credentials) or `https://host` for a Google endpoint (application
    /// default credentials). Unset: `PUBSUB_EMULATOR_HOST` when set, else
    /// Google.
    pub endpoint: Option<String>,
}

mod defaults {
    use std::time::Duration;

    pub fn streams() -> usize {
        1
    }
    pub fn max_in_flight() -> usize {
        128
    }
    pub fn max_lease_extension() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_lease() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn undecided_backoff() -> Duration {
        Duration::from_secs(10)
    }
    pub fn undecided_backoff_max() -> Duration {
        Duration::from_secs(600)
    }
}

impl PullConfig {
    /// A configuration with every optional field at its default.
    pub fn new(project: impl Into<String>, subscription: impl Into<String>) -> PullConfig {
        PullConfig {
            project: project.into(),
            subscription: subscription.into(),
            streams: defaults::streams(),
            max_in_flight: defaults::max_in_flight(),
            max_lease_extension: defaults::max_lease_extension(),
            max_lease: defaults::max_lease(),
            connect_timeout: defaults::connect_timeout(),
            undecided_backoff: defaults::undecided_backoff(),
            undecided_backoff_max: defaults::undecided_backoff_max(),
            endpoint: None,
        }
    }

    /// The full subscription name, `projects/P/subscriptions/S`.
    pub fn subscription_name(&self) -> String {
        pubsub::subscription_name(&self.project, &self.subscription)
    }

    /// Checks every field; the message names the field and the subscription.
    pub fn validate(&self) -> Result<(), PullError> {
        let invalid = |reason: String| PullError::Config {
            subscription: self.subscription_name(),
            reason,
        };
        if self.project.trim().is_empty() {
            return Err(invalid("`project` is empty".into()));
        }
        if self.subscription.trim().is_empty() {
            return Err(invalid("`subscription` is empty".into()));
        }
        if let Some(rest) = self.subscription.strip_prefix("projects/") {
            match rest.split_once("/subscriptions/") {
                Some((project, id)) if project == self.project && !id.is_empty() => {}
                Some((project, _)) if project != self.project => {
                    return Err(invalid(format!(
                        "`subscription` is in project {project:?}, but `project` is {:?}",
                        self.project
                    )));
                }
                _ => {
                    return Err(invalid(
                        "`subscription` must be an id or projects/P/subscriptions/S".into(),
                    ));
                }
            }
        } else if self.subscription.contains('/') {
            return Err(invalid(
                "`subscription` must be an id or projects/P/subscriptions/S".into(),
            ));
        }
        if !(1..=64).contains(&self.streams) {
            return Err(invalid(format!(
                "`streams` must be 1–64, got {}",
                self.streams
            )));
        }
        if !(1..=1_000_000).contains(&self.max_in_flight) {
            return Err(invalid(format!(
                "`max_in_flight` must be 1–1000000, got {}",
                self.max_in_flight
            )));
        }
        let ext = self.max_lease_extension;
        if ext < Duration::from_secs(10)
            || ext > Duration::from_secs(600)
            || ext.subsec_nanos() != 0
        {
            return Err(invalid(format!(
                "`max_lease_extension` must be whole seconds between 10s and 600s, got {ext:?}"
            )));
        }
        if self.max_lease < ext {
            return Err(invalid(format!(
                "`max_lease` ({:?}) must be at least `max_lease_extension` ({ext:?})",
                self.max_lease
            )));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("`connect_timeout` must be positive".into()));
        }
        if self.undecided_backoff.is_zero() {
            return Err(invalid("`undecided_backoff` must be positive".into()));
        }
        if self.undecided_backoff_max < self.undecided_backoff
            || self.undecided_backoff_max > self.max_lease
        {
            return Err(invalid(format!(
                "`undecided_backoff_max` ({:?}) must be between `undecided_backoff` ({:?}) \
                 and `max_lease` ({:?})",
                self.undecided_backoff_max, self.undecided_backoff, self.max_lease
            )));
        }
        self.target().map(|_| ())
    }

    /// Where the clients connect ([`Target::resolve`]).
    pub fn target(&self) -> Result<Target, PullError> {
        Target::resolve(self.endpoint.as_deref()).map_err(|source| PullError::Endpoint {
            subscription: self.subscription_name(),
            source,
        })
    }
}

/// Why the source stopped or could not start. Every variant names the
/// subscription.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("Pub/Sub subscription {subscription}: invalid configuration: {reason}")]
    Config {
        subscription: String,
        reason: String,
    },
    #[error("Pub/Sub subscription {subscription}: {source}")]
    Endpoint {
        subscription: String,
        source: EndpointError,
    },
    #[error("Pub/Sub subscription {subscription}: cannot build the client for {target}: {source}")]
    Client {
        subscription: String,
        target: String,
        source: ClientError,
    },
    #[error("Pub/Sub subscription {subscription} does not exist at {target}")]
    NotFound {
        subscription: String,
        target: String,
    },
    #[error(
        "Pub/Sub subscription {subscription}: {target} did not answer within {timeout:?} \
         (is the endpoint right, is the emulator running?)"
    )]
    Unreachable {
        subscription: String,
        target: String,
        timeout: Duration,
    },
    #[error("Pub/Sub subscription {subscription}: checking it at {target} failed: {source}")]
    Check {
        subscription: String,
        target: String,
        source: google_cloud_pubsub::Error,
    },
    /// A stream failed for good (the subscription was deleted, permission
    /// was revoked, …); the other streams were drained before returning.
    #[error("Pub/Sub subscription {subscription}: streaming pull failed: {source}")]
    Stream {
        subscription: String,
        source: google_cloud_pubsub::Error,
        /// The counters at the time `run` returned.
        stats: PullStats,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<PullConfig, serde_saphyr::Error> {
        serde_saphyr::from_str(text)
    }

    #[test]
    fn defaults_and_durations() {
        let c = yaml("project: p\nsubscription: s\n").unwrap();
        assert_eq!(c, PullConfig::new("p", "s"));
        c.validate().unwrap();
        let c = yaml(
            "project: p\nsubscription: s\nstreams: 4\nmax_in_flight: 16\n\
             max_lease_extension: 30s\nmax_lease: 10m\nconnect_timeout: 2s\n\
             endpoint: http://127.0.0.1:8085\n",
        )
        .unwrap();
        assert_eq!(c.streams, 4);
        assert_eq!(c.max_lease_extension, Duration::from_secs(30));
        assert_eq!(c.max_lease, Duration::from_secs(600));
        c.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = yaml("project: p\nsubscription: s\nstream: 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stream"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_field_and_subscription() {
        type Mutation = fn(&mut PullConfig);
        let cases: [(&str, Mutation); 9] = [
            ("`streams`", |c| c.streams = 0),
            ("`max_in_flight`", |c| c.max_in_flight = 0),
            ("`max_lease_extension`", |c| {
                c.max_lease_extension = Duration::from_secs(5)
            }),
            ("`max_lease`", |c| c.max_lease = Duration::from_secs(1)),
            ("`subscription`", |c| {
                c.subscription = "projects/other/subscriptions/s".into()
            }),
            ("`subscription`", |c| c.subscription = "a/b".into()),
            ("http://", |c| c.endpoint = Some("localhost:8085".into())),
            ("`undecided_backoff`", |c| {
                c.undecided_backoff = Duration::ZERO
            }),
            ("`undecided_backoff_max`", |c| {
                c.undecided_backoff_max = c.max_lease + Duration::from_secs(1)
            }),
        ];
        for (needle, mutate) in cases {
            let mut c = PullConfig::new("p", "s");
            mutate(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
            assert!(e.contains("subscriptions/"), "{e}");
        }
    }

    #[test]
    fn full_subscription_names_are_kept() {
        let c = PullConfig::new("p", "projects/p/subscriptions/s");
        c.validate().unwrap();
        assert_eq!(c.subscription_name(), "projects/p/subscriptions/s");
    }
}
