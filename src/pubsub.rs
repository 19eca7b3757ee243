//! Shared Google Cloud Pub/Sub client setup: where to connect and with which
//! credentials, for every client the service and its tests build.
//!
//! `google-cloud-pubsub` ignores `PUBSUB_EMULATOR_HOST`, so we read it here.
//! The endpoint is chosen, first match wins:
//!
//! 1. the configured `endpoint` (`http://host:port` or `https://host[:port]`);
//! 2. `PUBSUB_EMULATOR_HOST` (`host:port`, an `http://` prefix is accepted);
//! 3. real Google (`https://pubsub.googleapis.com`).
//!
//! Plain `http://` endpoints can only be emulators, so they get anonymous
//! credentials; without them the clients would fall back to Application
//! Default Credentials and, on first use, call the GCE metadata server.
//! `https://` endpoints and real Google use Application Default Credentials.

use std::fmt;

use google_cloud_auth::credentials::Credentials;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};

/// `builder` with the endpoint and credentials of `target` (a [`Target`]).
/// A macro: each client has its own builder type, and they share no trait.
macro_rules! on_target {
    ($target:expr, $builder:expr) => {{
        let (target, mut builder) = ($target, $builder);
        if let Some(endpoint) = &target.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        if let Some(credentials) = target.credentials() {
            builder = builder.with_credentials(credentials);
        }
        builder
    }};
}

/// The environment variable naming a Pub/Sub emulator (`host:port`).
pub const EMULATOR_HOST_VAR: &str = "PUBSUB_EMULATOR_HOST";

/// Where the Pub/Sub clients connect, and how they authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `None`: the crate's default, real Google.
    endpoint: Option<String>,
    /// Anonymous credentials (emulator) instead of Application Default
    /// Credentials.
    anonymous: bool,
}

/// A configured or inherited endpoint that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Pub/Sub endpoint {value:?} (from {origin}): {reason}")]
pub struct EndpointError {
    pub value: String,
    /// `configuration` or the environment variable's name.
    pub origin: &'static str,
    pub reason: &'static str,
}

/// A client could not be built (credentials or endpoint set-up).
pub type ClientError = google_cloud_gax::client_builder::Error;

impl Target {
    /// Real Google with Application Default Credentials.
    pub fn google() -> Target {
        Target {
            endpoint: None,
            anonymous: false,
        }
    }

    /// The target for a configured endpoint, falling back to
    /// `PUBSUB_EMULATOR_HOST` from the process environment, then to Google.
    pub fn resolve(configured: Option<&str>) -> Result<Target, EndpointError> {
        let env = std::env::var(EMULATOR_HOST_VAR).ok();
        Target::resolve_with(configured, env.as_deref())
    }

    /// [`Target::resolve`] with the emulator variable's value given
    /// explicitly (testable without touching the environment).
    pub fn resolve_with(
        configured: Option<&str>,
        emulator_host: Option<&str>,
    ) -> Result<Target, EndpointError> {
        if let Some(value) = configured.map(str::trim).filter(|v| !v.is_empty()) {
            return Target::from_url(value, "configuration");
        }
        match emulator_host.map(str::trim).filter(|v| !v.is_empty()) {
            Some(host) if host.contains("://") => Target::from_url(host, EMULATOR_HOST_VAR),
            Some(host) => Target::from_url(&format!("http://{host}"), EMULATOR_HOST_VAR),
            None => Ok(Target::google()),
        }
    }

    /// An explicit endpoint URL: `http://` means an emulator (anonymous,
    /// plaintext h2c), `https://` a Google endpoint (ADC, TLS).
    pub fn from_url(value: &str, origin: &'static str) -> Result<Target, EndpointError> {
        let error = |reason| EndpointError {
            value: value.to_owned(),
            origin,
            reason,
        };
        let (anonymous, rest) = if let Some(rest) = value.strip_prefix("http://") {
            (true, rest)
        } else if let Some(rest) = value.strip_prefix("https://") {
            (false, rest)
        } else {
            return Err(error("expected http://host:port or https://host"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() {
            return Err(error("the host is missing"));
        }
        if authority.contains(['/', '?', '#', ' ', '@']) {
            return Err(error("expected only a scheme, a host and a port, no path"));
        }
        if let Some((_, port)) = authority.rsplit_once(':')
            && !authority.ends_with(']')
            && port.parse::<u16>().is_err()
        {
            return Err(error("the port is not a number"));
        }
        Ok(Target {
            endpoint: Some(format!(
                "{}://{authority}",
                if anonymous { "http" } else { "https" }
            )),
            anonymous,
        })
    }

    /// The explicit endpoint, `None` for the crate's default.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Whether the clients use anonymous credentials (emulators).
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    fn credentials(&self) -> Option<Credentials> {
        self.anonymous.then(|| Anonymous::new().build())
    }

    /// A streaming-pull client.
    pub async fn subscriber(&self) -> Result<Subscriber, ClientError> {
        on_target!(self, Subscriber::builder()).build().await
    }

    /// A publisher for `topic` (`projects/P/topics/T`).
    pub async fn publisher(&self, topic: &str) -> Result<Publisher, ClientError> {
        on_target!(self, Publisher::builder(topic.to_owned()))
            .build()
            .await
    }

    /// The subscription admin client (REST).
    pub async fn subscription_admin(&self) -> Result<SubscriptionAdmin, ClientError> {
        on_target!(self, SubscriptionAdmin::builder()).build().await
    }

    /// The topic admin client (REST).
    pub async fn topic_admin(&self) -> Result<TopicAdmin, ClientError> {
        on_target!(self, TopicAdmin::builder()).build().await
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.endpoint, self.anonymous) {
            (None, _) => f.write_str("Google Pub/Sub (application default credentials)"),
            (Some(e), true) => write!(f, "{e} (anonymous, emulator)"),
            (Some(e), false) => write!(f, "{e} (application default credentials)"),
        }
    }
}

/// `projects/{project}/subscriptions/{subscription}`, or `subscription`
/// unchanged when it is already a full name.
pub fn subscription_name(project: &str, subscription: &str) -> String {
    if subscription.starts_with("projects/") {
        subscription.to_owned()
    } else {
        format!("projects/{project}/subscriptions/{subscription}")
    }
}

/// `projects/{project}/topics/{topic}`, or `topic` unchanged when it is
/// already a full name.
pub fn topic_name(project: &str, topic: &str) -> String {
    if topic.starts_with("projects/") {
        topic.to_owned()
    } else {
        format!("projects/{project}/topics/{topic}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_endpoint_wins_over_the_environment() {
        let t = Target::resolve_with(Some("http://127.0.0.1:9000"), Some("10.0.0.1:8085")).unwrap();
        assert_eq!(t.endpoint(), Some("http://127.0.0.1:9000"));
        assert!(t.is_anonymous());
    }

    #[test]
    fn emulator_host_becomes_an_anonymous_http_endpoint() {
        for value in [
            "localhost:8085",
            "http://localhost:8085",
            " localhost:8085/ ",
        ] {
            let t = Target::resolve_with(None, Some(value)).unwrap();
            assert_eq!(t.endpoint(), Some("http://localhost:8085"), "{value}");
            assert!(t.is_anonymous());
        }
    }

    #[test]
    fn nothing_set_means_google_with_adc() {
        for env in [None, Some(""), Some("  ")] {
            let t = Target::resolve_with(None, env).unwrap();
            assert_eq!(t, Target::google());
        }
        let t = Target::resolve_with(Some("https://us-east1-pubsub.googleapis.com"), None).unwrap();
        assert!(!t.is_anonymous());
    }

    #[test]
    fn bad_endpoints_are_rejected_with_their_origin() {
        let e = Target::resolve_with(Some("pubsub:443"), None).unwrap_err();
        assert_eq!(e.origin, "configuration");
        let e = Target::resolve_with(None, Some("localhost:port")).unwrap_err();
        assert_eq!(e.origin, EMULATOR_HOST_VAR);
        assert!(e.to_string().contains("localhost:port"), "{e}");
        assert!(Target::resolve_with(Some("http://h:1/v1"), None).is_err());
        assert!(Target::resolve_with(Some("http://"), None).is_err());
        assert!(Target::resolve_with(Some("http://[::1]:8085"), None).is_ok());
    }

    #[test]
    fn names() {
        assert_eq!(subscription_name("p", "s"), "projects/p/subscriptions/s");
        assert_eq!(
            subscription_name("p", "projects/q/subscriptions/s"),
            "projects/q/subscriptions/s"
        );
        assert_eq!(topic_name("p", "gcr"), "projects/p/topics/gcr");
    }
}
