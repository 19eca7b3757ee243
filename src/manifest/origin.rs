//! Where a manifest set comes from: a local directory, or a branch of a git
//! repository followed in process (gitoxide; no `git` program is needed).
//! `sync` brings the files up to date and says which version they are, so
//! that a reload can tell whether anything changed.
//!
//! A remote branch is fetched shallow (the tip commit only) into a bare
//! repository, and only the manifest `path` of the tip is written out as
//! files; a poll that finds the tip unchanged stops after the reference
//! listing. A `file://` repository is read in place.

use std::net::{TcpStream, ToSocketAddrs};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gix::ObjectId;
use gix::protocol::transport::client::TransportWithoutIO as _;
use gix::protocol::transport::client::blocking_io::Transport;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::walk::{Budget, OverBudget, WalkError, walk};

/// `manifests_git` in the service configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// `https://…`, `http://…`, `git://…` or `file:///…`.
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    /// The manifest root inside the repository (`registry.k8s.io` in
    /// kubernetes/k8s.io); empty for the repository root.
    #[serde(default)]
    pub path: PathBuf,
    /// How often the branch is fetched. Default `1m`.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Longest time one sync (connect, list, fetch, write out) may take;
    /// also the socket read/write timeout. Default `2m`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Name of an environment variable holding a token for a private
    /// repository over https (sent as `x-access-token:<token>`).
    #[serde(default)]
    pub token_env: Option<String>,
    /// A file holding that token, read at every sync so that a rotated
    /// token (GitHub app tokens live an hour) is picked up.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The most one sync may receive from the server, and the most the
    /// manifest tree it writes out may hold. Default 256 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_branch() -> String {
    "main".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_max_bytes() -> u64 {
    256 << 20
}

/// A version of the files: the git commit, or for a directory a digest of
/// every file's path, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Commit(String),
    Files(String),
}

impl Version {
    pub fn commit(&self) -> Option<&str> {
        match self {
            Version::Commit(c) => Some(c),
            Version::Files(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("git {url}: {message}")]
    Git { url: String, message: String },
    #[error("git {url}: no answer within {timeout:?}; abandoned")]
    Timeout { url: String, timeout: Duration },
    #[error(
        "git {url}: more than {limit} bytes to fetch or write (manifests_git.max_bytes); refused"
    )]
    TooLarge { url: String, limit: u64 },
    // Not named `source`, so error chains do not print it twice.
    #[error("reading {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    OverBudget(OverBudget),
}

impl From<WalkError> for OriginError {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::Io { path, error } => OriginError::Io { path, error },
            WalkError::OverBudget(over) => OriginError::OverBudget(over),
        }
    }
}

pub enum ManifestOrigin {
    /// Files on disk, checked for changes by their fingerprint.
    Directory(PathBuf),
    /// A branch of a git repository; the manifest tree is written below
    /// `checkout`.
    Git {
        config: GitConfig,
        checkout: PathBuf,
    },
}

impl ManifestOrigin {
    /// The manifest root to load.
    pub fn root(&self) -> PathBuf {
        match self {
            ManifestOrigin::Directory(path) => path.clone(),
            ManifestOrigin::Git { config, checkout } => checkout.join(TREE_DIR).join(&config.path),
        }
    }

    pub fn is_git(&self) -> bool {
        matches!(self, ManifestOrigin::Git { .. })
    }

    /// Brings the files up to date (fetch for git) and returns their
    /// version. A directory is walked within `budget`.
    pub async fn sync(&self, budget: &Budget) -> Result<Version, OriginError> {
        match self {
            ManifestOrigin::Directory(path) => {
                let (path, budget) = (path.clone(), *budget);
                tokio::task::spawn_blocking(move || fingerprint(&path, &budget))
                    .await
                    .map_err(|e| OriginError::Io {
                        path: PathBuf::new(),
                        error: std::io::Error::other(e),
                    })?
                    .map(Version::Files)
            }
            ManifestOrigin::Git { config, checkout } => {
                sync_git(config, checkout).await.map(Version::Commit)
            }
        }
    }
}

/// Below the checkout: the written-out manifest tree and the commit it was
/// written from.
const TREE_DIR: &str = "tree";
const TREE_COMMIT: &str = "tree.commit";

/// A sync abandoned at its deadline may still be running: each sync
/// writes to its own scratch directories, and swaps the tree in only if it
/// was not abandoned.
fn scratch_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "scratch-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the blocking sync on its own thread under the deadline. Past the
/// deadline the sync is told to stop and abandoned; its sockets time out
/// shortly after, so a server that never answers cannot keep it forever.
async fn sync_git(config: &GitConfig, checkout: &Path) -> Result<String, OriginError> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let task = {
        let (config, checkout, interrupt) =
            (config.clone(), checkout.to_path_buf(), interrupt.clone());
        tokio::task::spawn_blocking(move || sync_blocking(&config, &checkout, &interrupt))
    };
    match tokio::time::timeout(config.command_timeout, task).await {
        Ok(joined) => joined.map_err(|e| git_error(config, describe(&e)))?,
        Err(_) => {
            interrupt.store(true, Ordering::Relaxed);
            Err(OriginError::Timeout {
                url: shown_url(&config.url),
                timeout: config.command_timeout,
            })
        }
    }
}

fn git_error(config: &GitConfig, message: impl std::fmt::Display) -> OriginError {
    OriginError::Git {
        url: shown_url(&config.url),
        message: message.to_string(),
    }
}

fn too_large(config: &GitConfig) -> OriginError {
    OriginError::TooLarge {
        url: shown_url(&config.url),
        limit: config.max_bytes,
    }
}

/// Bytes one sync may still receive.
struct ByteBudget {
    left: u64,
    spent: bool,
}

impl ByteBudget {
    fn new(limit: u64) -> ByteBudget {
        ByteBudget {
            left: limit,
            spent: false,
        }
    }

    fn spend(&mut self, n: usize) {
        match self.left.checked_sub(n as u64) {
            Some(left) => self.left = left,
            None => {
                self.left = 0;
                self.spent = true;
            }
        }
    }

    fn check(&self) -> std::io::Result<()> {
        if self.spent {
            Err(std::io::Error::other("manifests_git.max_bytes reached"))
        } else {
            Ok(())
        }
    }
}

/// A pack stream that fails once the sync's budget is spent, so a huge
/// commit cannot fill the disk (or, on Cloud Run, the memory).
struct Bounded<'a> {
    inner: &'a mut dyn std::io::BufRead,
    budget: &'a mut ByteBudget,
}

impl std::io::Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.budget.check()?;
        let n = self.inner.read(buf)?;
        self.budget.spend(n);
        self.budget.check().map(|()| n)
    }
}

impl std::io::BufRead for Bounded<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.budget.check()?;
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
        self.budget.spend(amount);
    }
}

/// The URL without credentials written into it (`https://user:secret@…`):
/// errors end up in findings and logs.
fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// An error with its causes: gitoxide's own text is often only the step
/// that failed.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OriginError + '_ {
    move |error| OriginError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn sync_blocking(
    config: &GitConfig,
    checkout: &Path,
    interrupt: &AtomicBool,
) -> Result<String, OriginError> {
    let url = gix::url::parse(gix::bstr::BStr::new(config.url.as_bytes()))
        .map_err(|e| git_error(config, describe(&e)))?;
    // A checkout left by the former `git clone` implementation.
    if checkout.join(".git").exists() {
        std::fs::remove_dir_all(checkout).map_err(io_error(checkout))?;
    }
    std::fs::create_dir_all(checkout).map_err(io_error(checkout))?;
    remove_stale_scratch(checkout);
    let written = std::fs::read_to_string(checkout.join(TREE_COMMIT))
        .ok()
        .filter(|_| checkout.join(TREE_DIR).is_dir())
        .and_then(|c| ObjectId::from_hex(c.trim().as_bytes()).ok());
    if url.scheme == gix::url::Scheme::File {
        let repo = open(&url.path.to_string()).map_err(|e| git_error(config, describe(&e)))?;
        let tip = branch_tip(&repo, &format!("refs/heads/{}", config.branch))
            .map_err(|e| git_error(config, describe(&e)))?
            .ok_or_else(|| git_error(config, format!("no branch {}", config.branch)))?;
        if written != Some(tip) {
            write_tree(config, checkout, &repo, tip, config.max_bytes, interrupt)?;
        }
        return Ok(tip.to_string());
    }
    let mut wire = Wire::connect(config, &url).map_err(|e| git_error(config, e))?;
    let mut budget = ByteBudget::new(config.max_bytes);
    let tip = wire.tip(&config.branch).map_err(|e| git_error(config, e))?;
    if written == Some(tip) {
        return Ok(tip.to_string());
    }
    // Objects are fetched into a scratch repository that lives only until
    // the tree is written out: nothing accumulates between syncs.
    let scratch = checkout.join(scratch_name());
    let result = init_bare(&scratch)
        .map_err(|e| describe(&e))
        .and_then(|repo| {
            wire.fetch_manifest_tree(&repo, tip, &config.path, &mut budget, interrupt)?;
            Ok(repo)
        })
        .map_err(|e| {
            if budget.spent {
                too_large(config)
            } else {
                git_error(config, e)
            }
        })
        .and_then(|repo| write_tree(config, checkout, &repo, tip, config.max_bytes, interrupt));
    let _ = std::fs::remove_dir_all(&scratch);
    result.map(|()| tip.to_string())
}

/// Scratch directories another process (a crash) left behind.
fn remove_stale_scratch(checkout: &Path) {
    let ours = format!("scratch-{}-", std::process::id());
    for entry in std::fs::read_dir(checkout).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("scratch-") && !name.starts_with(&ours) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn open(path: &dyn AsRef<Path>) -> gix::Result<gix::Repository> {
    // Isolated: no system or user git configuration (finding it would run
    // the `git` program), no credential helpers.
    gix::open_opts(path.as_ref(), gix::open::Options::isolated())
}

fn init_bare(path: &Path) -> gix::Result<gix::Repository> {
    Ok(gix::ThreadSafeRepository::init_opts(
        path,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        gix::open::Options::isolated(),
    )?
    .to_thread_local())
}

fn branch_tip(repo: &gix::Repository, name: &str) -> gix::Result<Option<ObjectId>> {
    Ok(repo
        .try_find_reference(name)?
        .and_then(|r| r.target().try_id().map(ToOwned::to_owned)))
}

/// Sockets give up a little after the sync's deadline, so that the
/// deadline is what reports a silent server and the abandoned thread ends.
fn socket_timeout(config: &GitConfig) -> Duration {
    config.command_timeout + Duration::from_secs(5)
}

type BoxedTransport = Box<dyn Transport + Send>;

/// A connection to a remote repository after the protocol handshake.
struct Wire {
    transport: BoxedTransport,
    handshake: gix::protocol::Handshake,
}

fn agent() -> gix::protocol::command::Feature {
    (
        "agent",
        Some(concat!("image-auditor/", env!("CARGO_PKG_VERSION")).into()),
    )
}

impl Wire {
    fn connect(config: &GitConfig, url: &gix::Url) -> Result<Wire, String> {
        use gix::protocol::transport::client::blocking_io::http;
        let mut transport: BoxedTransport = match &url.scheme {
            gix::url::Scheme::Git => Box::new(git_daemon(url, socket_timeout(config))?),
            gix::url::Scheme::Http | gix::url::Scheme::Https => {
                let mut transport = http::connect::<http::reqwest::Remote>(
                    url.clone(),
                    gix::protocol::transport::Protocol::V2,
                    false,
                );
                transport
                    .configure(&http_options(socket_timeout(config), token(config, url)?))
                    .map_err(|e| describe(&e))?;
                Box::new(transport)
            }
            other => {
                return Err(format!(
                    "{} URLs are not supported; use https://, git:// or file://",
                    other.as_str()
                ));
            }
        };
        let handshake = gix::protocol::handshake(
            &mut transport,
            gix::protocol::transport::Service::UploadPack,
            // Never ask git's credential helpers (they run `git`): a token
            // is sent up front when configured.
            |_| Ok(None),
            Vec::new(),
            &mut gix::progress::Discard,
        )
        .map_err(|e| describe(&e))?;
        Ok(Wire {
            transport,
            handshake,
        })
    }

    /// Whether the server takes `filter` (partial clone) in `fetch`.
    fn filters(&self) -> bool {
        self.handshake.server_protocol_version == gix::protocol::transport::Protocol::V2
            && self
                .handshake
                .capabilities
                .capability("fetch")
                .and_then(|c| c.supports("filter"))
                .unwrap_or(false)
    }

    /// The commit the branch points to, listing only that reference.
    fn tip(&mut self, branch: &str) -> Result<ObjectId, String> {
        let name = format!("refs/heads/{branch}");
        let refs = match self.handshake.refs.take() {
            // Protocol v0/v1 servers list every reference in the handshake.
            Some(refs) => refs,
            None => {
                let mut prefixes = gix::protocol::ls_refs::RefPrefixes::new();
                prefixes.extend([gix::bstr::BString::from(name.as_str())]);
                gix::protocol::LsRefsCommand::new(
                    Some(prefixes),
                    &self.handshake.capabilities,
                    agent(),
                )
                .invoke_blocking(&mut self.transport, &mut gix::progress::Discard, false)
                .map_err(|e| describe(&e))?
            }
        };
        refs.iter()
            .find_map(|r| match r.unpack() {
                (n, Some(target), _) if n == name.as_str() => Some(target.to_owned()),
                _ => None,
            })
            .ok_or_else(|| format!("no branch {branch}"))
    }

    /// Fetches commit `tip` and the tree at `path` in it into `repo`.
    /// Where the server filters, that is the commit alone, then each tree
    /// on the way to `path` alone, then the manifest tree whole; other
    /// servers send the tip commit with its whole tree (depth 1).
    fn fetch_manifest_tree(
        &mut self,
        repo: &gix::Repository,
        tip: ObjectId,
        path: &Path,
        budget: &mut ByteBudget,
        interrupt: &AtomicBool,
    ) -> Result<(), String> {
        if !self.filters() {
            return self.fetch(repo, tip, None, true, budget, interrupt);
        }
        self.fetch(repo, tip, Some("tree:0"), true, budget, interrupt)?;
        let mut tree = repo
            .find_commit(tip)
            .and_then(|c| c.tree_id())
            .map_err(|e| format!("commit {tip}: {e}"))?
            .detach();
        for component in path.components() {
            self.fetch(repo, tree, Some("tree:1"), false, budget, interrupt)?;
            let name = component.as_os_str().to_string_lossy();
            tree = repo
                .find_tree(tree)
                .map_err(|e| describe(&e))?
                .find_entry(name.as_ref())
                .filter(|e| e.mode().is_tree())
                .map(|e| e.object_id())
                .ok_or_else(|| format!("commit {tip} has no {}", path.display()))?;
        }
        self.fetch(repo, tree, None, false, budget, interrupt)
    }

    fn fetch(
        &mut self,
        repo: &gix::Repository,
        want: ObjectId,
        filter: Option<&str>,
        shallow: bool,
        budget: &mut ByteBudget,
        interrupt: &AtomicBool,
    ) -> Result<(), String> {
        use gix::protocol::fetch;
        let pack_dir = repo.git_dir().join("objects").join("pack");
        let shallow = if shallow {
            fetch::Shallow::DepthAtRemote(NonZeroU32::MIN)
        } else {
            fetch::Shallow::NoChange
        };
        gix::protocol::fetch(
            &mut Want { id: want, filter },
            |pack, progress, interrupt| {
                // No object may inflate past the budget either.
                let alloc_limit_bytes = usize::try_from(budget.left).ok();
                gix::odb::pack::Bundle::write_to_directory(
                    &mut Bounded {
                        inner: pack,
                        budget: &mut *budget,
                    },
                    Some(&pack_dir),
                    progress,
                    interrupt,
                    None::<gix::objs::find::Never>,
                    repo.object_hash(),
                    gix::odb::pack::bundle::write::Options {
                        alloc_limit_bytes,
                        ..Default::default()
                    },
                )
                .map(|_| true)
            },
            gix::progress::Discard,
            interrupt,
            fetch::Context {
                handshake: &mut self.handshake,
                transport: &mut self.transport,
                user_agent: agent(),
                trace_packetlines: false,
            },
            fetch::Options {
                shallow_file: repo.shallow_file().map_err(|e| describe(&e))?,
                shallow: &shallow,
                tags: fetch::Tags::None,
                reject_shallow_remote: false,
            },
        )
        .map_err(|e| describe(&e))?
        .ok_or_else(|| format!("the server sent no objects for {want}"))
        .map(drop)
    }
}

/// Asks for one object, with no negotiation: the scratch repository has
/// nothing to offer.
struct Want<'a> {
    id: ObjectId,
    filter: Option<&'a str>,
}

impl gix::protocol::fetch::Negotiate for Want<'_> {
    fn mark_complete_and_common_ref(
        &mut self,
    ) -> gix::Result<gix::protocol::fetch::negotiate::Action> {
        Ok(gix::protocol::fetch::negotiate::Action::MustNegotiate {
            remote_ref_target_known: Vec::new(),
        })
    }

    fn add_wants(
        &mut self,
        arguments: &mut gix::protocol::fetch::Arguments,
        _remote_ref_target_known: &[bool],
    ) -> bool {
        arguments.want(self.id);
        if let Some(filter) = self.filter {
            arguments.filter(filter);
        }
        true
    }

    fn one_round(
        &mut self,
        _state: &mut gix::protocol::fetch::negotiate::one_round::State,
        _arguments: &mut gix::protocol::fetch::Arguments,
        _previous_response: Option<&gix::protocol::fetch::Response>,
    ) -> gix::Result<(gix::protocol::fetch::negotiate::Round, bool)> {
        let round = gix::protocol::fetch::negotiate::Round {
            haves_sent: 0,
            in_vain: 0,
            haves_to_send: 0,
            previous_response_had_at_least_one_in_common: false,
        };
        Ok((round, true))
    }
}

/// A `git://` connection whose socket gives up after `timeout` without
/// traffic (gitoxide's own connects without one).
fn git_daemon(
    url: &gix::Url,
    timeout: Duration,
) -> Result<
    gix::protocol::transport::client::git::blocking_io::Connection<TcpStream, TcpStream>,
    String,
> {
    let host = url.host().ok_or("git:// URL without a host")?;
    let port = url.port.unwrap_or(9418);
    let address = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {host}"))?;
    let read = TcpStream::connect_timeout(&address, timeout).map_err(|e| describe(&e))?;
    read.set_read_timeout(Some(timeout))
        .and_then(|()| read.set_write_timeout(Some(timeout)))
        .map_err(|e| describe(&e))?;
    let write = read.try_clone().map_err(|e| describe(&e))?;
    Ok(
        gix::protocol::transport::client::git::blocking_io::Connection::new(
            read,
            write,
            gix::protocol::transport::Protocol::V2,
            url.path.clone(),
            Some((host.to_owned(), url.port)),
            gix::protocol::transport::client::git::ConnectMode::Daemon,
            false,
        ),
    )
}

/// The token for a private repository, if one is configured. It is only
/// sent over https, or plain http to this machine (tests).
fn token(config: &GitConfig, url: &gix::Url) -> Result<Option<String>, String> {
    let token = match (&config.token_file, &config.token_env) {
        (Some(file), _) => std::fs::read_to_string(file)
            .map_err(|e| format!("reading token_file {}: {e}", file.display()))?,
        (None, Some(var)) => {
            std::env::var(var).map_err(|_| format!("token_env {var} is not set"))?
        }
        (None, None) => return Ok(None),
    };
    let loopback = matches!(
        url.host(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    if url.scheme != gix::url::Scheme::Https && !loopback {
        return Err("a token is only sent over https".into());
    }
    Ok(Some(token.trim().to_owned()))
}

fn http_options(
    timeout: Duration,
    token: Option<String>,
) -> gix::protocol::transport::client::blocking_io::http::Options {
    use base64::Engine as _;
    use gix::protocol::transport::client::blocking_io::http;
    let authorization = token.map(|token| {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
        // Base64 is always a valid header value.
        let mut value = reqwest::header::HeaderValue::try_from(format!("Basic {basic}"))
            .unwrap_or(reqwest::header::HeaderValue::from_static(""));
        value.set_sensitive(true);
        value
    });
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| Ok(builder.timeout(timeout)))),
        configure_request: authorization.map(|value| {
            Box::new(move |request: &mut reqwest::blocking::Request| {
                request
                    .headers_mut()
                    .insert(reqwest::header::AUTHORIZATION, value.clone());
                Ok(())
            }) as Box<http::reqwest::ConfigureRequestFn>
        }),
    };
    http::Options {
        user_agent: Some(concat!("image-auditor/", env!("CARGO_PKG_VERSION")).into()),
        connect_timeout: Some(timeout),
        backend: Some(Arc::new(std::sync::Mutex::new(backend))),
        ..Default::default()
    }
}

/// Writes the manifest `path` of commit `tip` below `checkout/tree`. The new tree is written aside and swapped
/// in, so a failure leaves the previous one.
fn write_tree(
    config: &GitConfig,
    checkout: &Path,
    repo: &gix::Repository,
    tip: ObjectId,
    max_bytes: u64,
    interrupt: &AtomicBool,
) -> Result<(), OriginError> {
    let marker = checkout.join(TREE_COMMIT);
    let tree_dir = checkout.join(TREE_DIR);
    let staging = checkout.join(scratch_name());
    let target = staging.join(&config.path);
    let tree = repo
        .find_commit(tip)
        .and_then(|c| c.tree())
        .map_err(|e| git_error(config, format!("commit {tip}: {e}")))?;
    let tree = if config.path.as_os_str().is_empty() {
        tree
    } else {
        tree.lookup_entry_by_path(&config.path)
            .map_err(|e| git_error(config, describe(&e)))?
            .ok_or_else(|| {
                git_error(
                    config,
                    format!("commit {tip} has no {}", config.path.display()),
                )
            })?
            .object()
            .map_err(|e| git_error(config, format!("{}: {e}", config.path.display())))?
            .try_into_tree()
            .map_err(|e| git_error(config, format!("{}: {e}", config.path.display())))?
    };
    let written = write_subtree(
        config,
        repo,
        &tree,
        &target,
        &mut ByteBudget::new(max_bytes),
    );
    if written.is_err() || interrupt.load(Ordering::Relaxed) {
        let _ = std::fs::remove_dir_all(&staging);
        return written;
    }
    let _ = std::fs::remove_dir_all(&tree_dir);
    std::fs::rename(&staging, &tree_dir).map_err(io_error(&tree_dir))?;
    std::fs::write(&marker, tip.to_string()).map_err(io_error(&marker))
}

fn write_subtree(
    config: &GitConfig,
    repo: &gix::Repository,
    tree: &gix::Tree<'_>,
    dir: &Path,
    budget: &mut ByteBudget,
) -> Result<(), OriginError> {
    use gix::object::tree::EntryKind;
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    for entry in tree.iter() {
        let entry = entry.map_err(|e| git_error(config, format!("{}: {e}", dir.display())))?;
        let name = entry.filename().to_string();
        // Names come from the repository: never let one leave `dir`.
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            return Err(git_error(
                config,
                format!("{}: unsafe name {name:?}", dir.display()),
            ));
        }
        let path = dir.join(&name);
        let object = || {
            entry
                .object()
                .map_err(|e| git_error(config, format!("{}: {e}", path.display())))
        };
        match entry.mode().kind() {
            EntryKind::Tree => {
                let subtree = object()?
                    .try_into_tree()
                    .map_err(|e| git_error(config, format!("{}: {e}", path.display())))?;
                write_subtree(config, repo, &subtree, &path, budget)?;
            }
            EntryKind::Blob | EntryKind::BlobExecutable => {
                // Sized before it is inflated into memory.
                let size = repo
                    .find_header(entry.object_id())
                    .map_err(|e| git_error(config, format!("{}: {e}", path.display())))?
                    .size();
                budget.spend(usize::try_from(size).unwrap_or(usize::MAX));
                if budget.spent {
                    return Err(too_large(config));
                }
                std::fs::write(&path, &object()?.data).map_err(io_error(&path))?;
            }
            // Symbolic links could point outside the tree, and submodules
            // hold no manifests: neither is written.
            EntryKind::Link | EntryKind::Commit => {}
        }
    }
    Ok(())
}

/// A digest over every file a load would walk below `root`: relative path,
/// size and modification time, in path order. Any edit, addition, removal or
/// rename changes it.
fn fingerprint(root: &Path, budget: &Budget) -> Result<String, OriginError> {
    let tree = walk(root, budget)?;
    let mut hash = Sha256::new();
    for (path, file) in &tree.files {
        hash.update(format!("{}\t{}\t{}\n", path.display(), file.len, file.modified_ns).as_bytes());
    }
    Ok(hex::encode(hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn credentials_in_a_url_are_not_shown() {
        assert_eq!(
            shown_url("https://x-access-token:ghs_secret@github.com/org/repo"),
            "https://***@github.com/org/repo"
        );
        assert_eq!(
            shown_url("https://github.com/org/user@repo"),
            "https://github.com/org/user@repo"
        );
        assert_eq!(
            shown_url("git://127.0.0.1:9418/r"),
            "git://127.0.0.1:9418/r"
        );
    }
}
