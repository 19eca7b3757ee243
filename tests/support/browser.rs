//! Headless Chromium driven over WebDriver: Debian's `chromedriver` on a
//! free loopback port, its own process group (so the browsers it starts go
//! with it), a throwaway profile, and a `fantoccini` client.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use super::registry::free_port;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A browser session; [`Browser::close`] ends it, dropping kills it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A session in a 1280×1000 window; with `scripts` false the pages'
    /// own scripts do not run (what a reader without JavaScript sees).
    pub async fn start(scripts: bool) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{CHROMEDRIVER}: {e} (scripts/install-test-deps.sh installs it)")
            });
        let mut browser_args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            // Without these, Chromium keeps trying to reach its services
            // over a network that is not there and stalls.
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if !scripts {
            browser_args.push("--blink-settings=scriptEnabled=false".into());
        }
        let browser = Browser {
            client: connect(port, &browser_args).await,
            driver,
            _profile: profile,
        };
        browser.client.set_window_size(1280, 1000).await.unwrap();
        browser
    }

    /// Ends the session (the browser quits), then the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.unwrap()
    }

    fn stop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started.
        let pgid = i32::try_from(self.driver.id()).unwrap();
        // SAFETY: kill(2) with a process group id this test created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for the driver's `/status` to say ready, then opens a session.
async fn connect(port: u16, args: &[String]) -> Client {
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(r) = http.get(format!("{base}/status")).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["value"]["ready"] == true
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver not ready on {base}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&base)
        .await
        .unwrap_or_else(|e| panic!("a Chromium session through {base}: {e}"))
}
