//! A real Prometheus Alertmanager (Debian `prometheus-alertmanager`) on a
//! free loopback port, clustering off, state in a temporary directory.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/bin/prometheus-alertmanager";

pub struct Alertmanager {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    pub fn start() -> Alertmanager {
        assert!(
            Path::new(BIN).exists(),
            "{BIN} is missing: apt-get install prometheus-alertmanager"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("alertmanager.yml"),
            "route:\n  receiver: nobody\n  group_wait: 1s\nreceivers:\n- name: nobody\n",
        )
        .unwrap();
        let mut am = Alertmanager {
            child: None,
            port: super::registry::free_port(),
            dir,
        };
        am.spawn();
        am
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(BIN)
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start alertmanager");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if answers_ok(self.port, "/-/ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready:\n{}",
                std::fs::read_to_string(self.dir.path().join("alertmanager.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it, as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (alerts are kept in memory only, so
    /// it comes back empty).
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    /// `GET /api/v2/alerts`.
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        reqwest::get(format!("{}/api/v2/alerts", self.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A plain HTTP/1.0 GET: whether it answers 200.
fn answers_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.stop();
    }
}
