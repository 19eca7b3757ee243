//! A real CNCF distribution registry (Debian's `docker-registry`) on a free
//! loopback port, and skopeo to push to it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image_auditor::reference::Digest;

use super::oci::{Desc, Layout, OCI_MANIFEST};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const READY_WITHIN: Duration = Duration::from_secs(30);

pub enum Auth {
    Anonymous,
    /// `auth.htpasswd` with one bcrypt user.
    Htpasswd {
        user: String,
        password: String,
    },
    /// `auth.token`: JWTs from `realm`, signed by the key of `cert`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert: PathBuf,
    },
}

pub struct Registry {
    child: Child,
    pub host: String,
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits until `/v2/` answers. Retries on a new
    /// port if another process took the free port first.
    pub fn start(auth: Auth) -> Self {
        Self::start_with(auth, "")
    }

    /// [`Registry::start`] with `extra` appended to its config.yml (for
    /// `notifications:`).
    pub fn start_with(auth: Auth, extra: &str) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: apt-get install docker-registry skopeo"
        );
        let dir = tempfile::tempdir().unwrap();
        let auth_yaml = match &auth {
            Auth::Anonymous => String::new(),
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(password, 4).unwrap();
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token {
                realm,
                service,
                issuer,
                cert,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-only-secret\n{auth_yaml}{extra}",
                    dir.path().join("storage").display()
                ),
            )
            .unwrap();
            let log_path = dir.path().join("registry.log");
            let mut child = spawn(dir.path());
            if wait_ready(&mut child, port) {
                return Self {
                    child,
                    host: format!("127.0.0.1:{port}"),
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("docker-registry did not become ready:\n{last_log}");
    }

    /// A registry whose `notifications:` go to the distribution webhook of
    /// a `serve` on `service_port` (which may start later), with `token` as
    /// its bearer token and a short backoff, so that deliveries resume
    /// quickly after an outage.
    pub fn notifying(service_port: u16, token: &str) -> Self {
        Self::start_with(
            Auth::Anonymous,
            &format!(
                "notifications:\n  endpoints:\n  - name: auditor\n    \
                 url: http://127.0.0.1:{service_port}/webhooks/distribution\n    \
                 headers:\n      Authorization: [Bearer {token}]\n    \
                 timeout: 2s\n    threshold: 3\n    backoff: 500ms\n"
            ),
        )
    }

    pub fn repo(&self, path: &str) -> image_auditor::reference::Repository {
        format!("{}/{path}", self.host).parse().unwrap()
    }

    /// Kills the registry (as an outage would) and waits for it to exit, so
    /// that its port refuses connections from now on.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry again after [`Registry::stop`], on the same port
    /// and with the same storage: the outage is over.
    pub fn restart(&mut self) {
        let port = self.host.rsplit_once(':').unwrap().1.parse().unwrap();
        self.child = spawn(self.dir.path());
        assert!(
            wait_ready(&mut self.child, port),
            "docker-registry did not restart on {}:\n{}",
            self.host,
            std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
        );
    }
}

/// Runs `docker-registry serve` on the config.yml in `dir`, logging to
/// registry.log there.
fn spawn(dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start docker-registry")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `GET /v2/` until it answers with any HTTP status (401 counts: an
/// auth-protected registry is up), or the process exits, or time runs out.
fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + READY_WITHIN;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let request = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
            let mut response = [0u8; 12];
            if s.write_all(request.as_bytes()).is_ok()
                && s.read_exact(&mut response).is_ok()
                && response.starts_with(b"HTTP/1.")
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Options of one `skopeo copy`.
#[derive(Default)]
pub struct Push<'a> {
    /// `user:password` for the destination.
    pub creds: Option<&'a str>,
    /// Convert to Docker schema 2 (a manifest list for an index); digests
    /// change, so they cannot be preserved.
    pub docker_v2s2: bool,
}

/// `skopeo copy --all oci:<layout>:<tag> docker://<host>/<repo>:<tag>`;
/// returns the digest of what was pushed, as skopeo reports it.
pub fn skopeo_push(layout: &Path, tag: &str, host: &str, repo: &str, opts: Push<'_>) -> Digest {
    let digest_file = layout.join(format!("pushed-{tag}.digest"));
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--all", "--dest-tls-verify=false"]);
    if opts.docker_v2s2 {
        cmd.args(["--format", "v2s2"]);
    } else {
        cmd.arg("--preserve-digests");
    }
    if let Some(creds) = opts.creds {
        cmd.arg("--dest-creds").arg(creds);
    }
    cmd.arg("--digestfile").arg(&digest_file);
    cmd.arg(format!("oci:{}:{tag}", layout.display()));
    cmd.arg(format!("docker://{host}/{repo}:{tag}"));
    run(&mut cmd);
    std::fs::read_to_string(&digest_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// [`skopeo_push`] with the default options: `tag` of `layout`, digests
/// preserved, to an anonymous registry.
pub fn push_tag(layout: &Layout, tag: &str, host: &str, repo: &str) -> Digest {
    skopeo_push(&layout.dir, tag, host, repo, Push::default())
}

/// A real anonymous registry and a scratch directory with an empty OCI
/// layout in `<work>/layout`: what a test builds images in and pushes from.
/// Keep `work` bound while the layout is used: dropping it deletes the layout.
pub struct Workbench {
    pub reg: Registry,
    pub work: tempfile::TempDir,
    pub layout: Layout,
}

impl Workbench {
    pub fn start() -> Self {
        let reg = Registry::start(Auth::Anonymous);
        let work = tempfile::tempdir().unwrap();
        let layout = Layout::create(&work.path().join("layout"));
        Workbench { reg, work, layout }
    }
}

/// The manifest bytes the registry stores for `reference`, read by skopeo
/// (an independent client), so tests do not check the client with itself.
pub fn skopeo_raw(reference: &str, creds: Option<&str>) -> Vec<u8> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(creds) = creds {
        cmd.arg("--creds").arg(creds);
    }
    cmd.arg(format!("docker://{reference}"));
    run(&mut cmd)
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is skopeo installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Uploads one blob to `repo` (POST, then a monolithic PUT), so that a
/// manifest referring to it can be PUT there under its digest, untagged.
pub async fn put_blob(host: &str, repo: &str, bytes: Vec<u8>) {
    let http = reqwest::Client::new();
    let start = format!("http://{host}/v2/{repo}/blobs/uploads/");
    let response = http.post(&start).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202, "POST {start}");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with('/') {
        format!("http://{host}{location}")
    } else {
        location
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let digest = Digest::sha256_of(&bytes);
    let url = format!("{location}{separator}digest={digest}");
    let response = http.put(&url).body(bytes).send().await.unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "PUT {url}: {status} {}",
        response.text().await.unwrap_or_default()
    );
}

/// PUTs manifest bytes as they are, for what skopeo 1.9 cannot push: it
/// refuses an index whose entry is another index ("Unexpectedly received a
/// manifest list instead of a manifest for a single image"). The registry
/// still checks that every entry already exists in the repository.
pub async fn put_manifest(host: &str, repo: &str, tag: &str, media_type: &str, bytes: Vec<u8>) {
    let url = format!("http://{host}/v2/{repo}/manifests/{tag}");
    let response = reqwest::Client::new()
        .put(&url)
        .header("Content-Type", media_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "PUT {url}: {status} {}",
        response.text().await.unwrap_or_default()
    );
}

/// PUTs the manifest of `desc`, written in `layout`, to `repo` under `tag`
/// (moving the tag if it exists).
pub async fn put_tagged(host: &str, layout: &Layout, repo: &str, tag: &str, desc: &Desc) {
    put_manifest(host, repo, tag, desc.media_type, layout.read(desc)).await;
}

/// `DELETE /v2/<repo>/manifests/<digest>` (the registry enables deletes).
pub async fn delete_manifest(host: &str, repo: &str, digest: &Digest) {
    let url = format!("http://{host}/v2/{repo}/manifests/{digest}");
    let response = reqwest::Client::new().delete(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202, "DELETE {url}");
}

/// Pushes an OCI manifest written in `layout` to `repo` under its own
/// digest, with no tag: its blobs first, then the manifest by digest.
pub async fn push_untagged(host: &str, layout: &Layout, repo: &str, desc: &Desc) {
    let bytes = layout.read(desc);
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let blobs = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|b| b["digest"].as_str().unwrap().parse::<Digest>().unwrap());
    for blob in blobs {
        let blob = std::fs::read(layout.dir.join("blobs/sha256").join(blob.hex())).unwrap();
        put_blob(host, repo, blob).await;
    }
    put_manifest(host, repo, &desc.digest.to_string(), OCI_MANIFEST, bytes).await;
}
