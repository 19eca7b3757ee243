//! Git repositories and real git servers on loopback for the manifest
//! source tests: `git daemon` (git://), `git http-backend` behind a small
//! CGI server (smart HTTP), and a TCP proxy that counts bytes and can
//! corrupt a pack or stop answering. The test harness uses the `git`
//! program; the service under test must not.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::registry::free_port;
use super::run_ok;

pub fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

/// Runs `git` (with a fixed identity) in `dir` and returns its trimmed
/// output.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = run_ok(
        Command::new("git")
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.invalid",
            ])
            .args(args)
            .current_dir(dir),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A git repository `k8s.io` holding a thin layout with projects `a` and
/// `b` below `registry/`.
pub struct Repo {
    pub dir: PathBuf,
}

impl Repo {
    pub fn new(dir: &Path) -> Repo {
        let repo = Repo {
            dir: dir.join("k8s.io"),
        };
        std::fs::create_dir_all(&repo.dir).unwrap();
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        for project in ["a", "b"] {
            repo.write(
                &format!("registry/manifests/{project}/promoter-manifest.yaml"),
                &format!(
                    "registries:\n- name: staging.example/{project}\n  src: true\n\
                     - name: {project}.example/prod\n"
                ),
            );
        }
        repo.images("a", &[(digest(1), "1.0")]);
        repo.images("b", &[(digest(2), "1.0")]);
        repo.commit("initial promotions");
        repo
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.dir, args)
    }

    pub fn write(&self, path: &str, text: &str) {
        let path = self.dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn images(&self, project: &str, promotions: &[(String, &str)]) {
        let mut text = String::from("- name: app\n  dmap:\n");
        for (d, tag) in promotions {
            text.push_str(&format!("    \"{d}\": [\"{tag}\"]\n"));
        }
        self.write(&format!("registry/images/{project}/images.yaml"), &text);
    }

    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Service configuration following `main` at `url`, manifests below
    /// `registry/`.
    pub fn config_at(url: &str, poll: &str) -> String {
        format!(
            "resolve: false\nmanifests_git:\n  url: {url}\n  branch: main\n  path: registry\n  \
             poll_interval: {poll}\nreload:\n  refresh_min_interval: 0s\n"
        )
    }

    pub fn config(&self, poll: &str) -> String {
        Self::config_at(&self.file_url(), poll)
    }
}

/// Waits until something accepts TCP connections on `port`.
async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `git daemon` serving every repository below `base`; partial-clone
/// filters are allowed only when `filter` is set.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub async fn start(base: &Path, filter: bool) -> GitDaemon {
        let port = free_port();
        let child = Command::new("git")
            .args(["-c", &format!("uploadpack.allowFilter={filter}")])
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--informative-errors",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
            ])
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "git daemon").await;
        GitDaemon { child, port }
    }

    pub fn url(&self, repository: &str) -> String {
        format!("git://127.0.0.1:{}/{repository}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Smart HTTP: each request runs `git http-backend` as a CGI program over
/// the repositories below a root, optionally behind a bearer of
/// `x-access-token:<token>` basic credentials (what GitHub app tokens use).
pub struct HttpBackend {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Cgi {
    root: PathBuf,
    authorization: Option<String>,
}

impl HttpBackend {
    pub async fn start(root: &Path, token: Option<&str>) -> HttpBackend {
        let cgi = Cgi {
            root: root.to_path_buf(),
            authorization: token.map(|t| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{t}"))
                )
            }),
        };
        let app = axum::Router::new().fallback(cgi_request).with_state(cgi);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        HttpBackend { port, task }
    }

    pub fn url(&self, repository: &str) -> String {
        format!("http://127.0.0.1:{}/{repository}", self.port)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn cgi_request(
    axum::extract::State(cgi): axum::extract::State<Cgi>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if let Some(expected) = &cgi.authorization
        && header("authorization") != *expected
    {
        return (
            http::StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"git\"")],
        )
            .into_response();
    }
    let body = axum::body::to_bytes(body, 1 << 30).await.unwrap();
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &cgi.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "uploadpack.allowFilter")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.unwrap();
    writer.await.unwrap();
    // CGI output: header lines, a blank line, the body.
    let out = output.stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            out.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        })
        .expect("CGI headers");
    let mut response = http::Response::builder();
    for line in String::from_utf8_lossy(&out[..split.0]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            response = response.status(value[..3].parse::<u16>().unwrap());
        } else {
            response = response.header(name, value);
        }
    }
    response
        .body(axum::body::Body::from(out[split.1..].to_vec()))
        .unwrap()
}

/// What the proxy does with a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Mode {
    /// Relays both ways, counting bytes.
    Relay = 0,
    /// Relays, but flips a byte inside the first pack the server sends.
    CorruptPack = 1,
    /// Accepts and never answers.
    Hang = 2,
}

/// A TCP proxy in front of a git server.
pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(Mode::Relay as u8));
        let bytes = Arc::new(AtomicU64::new(0));
        let task = {
            let (mode, bytes) = (mode.clone(), bytes.clone());
            tokio::spawn(async move {
                let mut held = Vec::new();
                loop {
                    let (client, _) = listener.accept().await.unwrap();
                    let mode = mode.load(Ordering::SeqCst);
                    if mode == Mode::Hang as u8 {
                        held.push(client);
                        continue;
                    }
                    let bytes = bytes.clone();
                    tokio::spawn(async move {
                        let server = TcpStream::connect(("127.0.0.1", target)).await.unwrap();
                        relay(client, server, mode == Mode::CorruptPack as u8, bytes).await;
                    });
                }
            })
        };
        Proxy {
            port,
            mode,
            bytes,
            task,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Bytes relayed both ways since the last call.
    pub fn take_bytes(&self) -> u64 {
        self.bytes.swap(0, Ordering::SeqCst)
    }

    /// `url` (of the server behind) with the port replaced by the proxy's.
    pub fn url(&self, url: &str, target: u16) -> String {
        url.replace(&format!(":{target}/"), &format!(":{}/", self.port))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, corrupt: bool, bytes: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = {
        let bytes = bytes.clone();
        tokio::spawn(async move {
            let mut buf = vec![0; 64 * 1024];
            while let Ok(n) = client_read.read(&mut buf).await {
                if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                bytes.fetch_add(n as u64, Ordering::SeqCst);
            }
            let _ = server_write.shutdown().await;
        })
    };
    let mut buf = vec![0; 64 * 1024];
    // Stream offset of the byte to flip: past the header of the first pack,
    // inside its first object's data, wherever the reads split the stream.
    let mut flip_at: Option<u64> = None;
    let mut flipped = !corrupt;
    let mut offset = 0u64;
    while let Ok(n) = server_read.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if !flipped {
            if flip_at.is_none()
                && let Some(at) = buf[..n].windows(4).position(|w| w == b"PACK")
            {
                flip_at = Some(offset + at as u64 + 40);
            }
            if let Some(at) = flip_at
                && at < offset + n as u64
            {
                buf[(at - offset) as usize] ^= 0xff;
                flipped = true;
            }
        }
        offset += n as u64;
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = client_write.shutdown().await;
    let _ = up.await;
}

/// Total size of the files below `path` (what `du --apparent-size` says).
pub fn disk_used(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| disk_used(&e.unwrap().path()))
        .sum()
}
