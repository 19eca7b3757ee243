//! Where alerts go. Each sink only delivers: an `Ok` means the receiver
//! acknowledged the alert (2xx, or a published message id), an `Err` that it
//! must be tried again later, and says whether the alert may have arrived.
//!
//! Past 500 lines: the four sinks' configurations, their wire formats and
//! the one `send` that picks between them change together (a field of the
//! alert reaches every format), so they stay in one file.

use std::fmt;
use std::time::Duration;

use aws_lc_rs::hmac;
use serde::Deserialize;
use serde_json::json;

use super::{Alert, AlertStatus, Route};
use crate::pubsub::Target;

/// One configured sink (`alerts.sinks[]`): a name, exactly one kind, and
/// which findings it is for.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Names the sink in metrics, the findings store and logs. Renaming a
    /// sink makes it a new one, owed every finding again.
    pub name: String,
    pub webhook: Option<WebhookConfig>,
    pub slack: Option<SlackConfig>,
    pub alertmanager: Option<AlertmanagerConfig>,
    pub pubsub: Option<PubsubSinkConfig>,
    #[serde(default)]
    pub verdicts: Vec<crate::audit::VerdictKind>,
    pub min_severity: Option<super::Severity>,
}

impl SinkConfig {
    pub fn route(&self) -> Route {
        Route {
            verdicts: self.verdicts.clone(),
            min_severity: self.min_severity,
        }
    }
}

// Configurations get logged; secrets and webhook URLs (Slack's URL is
// its secret) must not be.
impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match (&self.webhook, &self.slack, &self.alertmanager, &self.pubsub) {
            (Some(_), ..) => "webhook",
            (_, Some(_), ..) => "slack",
            (_, _, Some(_), _) => "alertmanager",
            (.., Some(_)) => "pubsub",
            _ => "none",
        };
        f.debug_struct("SinkConfig")
            .field("name", &self.name)
            .field("kind", &kind)
            .field("verdicts", &self.verdicts)
            .field("min_severity", &self.min_severity)
            .finish()
    }
}

/// A generic JSON webhook: the [`Alert`] as the body.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// HMAC-SHA256 key; when set, requests carry `X-Image-Auditor-Timestamp`
    /// and `X-Image-Auditor-Signature: v1=<hex of HMAC(timestamp "." body)>`.
    pub hmac_secret: Option<String>,
    pub hmac_secret_env: Option<String>,
}

/// A Slack-compatible incoming webhook (`{"text": …}`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub url: Option<String>,
    /// An environment variable holding the URL (it is the secret).
    pub url_env: Option<String>,
}

/// Alertmanager's v2 API (`POST <url>/api/v2/alerts`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// `endsAt` of each alert: how long Alertmanager shows it after the
    /// last update. Default `24h`.
    #[serde(default = "default_resolve_after", with = "humantime_serde")]
    pub resolve_after: Duration,
    /// Link back to the auditor in `generatorURL`, e.g. its external URL.
    pub generator_url: Option<String>,
}

fn default_resolve_after() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// A Pub/Sub topic: the [`Alert`] JSON as data, with `alert_id`,
/// `verdict`, `severity` and `status` attributes.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubSinkConfig {
    pub project: String,
    pub topic: String,
    /// `http://host:port` for the emulator; default `PUBSUB_EMULATOR_HOST`,
    /// else Google.
    pub endpoint: Option<String>,
}

/// A sink ready to deliver.
pub enum Sink {
    /// The structured log: always on, never fails.
    Log,
    Webhook {
        http: reqwest::Client,
        url: String,
        // Boxed: the key is large next to the other variants.
        hmac: Option<Box<hmac::Key>>,
    },
    Slack {
        http: reqwest::Client,
        url: String,
    },
    Alertmanager {
        http: reqwest::Client,
        url: String,
        resolve_after: Duration,
        generator_url: Option<String>,
    },
    Pubsub {
        publisher: google_cloud_pubsub::client::Publisher,
    },
}

/// Why a delivery did not succeed; the dispatcher retries with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// Whether the alert certainly did not arrive: it never left (no
    /// connection, no body), or the receiver answered and did not accept
    /// it. A timeout or a connection lost mid-request leaves it unknown:
    /// the receiver may have it, so its retry must not be `new` again.
    pub refused: bool,
}

impl SendError {
    /// The alert did not arrive.
    pub fn refused(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            refused: true,
        }
    }

    /// The alert may have arrived.
    pub fn unknown(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            refused: false,
        }
    }
}

/// Why a sink's configuration cannot work, naming the sink.
#[derive(Debug, thiserror::Error)]
#[error("alerts.sinks ({sink}): {problem}")]
pub struct SinkConfigError {
    pub sink: String,
    pub problem: SinkProblem,
}

/// What is wrong with one sink's options.
#[derive(Debug, thiserror::Error)]
pub enum SinkProblem {
    #[error("{what}_env: environment variable {var} is not set")]
    EnvUnset { what: &'static str, var: String },
    #[error("set {what} or {what}_env, not both")]
    BothSecrets { what: &'static str },
    #[error("HTTP client: {0}")]
    Http(reqwest::Error),
    #[error("url {url:?}: {error}")]
    Url {
        url: String,
        error: <reqwest::Url as std::str::FromStr>::Err,
    },
    #[error("slack needs url or url_env")]
    SlackUrl,
    #[error("pubsub.endpoint: {0}")]
    PubsubEndpoint(crate::pubsub::EndpointError),
    #[error("pubsub publisher for {topic}: {error}")]
    Publisher {
        topic: String,
        error: crate::pubsub::ClientError,
    },
    #[error("set exactly one of webhook, slack, alertmanager, pubsub")]
    NotExactlyOne,
}

impl Sink {
    /// Builds the sink of `config`, reading secrets from `env`. Fails naming
    /// the option when the configuration cannot work.
    pub async fn from_config(
        config: &SinkConfig,
        timeout: Duration,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Sink, SinkConfigError> {
        let at = |problem: SinkProblem| SinkConfigError {
            sink: config.name.clone(),
            problem,
        };
        let secret = |value: &Option<String>, var: &Option<String>, what| match (value, var) {
            (Some(v), None) => Ok(Some(v.clone())),
            (None, Some(var)) => env(var).map(Some).ok_or_else(|| {
                at(SinkProblem::EnvUnset {
                    what,
                    var: var.clone(),
                })
            }),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(at(SinkProblem::BothSecrets { what })),
        };
        let http = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .map_err(|e| at(SinkProblem::Http(e)))
        };
        let url = |u: &str| {
            reqwest::Url::parse(u)
                .map(|_| u.trim_end_matches('/').to_owned())
                .map_err(|error| {
                    at(SinkProblem::Url {
                        url: u.to_owned(),
                        error,
                    })
                })
        };
        match (
            &config.webhook,
            &config.slack,
            &config.alertmanager,
            &config.pubsub,
        ) {
            (Some(w), None, None, None) => Ok(Sink::Webhook {
                http: http()?,
                url: url(&w.url)?,
                hmac: secret(&w.hmac_secret, &w.hmac_secret_env, "hmac_secret")?
                    .map(|k| Box::new(hmac::Key::new(hmac::HMAC_SHA256, k.as_bytes()))),
            }),
            (None, Some(s), None, None) => {
                let Some(u) = secret(&s.url, &s.url_env, "url")? else {
                    return Err(at(SinkProblem::SlackUrl));
                };
                Ok(Sink::Slack {
                    http: http()?,
                    url: url(&u)?,
                })
            }
            (None, None, Some(a), None) => Ok(Sink::Alertmanager {
                http: http()?,
                url: url(&a.url)?,
                resolve_after: a.resolve_after,
                generator_url: a.generator_url.clone(),
            }),
            (None, None, None, Some(p)) => {
                let target = Target::resolve(p.endpoint.as_deref())
                    .map_err(|e| at(SinkProblem::PubsubEndpoint(e)))?;
                let topic = crate::pubsub::topic_name(&p.project, &p.topic);
                let publisher = target
                    .publisher(&topic)
                    .await
                    .map_err(|error| at(SinkProblem::Publisher { topic, error }))?;
                Ok(Sink::Pubsub { publisher })
            }
            _ => Err(at(SinkProblem::NotExactlyOne)),
        }
    }

    pub async fn send(&self, alert: &Alert) -> Result<(), SendError> {
        match self {
            Sink::Log => {
                if let Some(r) = &alert.resolution {
                    tracing::info!(
                        alert_id = alert.alert_id,
                        status = "resolved",
                        verdict = alert.verdict.as_str(),
                        digest = alert.digest,
                        tag = alert.tag,
                        image = alert.image,
                        resolved_by = r.by,
                        note = r.note,
                        "resolved: {}",
                        alert.summary
                    );
                    return Ok(());
                }
                tracing::warn!(alert_id = alert.alert_id, status = ?alert.status,
                    verdict = alert.verdict.as_str(), severity = alert.severity.as_str(),
                    digest = alert.digest, tag = alert.tag, image = alert.image,
                    repositories = alert.repositories.len(),
                    platform_images = alert.children.len(),
                    events = ?alert.events.iter().map(|e| &e.id).collect::<Vec<_>>(),
                    reason = alert.reason, "{}", alert.summary);
                Ok(())
            }
            Sink::Webhook { http, url, hmac } => {
                let body =
                    serde_json::to_vec(alert).map_err(|e| SendError::refused(e.to_string()))?;
                let mut request = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-image-auditor-alert-id", &alert.alert_id);
                if let Some(key) = hmac {
                    let timestamp = (crate::findings::now_ms() / 1000).to_string();
                    request = request
                        .header("x-image-auditor-timestamp", &timestamp)
                        .header(
                            "x-image-auditor-signature",
                            signature(key, &timestamp, &body),
                        );
                }
                post(request.body(body), url).await
            }
            Sink::Slack { http, url } => {
                let request = http.post(url).json(&json!({ "text": slack_text(alert) }));
                post(request, "the Slack webhook").await
            }
            Sink::Alertmanager {
                http,
                url,
                resolve_after,
                generator_url,
            } => {
                let endpoint = format!("{url}/api/v2/alerts");
                let request = http.post(&endpoint).json(&alertmanager_body(
                    alert,
                    *resolve_after,
                    generator_url.as_deref(),
                ));
                post(request, &endpoint).await
            }
            Sink::Pubsub { publisher } => {
                let data =
                    serde_json::to_vec(alert).map_err(|e| SendError::refused(e.to_string()))?;
                let message = google_cloud_pubsub::model::Message::new()
                    .set_data(data)
                    .set_attributes([
                        ("alert_id", alert.alert_id.clone()),
                        ("verdict", alert.verdict.as_str().to_owned()),
                        ("severity", alert.severity.as_str().to_owned()),
                        ("status", alert.status.as_str().to_owned()),
                    ]);
                publisher
                    .publish(message)
                    .await
                    .map(drop)
                    // A publish that failed may still have been stored.
                    .map_err(|e| SendError::unknown(format!("publish: {e}")))
            }
        }
    }
}

async fn post(request: reqwest::RequestBuilder, what: &str) -> Result<(), SendError> {
    let response = request.send().await.map_err(|e| {
        // Refused at connect: nothing was sent. Anything later (a
        // timeout, a reset) may follow a request the receiver read.
        let message = format!("POST {what}: {e}");
        if e.is_connect() || e.is_builder() {
            SendError::refused(message)
        } else {
            SendError::unknown(message)
        }
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    Err(SendError::refused(format!("POST {what}: {status} {body}")))
}

/// `v1=<hex HMAC-SHA256(key, timestamp "." body)>`: the timestamp is signed
/// so a receiver can refuse replays of old deliveries.
pub fn signature(key: &hmac::Key, timestamp: &str, body: &[u8]) -> String {
    let mut context = hmac::Context::with_key(key);
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1={}", hex::encode(context.sign().as_ref()))
}

fn slack_text(alert: &Alert) -> String {
    if let Some(resolution) = &alert.resolution {
        let mut text = format!(
            "*resolved*: {}\nResolved by {}",
            alert.summary, resolution.by
        );
        if !resolution.note.is_empty() {
            text.push_str(&format!(": {}", resolution.note));
        }
        text.push_str(&format!("\nAlert {}", alert.alert_id));
        return text;
    }
    let mut text = format!(
        "*{}* [{}]{}: {}\n{}",
        alert.verdict.as_str(),
        alert.severity.as_str(),
        if alert.status == AlertStatus::Updated {
            " (update)"
        } else {
            ""
        },
        alert.summary,
        alert.reason
    );
    text.push_str("\nSeen at:");
    for repo in alert.repositories.iter().take(30) {
        text.push_str(&format!("\n• `{repo}`"));
    }
    if alert.repositories.len() > 30 {
        text.push_str(&format!("\n• … and {} more", alert.repositories.len() - 30));
    }
    if !alert.children.is_empty() {
        text.push_str(&format!(
            "\nPlatform images pushed with the index: {}",
            children_text(alert)
        ));
    }
    text.push_str(&format!(
        "\nEvidence: {}\nAlert {}",
        evidence_text(alert),
        alert.alert_id
    ));
    text
}

/// `linux/amd64 sha256:…, linux/arm64 sha256:…`: the platform images that
/// joined an index's alert.
fn children_text(alert: &Alert) -> String {
    alert
        .children
        .iter()
        .map(|c| match &c.platform {
            Some(p) => format!("{p} {}", c.digest),
            None => c.digest.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn evidence_text(alert: &Alert) -> String {
    match &alert.evidence {
        serde_json::Value::Array(entries) => entries
            .iter()
            .map(|e| {
                format!(
                    "{}:{} ({})",
                    e["file"].as_str().unwrap_or("?"),
                    e["line"],
                    e["image"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.as_str().unwrap_or_default().to_owned(),
    }
}

/// One Alertmanager alert. Labels identify the fact (an update has the same
/// labels, so Alertmanager updates the alert it has); annotations carry what
/// the on-call person needs to act.
pub fn alertmanager_body(
    alert: &Alert,
    resolve_after: Duration,
    generator_url: Option<&str>,
) -> serde_json::Value {
    // A resolution ends the alert now: same labels, so Alertmanager ends
    // the alert it has.
    let ends_at = match alert.status {
        AlertStatus::Resolved => std::time::SystemTime::now(),
        AlertStatus::New | AlertStatus::Updated => std::time::SystemTime::now() + resolve_after,
    };
    let mut labels = json!({
        "alertname": "ImageAuditorFinding",
        "verdict": alert.verdict.as_str(),
        "severity": alert.severity.as_str(),
        "image": alert.image,
        "alert_id": alert.alert_id,
    });
    if let Some(d) = &alert.digest {
        labels["digest"] = json!(d);
    }
    if let Some(t) = &alert.tag {
        labels["tag"] = json!(t);
    }
    let mut body = json!({
        "labels": labels,
        "annotations": {
            "summary": alert.summary,
            "description": alert.reason,
            "repositories": alert.repositories.join("\n"),
            "events": alert.events.iter().map(|e| format!("{} {}", e.source, e.id))
                .collect::<Vec<_>>().join("\n"),
            "evidence": evidence_text(alert),
            "manifest_commit": alert.manifest_commit.clone().unwrap_or_default(),
        },
        "startsAt": rfc3339_of_ms(alert.first_seen_ms),
        "endsAt": rfc3339(ends_at),
    });
    if !alert.children.is_empty() {
        body["annotations"]["platform_images"] = json!(children_text(alert));
    }
    if let Some(url) = generator_url {
        body["generatorURL"] = json!(url);
    }
    json!([body])
}

fn rfc3339_of_ms(unix_ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    rfc3339(t)
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
