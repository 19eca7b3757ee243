//! Runs the real `image-auditor serve` binary on a free loopback port with a
//! configuration the test writes, and stops it on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image_auditor::findings::{SqliteStore, Store};

use super::registry::free_port;

const READY_WITHIN: Duration = Duration::from_secs(30);

pub struct Service {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    config: PathBuf,
    /// `PATH` for the process, when it must not inherit the test's.
    path: Option<PathBuf>,
}

impl Service {
    /// Starts `serve` with `extra` YAML appended to a config that listens on
    /// a free port, keeps data in `dir` and reads `manifests`.
    pub async fn start(dir: &Path, manifests: &Path, extra: &str) -> Service {
        Self::start_on(free_port(), dir, manifests, extra).await
    }

    /// [`Service::start`] on a given port (one a registry was told to
    /// notify before the service existed).
    pub async fn start_on(port: u16, dir: &Path, manifests: &Path, extra: &str) -> Service {
        Self::start_with(port, dir, manifests, "", extra, None).await
    }

    /// [`Service::start_on`] with `http` (YAML lines indented by two
    /// spaces) added to the `http` section.
    pub async fn start_with_http(
        port: u16,
        dir: &Path,
        manifests: &Path,
        http: &str,
        extra: &str,
    ) -> Service {
        Self::start_with(port, dir, manifests, http, extra, None).await
    }

    /// [`Service::start`] with a `PATH` holding no programs at all (so no
    /// `git`), to show the service needs none.
    pub async fn start_without_programs(dir: &Path, manifests: &Path, extra: &str) -> Service {
        let empty = dir.join("empty-path");
        std::fs::create_dir_all(&empty).unwrap();
        Self::start_with(free_port(), dir, manifests, "", extra, Some(empty)).await
    }

    /// [`Service::start_without_programs`] for a service whose `extra`
    /// config reads the manifests from git (`manifests_git`): the local
    /// manifests path names nothing and is never read.
    pub async fn start_from_git(dir: &Path, extra: &str) -> Service {
        Self::start_without_programs(dir, &dir.join("unused"), extra).await
    }

    async fn start_with(
        port: u16,
        dir: &Path,
        manifests: &Path,
        http: &str,
        extra: &str,
        path: Option<PathBuf>,
    ) -> Service {
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "manifests: {}\ndata_dir: {}\nhttp:\n  listen: 127.0.0.1:{port}\n{http}log:\n  format: json\n  filter: info\n{extra}",
                manifests.display(),
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut service = Service {
            child: None,
            port,
            dir: dir.to_path_buf(),
            config,
            path,
        };
        service.spawn().await;
        service
    }

    /// Starts the process again with the same configuration and data.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("service.log"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_image-auditor"));
        command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env_remove("IMAGE_AUDITOR_MANIFESTS")
            .env_remove("PORT")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if let Some(path) = &self.path {
            command.env("PATH", path);
        }
        let child = command.spawn().unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(self.url("/healthz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("serve exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "serve not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default()
    }

    /// Sends `signal` (e.g. `-HUP`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(ok.success());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then waits for the exit status (polling, bounded).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the async `condition` until it holds; fails with the log's
    /// tail after a minute.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !condition().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the store holds at least `n` decisions; returns it.
    pub async fn wait_for_decisions(&self, n: u64, within: Duration) -> SqliteStore {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(store) = SqliteStore::open(self.findings_db())
                && store.counts().unwrap().decisions_total() >= n
            {
                return store;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} decisions:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last 40 lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The body of `GET path`, as text.
    pub async fn text(&self, path: &str) -> String {
        reqwest::get(self.url(path))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        self.text("/metrics").await
    }

    /// The value of the first `/metrics` line starting with `line_start`
    /// (name and labels), 0 when there is none yet.
    pub async fn metric(&self, line_start: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Delivers one GCR payload as message `id` through `POST /pubsub/push`
    /// and returns the answer, once the event is recorded.
    pub async fn push_gcr(&self, id: &str, payload: &serde_json::Value) -> serde_json::Value {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(payload.to_string());
        let response = reqwest::Client::new()
            .post(self.url("/pubsub/push"))
            .json(&serde_json::json!({"message": {"data": data, "messageId": id}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "push {id}");
        response.json().await.unwrap()
    }

    /// Reasons of the findings recorded for the manifest set itself
    /// (broken projects, failed syncs), oldest last.
    pub fn manifest_findings(&self) -> Vec<String> {
        SqliteStore::open(self.findings_db())
            .unwrap()
            .findings(&image_auditor::findings::FindingQuery::default())
            .unwrap()
            .into_iter()
            .filter(|f| f.key.source.as_str() == "manifests")
            .map(|f| f.reason)
            .collect()
    }

    pub fn findings_db(&self) -> PathBuf {
        self.dir.join("data/findings.sqlite")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
