//! `serve`: logging as configured, a runtime, and a clean stop on a signal.

use std::path::Path;
use std::process::ExitCode;

use image_auditor::config::{Config, LogFormat};
use image_auditor::{log, service};
use tokio_util::sync::CancellationToken;

pub(super) fn serve(config_path: Option<&Path>, manifests: Option<&Path>) -> ExitCode {
    let mut config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(manifests) = manifests {
        config.manifests = manifests.to_path_buf();
    }
    let filter = tracing_subscriber::EnvFilter::new(&config.log.filter);
    match config.log.format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .event_format(log::CloudJson(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            ))
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        service::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "service failed");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// SIGTERM (Kubernetes, Cloud Run) or SIGINT (a terminal) starts a clean stop.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    shutdown.cancel();
}
