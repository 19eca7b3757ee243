//! `store`: the findings store's schema, without starting the service:
//! where it stands (`status`) and bringing it up to date (`migrate`, what
//! `serve` also does when it starts).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use image_auditor::config::{self, Config};
use image_auditor::findings::{self, SchemaStatus, StoreLocation};
use serde_json::json;

/// Which store a `store` command works on.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// The `serve` configuration: its `store` section (or, without one,
    /// its data_dir) names the store.
    #[arg(long, env = "IMAGE_AUDITOR_CONFIG", conflicts_with = "data_dir")]
    pub config: Option<PathBuf>,
    /// Without --config: the SQLite store <data-dir>/findings.sqlite
    /// [default: data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl StoreArgs {
    pub(super) fn location(&self) -> anyhow::Result<StoreLocation> {
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| config::DEFAULT_DATA_DIR.into());
        Ok(Settings::load(self.config.as_deref(), data_dir)?.store_location())
    }
}

/// Where a command that works beside `serve` (`store`, `findings`, `scan`)
/// finds the store and the data directory: the `serve` configuration when
/// one is named, else a data directory alone.
pub(super) enum Settings {
    /// The `serve` configuration: its `store` section, or its data_dir.
    Serve(Box<Config>),
    /// The SQLite store `<data-dir>/findings.sqlite`.
    DataDir(PathBuf),
}

impl Settings {
    /// The configuration at `config` when given, else `data_dir`.
    pub(super) fn load(config: Option<&Path>, data_dir: PathBuf) -> anyhow::Result<Settings> {
        Ok(match config {
            Some(path) => Settings::Serve(Box::new(Config::load(Some(path))?)),
            None => Settings::DataDir(data_dir),
        })
    }

    pub(super) fn store_location(&self) -> StoreLocation {
        match self {
            Settings::Serve(config) => config.store_location(),
            Settings::DataDir(dir) => StoreLocation::Sqlite(config::findings_db(dir)),
        }
    }

    pub(super) fn data_dir(&self) -> &Path {
        match self {
            Settings::Serve(config) => &config.data_dir,
            Settings::DataDir(dir) => dir,
        }
    }
}

/// Prints where the schema stands; exit 1 when it is not up to date.
pub(super) fn status(args: &StoreArgs, json: bool) -> anyhow::Result<ExitCode> {
    let status = findings::schema_status(&args.location()?)?;
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        print_status(&status);
    }
    Ok(if status.up_to_date() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Applies the pending migrations and prints what was applied.
pub(super) fn migrate(args: &StoreArgs, json: bool) -> anyhow::Result<ExitCode> {
    let location = args.location()?;
    let before = findings::schema_status(&location)?;
    // Opening migrates, under the same lock `serve` takes.
    drop(findings::open(&location)?);
    let after = findings::schema_status(&location)?;
    let applied: Vec<_> = before
        .pending
        .iter()
        .filter(|m| m.version <= after.found)
        .collect();
    if json {
        println!(
            "{}",
            json!({ "before": before.found, "after": after, "applied": applied })
        );
    } else if applied.is_empty() {
        println!(
            "{} {}: schema version {}, up to date; nothing to apply",
            after.backend.as_str(),
            after.store,
            after.found
        );
    } else {
        println!(
            "{} {}: schema version {} -> {}",
            after.backend.as_str(),
            after.store,
            before.found,
            after.found
        );
        for m in applied {
            println!("applied {} {}", m.version, m.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(status: &SchemaStatus) {
    println!("store: {} {}", status.backend.as_str(), status.store);
    if status.too_new() {
        println!(
            "schema: version {}, newer than this build knows ({}): use a newer image-auditor",
            status.found, status.known
        );
    } else if status.up_to_date() {
        println!("schema: version {}, up to date", status.found);
    } else {
        println!(
            "schema: version {}, this build knows {}",
            status.found, status.known
        );
        for m in &status.pending {
            println!("pending: {} {}", m.version, m.name);
        }
    }
}
