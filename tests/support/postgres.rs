//! A real PostgreSQL server for integration tests: Debian's binaries (the
//! newest under `/usr/lib/postgresql/*/bin`), a cluster made by `initdb` in
//! a temporary directory, listening on a free loopback port and on a unix
//! socket in that directory. PostgreSQL refuses to run as root, so as root
//! the cluster belongs to an unprivileged system user
//! ([`UNPRIVILEGED_USER`], created on first use) and runs under `runuser`.
//!
//! The server runs under a small `sh` watchdog that stops it (fast
//! shutdown) as soon as its stdin closes: when the [`Postgres`] is stopped
//! or dropped, or when the test process exits in any way (the
//! [`Postgres::shared`] server of a test binary is a static, never dropped).
//! Readiness is `pg_isready`, polled.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::registry::free_port;
use super::run_ok;
use super::watchdog::Watched;

/// Who owns and runs the test clusters when the tests run as root.
pub const UNPRIVILEGED_USER: &str = "image-auditor-test";
/// The cluster's superuser (trust authentication on loopback and socket).
pub const SUPERUSER: &str = "postgres";
const START_DEADLINE: Duration = Duration::from_secs(60);

pub struct Postgres {
    pub port: u16,
    /// Where the server's unix socket is (`.s.PGSQL.<port>`).
    pub socket_dir: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// `Some` when running as root.
    user: Option<&'static str>,
    /// fsync and full-page writes on (see [`Postgres::start_durable`]).
    durable: bool,
    running: Option<Watched>,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// The server of this test binary, started on first use. Give each
    /// test its own database ([`Postgres::fresh_database`]).
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    /// A new cluster, started. Panics with the log when it does not start.
    pub fn start() -> Postgres {
        Self::start_with(false)
    }

    /// [`Postgres::start`] with fsync and full-page writes on, as a
    /// production server commits: for benchmarks, whose figures are
    /// compared with SQLite's `synchronous=FULL`.
    pub fn start_durable() -> Postgres {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Postgres {
        let bin = newest_bin_dir();
        let user = running_as_root().then(ensure_unprivileged_user);
        let dir = tempfile::tempdir().unwrap();
        if let Some(user) = user {
            run_ok(Command::new("chown").arg(user).arg(dir.path()));
        }
        let data = dir.path().join("data");
        run_ok(
            as_user(user, &bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"]),
        );
        let mut pg = Postgres {
            port: 0,
            socket_dir: dir.path().to_path_buf(),
            log: dir.path().join("postgres.log"),
            bin,
            data,
            user,
            durable,
            running: None,
            dir,
        };
        let mut last = String::new();
        // A free port can be taken between probing and binding: retry.
        for _ in 0..3 {
            pg.port = free_port();
            match pg.try_run() {
                Ok(()) => return pg,
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// Starts the server again after [`Postgres::stop`], on the same port
    /// and data.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "still running");
        if let Err(e) = self.try_run() {
            panic!("PostgreSQL did not start again: {e}");
        }
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits
    /// until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.close();
            running.wait();
        }
    }

    fn try_run(&mut self) -> Result<(), String> {
        // Prints the server's pid, then waits for stdin to close and stops
        // it. `exec`-free: `$!` is the postmaster itself.
        let script = r#"
            "$0" -D "$1" -p "$2" -k "$3" -c listen_addresses=127.0.0.1 \
                -c fsync="$5" -c full_page_writes="$5" -c max_connections=200 \
                >>"$4" 2>&1 </dev/null &
            pid=$!
            echo "$pid"
            trap 'kill -INT "$pid" 2>/dev/null' EXIT
            read -r _ignored
            kill -INT "$pid" 2>/dev/null
            wait "$pid"
        "#;
        self.running = Some(Watched::spawn(
            as_user(self.user, Path::new("sh"))
                .arg("-c")
                .arg(script)
                .arg(self.bin.join("postgres"))
                .arg(&self.data)
                .arg(self.port.to_string())
                .arg(&self.socket_dir)
                .arg(&self.log)
                .arg(if self.durable { "on" } else { "off" }),
        )?);
        let started = Instant::now();
        loop {
            if self.ready() {
                return Ok(());
            }
            if !self.alive() || started.elapsed() > START_DEADLINE {
                let tail = self.log_tail(30);
                self.stop();
                return Err(format!(
                    "port {}, after {:?}; log tail:\n{tail}",
                    self.port,
                    started.elapsed()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `pg_isready` says the server accepts connections.
    pub fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-t", "1", "-p"])
            .arg(self.port.to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn alive(&self) -> bool {
        self.running.as_ref().is_some_and(Watched::server_alive)
    }

    /// A connection URL over loopback TCP.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A connection string over the unix socket, as Cloud SQL's
    /// `host=/cloudsql/…` is.
    pub fn socket_url(&self, database: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={database}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// A new, empty database on this server; its name.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs `sql` with `psql` in `database`; its output (unaligned, tuples
    /// only). Panics when it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = run_ok(
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                ])
                .args(["-U", SUPERUSER, "-p"])
                .arg(self.port.to_string())
                .args(["-d", database, "-c", sql]),
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The directory the cluster lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/usr/lib/postgresql/<newest>/bin`.
fn newest_bin_dir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").unwrap_or_else(|e| {
        panic!("/usr/lib/postgresql: {e}: install `postgresql` (scripts/install-test-deps.sh)")
    });
    versions
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .expect("no PostgreSQL server under /usr/lib/postgresql/*/bin")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The unprivileged user, created when missing. Test binaries run in
/// parallel: a user another one created meanwhile is as good.
fn ensure_unprivileged_user() -> &'static str {
    let exists = || {
        Command::new("getent")
            .args(["passwd", UNPRIVILEGED_USER])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !exists() {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(UNPRIVILEGED_USER)
            .status();
        assert!(exists(), "cannot create the user {UNPRIVILEGED_USER}");
    }
    UNPRIVILEGED_USER
}

/// `program` run as `user` (through `runuser`), or as whoever we are.
fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        None => Command::new(program),
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
    }
}
