//! `serve`: wires configuration, index, the shared parts ([`Wiring`]),
//! sources, alerts and HTTP together, and takes them down in order on shutdown.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::alert::Route;
use crate::alert::dispatch::{AlertsConfig, Dispatcher};
use crate::alert::sink::Sink;
use crate::config::Config;
use crate::findings;
use crate::listener::{ConnectionLimits, fit_connection_cap, serve};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::registry::RegistryClient;
use crate::reload::Reloader;
use crate::scan;
use crate::server::{AdminAccess, AppState, router};
use crate::sources::pubsub_pull::PullSource;
use crate::sources::push_auth::PushVerifier;
use crate::sources::webhook::Endpoints;
use crate::wiring::{Wiring, WiringError};

/// Runs the service until `shutdown` is cancelled, then stops pulling,
/// finishes in-flight work and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Opening may migrate and, on PostgreSQL, blocks on the store's own
    // runtime: not on an async thread.
    let location = config.store_location();
    let store = tokio::task::spawn_blocking(move || findings::open(&location))
        .await
        .context("opening the findings store")?
        .map_err(|error| WiringError::Store { error })?;
    let wiring = Wiring::with_store(store, config.resolve.then(|| config.registry.clone()))?;
    let (store, metrics) = (wiring.store.clone(), wiring.metrics.clone());
    let backend = store.backend();
    let (source, poll_interval) = config.manifest_source();
    let root = source.root();
    let reloader = Reloader::start(
        source,
        store.clone(),
        metrics.clone(),
        &config.reload,
        &config.exceptions,
    )
    .await
    .with_context(|| format!("loading manifests from {}", root.display()))?;
    let index = reloader.index();
    let stats = index.load().stats();
    tracing::info!(manifests = %root.display(), generation = stats.generation,
        commit = stats.commit, projects = stats.projects,
        excluded_projects = stats.excluded_projects, images = stats.images,
        promotions = stats.promotions, digests = stats.digests, tags = stats.tags,
        destinations = stats.destinations, "index loaded");

    let pipeline = Arc::new(
        wiring
            .pipeline(
                index.clone(),
                config.policy.clone(),
                config.undecided_retry_for,
            )
            .with_reloader(reloader.clone())
            .with_exceptions(reloader.exceptions()),
    );
    let pull = config.pubsub.pull.clone().map(PullSource::new);
    let push_verifier = config
        .pubsub
        .push
        .auth
        .clone()
        .map(|auth| {
            PushVerifier::new(auth).map(|verifier| {
                Arc::new(verifier.with_counters(
                    metrics.jwks_fetches.clone(),
                    metrics.rejected_counter("jwks_refetch_suppressed"),
                ))
            })
        })
        .transpose()
        .context("push authentication")?;
    let mut dispatchers = vec![Dispatcher {
        name: AlertsConfig::LOG_SINK.into(),
        sink: Sink::Log,
        route: Route::default(),
        store: store.clone(),
        index: index.clone(),
        metrics: metrics.clone(),
        timing: config.alerts.clone(),
    }];
    for sink in &config.alerts.sinks {
        dispatchers.push(Dispatcher {
            name: sink.name.clone(),
            sink: Sink::from_config(sink, config.alerts.timeout, |var| std::env::var(var).ok())
                .await
                .map_err(|e| anyhow::anyhow!(e))?,
            route: sink.route(),
            store: store.clone(),
            index: index.clone(),
            metrics: metrics.clone(),
            timing: config.alerts.clone(),
        });
    }
    let admin = config
        .http
        .admin_access(|var| std::env::var(var).ok())
        .map_err(|e| anyhow::anyhow!("http.admin: {e}"))?;
    if matches!(admin, AdminAccess::Disabled) {
        tracing::warn!(
            listen = %config.http.listen,
            "no http.admin.token and not listening on loopback: POST /-/reload is disabled"
        );
    }
    let webhooks =
        Endpoints::from_config(&config.webhooks.by_kind(), |var| std::env::var(var).ok())
            .map_err(|e| anyhow::anyhow!("webhooks: {e}"))?;
    let triage =
        crate::triage::TriageAccess::from_config(&config.triage, |var| std::env::var(var).ok())
            .map_err(|e| anyhow::anyhow!(e))?;
    let state = AppState {
        index: index.clone(),
        pipeline: pipeline.clone(),
        store,
        metrics: metrics.clone(),
        resolver: wiring.resolver.clone(),
        policy: config.policy.clone(),
        push_enabled: config.pubsub.push.enabled,
        push_verifier,
        pull_status: pull.as_ref().map(PullSource::status),
        webhooks: Arc::new(webhooks),
        reloader: reloader.clone(),
        admin: Arc::new(admin),
        triage: Arc::new(triage),
    };

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("listening on {}", config.http.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "serving HTTP");

    let pull = pull.map(|pull| tokio::spawn(pull.run(pipeline.handler(), shutdown.clone())));
    tokio::spawn(reloader.clone().run(poll_interval, shutdown.clone()));
    tokio::spawn(reload_on_sighup(reloader, shutdown.clone()));
    let sweeps = match (config.scan.interval, wiring.client) {
        (Some(interval), Some(client)) => Some(tokio::spawn(sweep_periodically(
            pipeline.clone(),
            index.clone(),
            client,
            metrics.clone(),
            config.scan.clone(),
            scan::CheckpointAt::for_store(backend, &config.data_dir),
            interval,
            shutdown.clone(),
        ))),
        _ => None,
    };
    // Alerts stop last, after every source, so that what the last events
    // recorded is still sent.
    let alerts_stop = CancellationToken::new();
    let alerts = dispatchers
        .into_iter()
        .map(|d| tokio::spawn(d.run(alerts_stop.clone())))
        .collect::<Vec<_>>();

    let app = router(
        state,
        config.http.body_limit_bytes,
        config.http.request_timeout,
    );
    let limits = ConnectionLimits {
        max_connections: fit_connection_cap(config.http.max_connections),
        header_read_timeout: config.http.header_read_timeout,
    };
    serve(listener, app, limits, metrics.clone(), shutdown.clone()).await;
    if let Some(pull) = pull {
        let stats = pull.await.context("pull source task")??;
        tracing::info!(?stats, "pull source stopped");
    }
    if let Some(sweeps) = sweeps {
        sweeps.await.context("sweep task")?;
    }
    alerts_stop.cancel();
    for task in alerts {
        task.await.context("alert dispatcher task")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP reloads the manifests now, as daemons conventionally do.
async fn reload_on_sighup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP; use POST /-/reload");
        return;
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading manifests");
                // The outcome is logged by the reloader.
                let _ = reloader.request().await;
            }
        }
    }
}

/// Sweeps at startup and then every `interval`; a sweep interrupted by
/// shutdown resumes from its checkpoint at the next start.
#[allow(clippy::too_many_arguments)]
async fn sweep_periodically(
    pipeline: Arc<Pipeline>,
    index: Arc<arc_swap::ArcSwap<crate::index::Index>>,
    client: RegistryClient,
    metrics: Arc<Metrics>,
    config: crate::config::ScanConfig,
    checkpoint: scan::CheckpointAt,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    let options = scan::Options {
        catalog: config.catalog,
        checkpoint,
        max_repositories: config.max_repositories,
        ..scan::Options::default()
    };
    loop {
        let sweep = scan::sweep(
            &pipeline,
            &index,
            &client,
            &config.targets,
            &options,
            Some(&metrics),
        );
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = sweep => match result {
                Ok(summary) => tracing::info!(repositories = summary.repositories,
                    findings = summary.findings.len(), missing = summary.missing,
                    complete = summary.complete, errors = summary.errors.len(), "sweep finished"),
                Err(scan::ScanError::Busy) => tracing::info!(
                    "another process on the findings store is sweeping; skipping this sweep"),
                Err(e) => tracing::error!(error = %e, "sweep failed"),
            },
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
