//! `store.postgres`: where the connection URL comes from, TLS, and the pool.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::Deserialize;
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::findings::StoreError;

/// `store.postgres` in the configuration. The URL itself is never in the
/// file: it carries a password.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// An environment variable holding the connection string: a URL
    /// (`postgres://user:password@host:5432/db?sslmode=require`) or
    /// `key=value` pairs (`host=/cloudsql/PROJECT:REGION:INSTANCE user=…`).
    pub url_env: Option<String>,
    /// A file holding it (a mounted secret); surrounding whitespace is ignored.
    pub url_file: Option<PathBuf>,
    /// Most connections this process holds.
    pub pool_size: usize,
    /// Longest wait to connect, and for a pooled connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// PEM file of the certificate authorities to trust for the server's
    /// TLS certificate, instead of the system's.
    pub ca_file: Option<PathBuf>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url_env: None,
            url_file: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::PostgresConfig {
        message: message.into(),
    }
}

impl PostgresConfig {
    /// What can be checked without reading the secret.
    pub fn validate(&self) -> Result<(), StoreError> {
        match (&self.url_env, &self.url_file) {
            (None, None) => return Err(invalid("set url_env or url_file")),
            (Some(_), Some(_)) => return Err(invalid("set url_env or url_file, not both")),
            _ => {}
        }
        if self.pool_size < 2 {
            // One for the group-commit writer, one for everything else.
            return Err(invalid("pool_size must be at least 2"));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout must be more than 0"));
        }
        Ok(())
    }

    /// The connection string, read now from where the configuration says.
    pub fn url(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, StoreError> {
        self.validate()?;
        let url = match (&self.url_env, &self.url_file) {
            (Some(var), _) => env(var).ok_or_else(|| {
                invalid(format!("url_env: environment variable {var} is not set"))
            })?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("url_file: cannot read {}: {e}", path.display())))?,
            (None, None) => unreachable!("validated"),
        };
        let url = url.trim();
        if url.is_empty() {
            return Err(invalid(format!(
                "the connection string in {} is empty",
                self.origin()
            )));
        }
        Ok(url.to_owned())
    }

    /// Where the connection string comes from, for messages.
    fn origin(&self) -> String {
        match (&self.url_env, &self.url_file) {
            (Some(var), _) => format!("environment variable {var}"),
            (None, Some(path)) => format!("file {}", path.display()),
            (None, None) => "nowhere".into(),
        }
    }
}

/// A parsed connection string and the store's name for messages (without
/// the password).
pub(super) fn parse(
    config: &PostgresConfig,
    url: &str,
) -> Result<(tokio_postgres::Config, Arc<str>), StoreError> {
    // The parser's messages name options, never their values.
    let mut pg = tokio_postgres::Config::from_str(url).map_err(|e| {
        invalid(format!(
            "the connection string in {} is not one PostgreSQL accepts: {}",
            config.origin(),
            super::chain(&e)
        ))
    })?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(config.connect_timeout);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("image-auditor");
    }
    let name = display_name(&pg);
    Ok((pg, name.into()))
}

/// `postgres://user@host:port/db`: what messages and logs call the store.
pub(super) fn display_name(pg: &tokio_postgres::Config) -> String {
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let user = pg.get_user().unwrap_or("");
    format!(
        "postgres://{user}@{}/{}",
        hosts.join(","),
        pg.get_dbname().unwrap_or(user)
    )
}

/// TLS with rustls, verifying the server against `ca_file` or the system's
/// roots. Used when the connection string's `sslmode` is `prefer` (the
/// default: TLS when the server offers it) or `require`; never on a unix
/// socket.
fn tls(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad =
                |e: &dyn std::fmt::Display| invalid(format!("ca_file {}: {e}", path.display()));
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no PEM certificate in it"));
            }
        }
        None => {
            // Unreadable entries are skipped: one bad file in the system
            // store must not stop every connection.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The pool: connections made on demand, up to `pool_size`, and dropped
/// when found closed (the server restarted) so the next use reconnects.
pub(super) fn pool(
    config: &PostgresConfig,
    pg: tokio_postgres::Config,
) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        pg,
        tls(config.ca_file.as_deref())?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let wait = Some(config.connect_timeout);
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(wait)
        .create_timeout(wait)
        .recycle_timeout(wait)
        .build()
        .map_err(|e| invalid(format!("connection pool: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url_env: Option<&str>) -> PostgresConfig {
        PostgresConfig {
            url_env: url_env.map(str::to_owned),
            ..PostgresConfig::default()
        }
    }

    #[test]
    fn the_name_in_messages_has_no_password() {
        let c = config(Some("DB"));
        let (_, name) = parse(&c, "postgres://auditor:s3cret@db.internal:6432/findings").unwrap();
        assert_eq!(&*name, "postgres://auditor@db.internal:6432/findings");
        let (_, name) = parse(
            &c,
            "host=/cloudsql/p:europe-west1:i user=auditor password=s3cret dbname=findings",
        )
        .unwrap();
        assert_eq!(
            &*name,
            "postgres://auditor@/cloudsql/p:europe-west1:i:5432/findings"
        );
        let err = parse(&c, "postgres://auditor:s3cret@db/x?sslmode=sometimes").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("environment variable DB"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn the_url_comes_from_one_place() {
        let env = |var: &str| (var == "DB").then(|| " postgres://u@h/d\n".to_string());
        assert_eq!(config(Some("DB")).url(env).unwrap(), "postgres://u@h/d");
        let err = config(Some("NOPE")).url(env).unwrap_err();
        assert!(err.to_string().contains("NOPE is not set"), "{err}");
        assert!(config(None).validate().is_err());
        let both = PostgresConfig {
            url_file: Some("/x".into()),
            ..config(Some("DB"))
        };
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let tiny = PostgresConfig {
            pool_size: 1,
            ..config(Some("DB"))
        };
        assert!(tiny.validate().is_err());
    }
}
