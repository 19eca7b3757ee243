//! Prometheus metrics (prefix `image_auditor_`), registered once per service
//! in a [`Metrics`] value that is passed around; no global registry.

use std::time::Duration;

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    source: &'static str,
    action: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    source: &'static str,
    /// `accepted`, `retry`, `unauthorized`, `unsupported_media_type`, `rejected`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IgnoredLabels {
    source: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    sink: String,
    /// `delivered` or `failed`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommitLabels {
    /// The git commit of the live manifest set; empty for a directory.
    commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    duplicates: Family<SourceLabels, Counter>,
    retries: Family<SourceLabels, Counter>,
    processing_seconds: Family<SourceLabels, Histogram>,
    last_event_seconds: Family<SourceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub index_digests: Gauge,
    pub index_manifests: Gauge,
    pub index_excluded_manifests: Gauge,
    pub index_children: Gauge,
    pub index_generation: Gauge,
    index_commit: Family<CommitLabels, Gauge>,
    pub undecided_backlog: Gauge,
    pub store_errors: Counter,
    webhook_requests: Family<WebhookLabels, Counter>,
    webhook_ignored: Family<IgnoredLabels, Counter>,
    alerts: Family<AlertLabels, Counter>,
    outbox_backlog: Family<SinkLabels, Gauge>,
    pub manifest_load_failures: Counter,
    pub index_last_load_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Unix time the last inventory sweep (`scan`) completed.
    pub scan_last_completed_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// New findings made by inventory sweeps.
    pub scan_findings: Counter,
    /// Repositories visited by inventory sweeps.
    pub scan_repositories: Counter,
    /// Requests and inputs refused because a limit of the hostile input
    /// budget bit; count them with [`Metrics::rejected`].
    rejected_requests: Family<ReasonLabels, Counter>,
    /// JWKS fetches the push token verifier started (0 without push auth).
    pub jwks_fetches: Counter,
    excepted_findings: Family<VerdictLabels, Counter>,
    /// Exceptions entries in force (loaded, expired ones included).
    pub exceptions_entries: Gauge,
    /// Loaded exceptions entries that have expired (reported, no longer matching).
    pub exceptions_expired: Gauge,
    /// Exceptions files refused because of an error (the last good version stays).
    pub exceptions_load_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Metrics {
    /// The process's metrics; `registry_client`'s request and cache
    /// counters are read at each scrape.
    pub fn new(registry_client: Option<crate::registry::RegistryClient>) -> Self {
        let mut r = Registrar(Registry::with_prefix("image_auditor"));
        if let Some(client) = registry_client {
            r.0.register_collector(Box::new(RegistryStats(client)));
        }
        // Registered in this order, which is the exposition's.
        Self {
            events: r.add("events", "Events decided, by source, action and verdict"),
            duplicates: r.add(
                "duplicate_deliveries",
                "Deliveries whose id was already recorded (acknowledged without a new decision)",
            ),
            retries: r.add(
                "retried_deliveries",
                "Deliveries handed back to the source for redelivery (undecided, or the store failed)",
            ),
            processing_seconds: r.register(
                "processing_seconds",
                "Time from receiving a delivery to its answer, resolution and recording included",
                Family::new_with_constructor(|| {
                    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
                }),
            ),
            last_event_seconds: r.add(
                "last_event_timestamp_seconds",
                "Unix time of the last delivery from each source (dead-man's switch)",
            ),
            index_digests: r.add("index_digests", "Distinct promoted digests in the index"),
            index_manifests: r.add("index_manifests", "Manifests (projects) in the index"),
            index_excluded_manifests: r.add(
                "index_excluded_manifests",
                "Manifests left out of the index because they failed validation",
            ),
            index_children: r.add(
                "index_children",
                "Children of promoted manifest lists learnt from registries",
            ),
            index_generation: r.add("index_generation", "Generation of the live index"),
            index_commit: r.add(
                "index_commit_info",
                "Always 1, labelled with the git commit of the live manifest set",
            ),
            undecided_backlog: r.add(
                "undecided_backlog",
                "Deliveries currently undecided and waiting for redelivery",
            ),
            store_errors: r.add(
                "store_errors",
                "Failures to record a decision in the findings store",
            ),
            webhook_requests: r.add("webhook_requests", "Webhook requests by source and outcome"),
            webhook_ignored: r.add(
                "webhook_ignored_events",
                "Webhook events not audited (blobs, pulls, failed actions, unknown types), by reason",
            ),
            alerts: r.add(
                "alerts",
                "Alert deliveries by sink and outcome (an alert may carry many findings)",
            ),
            outbox_backlog: r.add("outbox_backlog", "Findings not yet delivered, per sink"),
            manifest_load_failures: r.add(
                "manifest_load_failures",
                "Manifests (projects) left out of a load because they failed validation",
            ),
            index_last_load_seconds: r.add(
                "index_last_load_timestamp_seconds",
                "Unix time the live index was built from the manifests",
            ),
            scan_last_completed_seconds: r.add(
                "scan_last_completed_timestamp_seconds",
                "Unix time the last inventory sweep completed",
            ),
            scan_findings: r.add("scan_findings", "New findings made by inventory sweeps"),
            scan_repositories: r.add(
                "scan_repositories",
                "Repositories visited by inventory sweeps",
            ),
            rejected_requests: r.add(
                "rejected_requests",
                "Requests or inputs refused because a limit bit, by the limit's reason",
            ),
            jwks_fetches: r.add(
                "jwks_fetches",
                "JWKS fetches started by the push token verifier, successful or not",
            ),
            excepted_findings: r.add(
                "excepted_findings",
                "Findings an exceptions entry covered: recorded, never alerted (counted in \
                 events_total as verdict=\"excepted\"), by their verdict",
            ),
            exceptions_entries: r.add(
                "exceptions_entries",
                "Exceptions entries loaded, expired ones included",
            ),
            exceptions_expired: r.add(
                "exceptions_expired",
                "Loaded exceptions entries past their expiry date (they no longer match)",
            ),
            exceptions_load_failures: r.add(
                "exceptions_load_failures",
                "Exceptions files refused because of an error (their last good version stays)",
            ),
            registry: r.0,
        }
    }

    /// Counts a finding an exception covered: in `events_total` under the
    /// pseudo-verdict `excepted` (so alert rules on verdicts stay quiet),
    /// and by its real verdict in `excepted_findings_total`.
    pub fn excepted(&self, source: &'static str, action: &'static str, verdict: &'static str) {
        self.recorded(source, action, "excepted");
        self.excepted_findings
            .get_or_create(&VerdictLabels { verdict })
            .inc();
    }

    pub fn observe_index(&self, index: &crate::index::Index) {
        let stats = index.stats();
        self.index_digests.set(stats.digests as i64);
        self.index_manifests.set(stats.projects as i64);
        self.index_excluded_manifests
            .set(stats.excluded_projects as i64);
        self.index_children.set(stats.children as i64);
        self.index_generation.set(stats.generation as i64);
        // One series, for the live commit only: clear the old one first.
        let commit = stats.commit.unwrap_or_default();
        if self
            .index_commit
            .get(&CommitLabels {
                commit: commit.clone(),
            })
            .is_none()
        {
            self.index_commit.clear();
            self.index_commit
                .get_or_create(&CommitLabels { commit })
                .set(1);
        }
    }

    /// Counts one request or input refused by a limit. `reason` names the
    /// limit (`connections`, `body_too_large`, …); README lists them all.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected_requests
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The counter behind [`Metrics::rejected`] for `reason`, for a
    /// component that decides refusals itself but holds no `Metrics` (the
    /// series shows 0 from then on).
    pub fn rejected_counter(&self, reason: &'static str) -> Counter {
        self.rejected_requests
            .get_or_create(&ReasonLabels { reason })
            .clone()
    }

    pub fn observe_processing(&self, source: &'static str, elapsed: Duration) {
        self.processing_seconds
            .get_or_create(&SourceLabels { source })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a verdict newly recorded for an event from `source`.
    pub fn recorded(&self, source: &'static str, action: &'static str, verdict: &'static str) {
        self.events
            .get_or_create(&EventLabels {
                source,
                action,
                verdict,
            })
            .inc();
    }

    /// Counts a redelivery of an event whose verdict was already recorded.
    pub fn duplicate(&self, source: &'static str) {
        self.duplicates
            .get_or_create(&SourceLabels { source })
            .inc();
    }

    /// Counts a delivery handed back to `source` to be delivered again.
    pub fn retried(&self, source: &'static str) {
        self.retries.get_or_create(&SourceLabels { source }).inc();
    }

    /// Sets when `source` was last heard from, in Unix seconds.
    pub fn last_event(&self, source: &'static str, unix_seconds: f64) {
        self.last_event_seconds
            .get_or_create(&SourceLabels { source })
            .set(unix_seconds);
    }

    /// Counts one webhook request of format `source` by how it ended.
    pub fn webhook_request(&self, source: &'static str, outcome: &'static str) {
        self.webhook_requests
            .get_or_create(&WebhookLabels { source, outcome })
            .inc();
    }

    /// Counts one notification in a webhook request that was skipped.
    pub fn webhook_ignored(&self, source: &'static str, reason: &'static str) {
        self.webhook_ignored
            .get_or_create(&IgnoredLabels { source, reason })
            .inc();
    }

    /// Counts one alert batch sent to `sink`, delivered or not.
    pub fn alert(&self, sink: &str, outcome: &'static str) {
        self.alerts
            .get_or_create(&AlertLabels {
                sink: sink.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Sets how many findings wait for delivery to `sink`.
    pub fn outbox_backlog(&self, sink: &str, backlog: i64) {
        self.outbox_backlog
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .set(backlog);
    }

    /// The text exposition format (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Builds the registry: each metric is made and registered in one step,
/// and the registry keeps a handle to the one [`Metrics`] keeps.
struct Registrar(Registry);

impl Registrar {
    /// A new metric of type `M`, registered as `name`.
    fn add<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.register(name, help, M::default())
    }

    /// `metric`, registered as `name`.
    fn register<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

/// The registry client's own counters, as Prometheus counters.
struct RegistryStats(crate::registry::RegistryClient);

impl std::fmt::Debug for RegistryStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryStats")
    }
}

impl Collector for RegistryStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        // Summed over request kinds (manifest, token): by host and outcome.
        let mut requests: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        for ((host, _kind, outcome), n) in &stats.requests {
            *requests
                .entry((host.clone(), outcome.as_str()))
                .or_default() += n;
        }
        let mut family = encoder.encode_descriptor(
            "registry_requests",
            "Registry requests by host and outcome",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for ((host, outcome), n) in &requests {
            let labels = [("host", host.as_str()), ("outcome", *outcome)];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        for (name, help, value) in [
            (
                "cache_hits",
                "Manifests read from the verified cache",
                stats.cache_hits,
            ),
            (
                "cache_misses",
                "Manifests not in the cache",
                stats.cache_misses,
            ),
            (
                "cache_corruptions",
                "Cache files that failed verification and were deleted",
                stats.cache_corruptions,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
