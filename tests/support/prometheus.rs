//! A real Prometheus server (Debian `prometheus`) scraping one `serve` every
//! second, on a free loopback port, with its TSDB in a temporary directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/bin/prometheus";

pub struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(target_port: u16) -> Prometheus {
        assert!(
            std::path::Path::new(BIN).exists(),
            "{BIN} is missing: apt-get install prometheus"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: image-auditor\n  \
                 static_configs:\n  - targets: [\"127.0.0.1:{target_port}\"]\n"
            ),
        )
        .unwrap();
        let port = super::registry::free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(BIN)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query until its single value is `want` (scrapes are
    /// asynchronous), returning the last value seen; panics with the log
    /// after a minute.
    pub async fn query_until(&self, query: &str, want: &str) -> String {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        loop {
            if let Ok(response) = client.get(&url).query(&[("query", query)]).send().await
                && let Ok(body) = response.json::<serde_json::Value>().await
            {
                last = body["data"]["result"][0]["value"][1]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if last == want {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{query} is {last:?}, not {want:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
