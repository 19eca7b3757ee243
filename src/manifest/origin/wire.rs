//! The git wire protocol, client side: connect (git daemon, smart HTTP),
//! list the one branch, and fetch only what the manifest tree needs into a
//! scratch repository, every byte counted against `manifests_git.max_bytes`.

use std::net::{TcpStream, ToSocketAddrs};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use gix::ObjectId;
use gix::protocol::transport::client::TransportWithoutIO as _;
use gix::protocol::transport::client::blocking_io::Transport;

use super::{GitConfig, describe};

/// Why talking to the remote repository failed. The sync reports it as
/// [`super::OriginError::Git`], under the URL with credentials masked.
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    #[error("{0} URLs are not supported; use https://, git:// or file://")]
    Scheme(String),
    #[error("git:// URL without a host")]
    NoHost,
    #[error("cannot resolve {0}")]
    Unresolved(String),
    #[error("reading token_file {}: {error}", path.display())]
    TokenFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("token_env {0} is not set")]
    TokenEnvUnset(String),
    #[error("a token is only sent over https")]
    TokenOverPlainHttp,
    #[error("no branch {0}")]
    NoBranch(String),
    #[error("commit {tip} has no {}", path.display())]
    NoPath { tip: ObjectId, path: PathBuf },
    #[error("the server sent no objects for {0}")]
    NoObjects(ObjectId),
    /// A failure inside gitoxide or the socket, with its causes: their
    /// types are many and only their words say what went wrong.
    #[error("{0}")]
    Failed(String),
}

impl WireError {
    pub(super) fn of(error: &dyn std::error::Error) -> WireError {
        WireError::Failed(describe(error))
    }
}

/// Bytes one sync may still receive.
pub(super) struct ByteBudget {
    pub(super) left: u64,
    pub(super) spent: bool,
}

impl ByteBudget {
    pub(super) fn new(limit: u64) -> ByteBudget {
        ByteBudget {
            left: limit,
            spent: false,
        }
    }

    pub(super) fn spend(&mut self, n: usize) {
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

/// Sockets give up a little after the sync's deadline, so that the
/// deadline is what reports a silent server and the abandoned thread ends.
fn socket_timeout(config: &GitConfig) -> Duration {
    config.command_timeout + Duration::from_secs(5)
}

type BoxedTransport = Box<dyn Transport + Send>;

/// A connection to a remote repository after the protocol handshake.
pub(super) struct Wire {
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
    pub(super) fn connect(config: &GitConfig, url: &gix::Url) -> Result<Wire, WireError> {
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
                    .map_err(|e| WireError::of(&e))?;
                Box::new(transport)
            }
            other => return Err(WireError::Scheme(other.as_str().to_owned())),
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
        .map_err(|e| WireError::of(&e))?;
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
    pub(super) fn tip(&mut self, branch: &str) -> Result<ObjectId, WireError> {
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
                .map_err(|e| WireError::of(&e))?
            }
        };
        refs.iter()
            .find_map(|r| match r.unpack() {
                (n, Some(target), _) if n == name.as_str() => Some(target.to_owned()),
                _ => None,
            })
            .ok_or_else(|| WireError::NoBranch(branch.to_owned()))
    }

    /// Fetches commit `tip` and the tree at `path` in it into `repo`.
    /// Where the server filters, that is the commit alone, then each tree
    /// on the way to `path` alone, then the manifest tree whole; other
    /// servers send the tip commit with its whole tree (depth 1).
    pub(super) fn fetch_manifest_tree(
        &mut self,
        repo: &gix::Repository,
        tip: ObjectId,
        path: &Path,
        budget: &mut ByteBudget,
        interrupt: &AtomicBool,
    ) -> Result<(), WireError> {
        if !self.filters() {
            return self.fetch(repo, tip, None, true, budget, interrupt);
        }
        self.fetch(repo, tip, Some("tree:0"), true, budget, interrupt)?;
        let mut tree = repo
            .find_commit(tip)
            .and_then(|c| c.tree_id())
            .map_err(|e| WireError::Failed(format!("commit {tip}: {e}")))?
            .detach();
        for component in path.components() {
            self.fetch(repo, tree, Some("tree:1"), false, budget, interrupt)?;
            let name = component.as_os_str().to_string_lossy();
            tree = repo
                .find_tree(tree)
                .map_err(|e| WireError::of(&e))?
                .find_entry(name.as_ref())
                .filter(|e| e.mode().is_tree())
                .map(|e| e.object_id())
                .ok_or_else(|| WireError::NoPath {
                    tip,
                    path: path.to_path_buf(),
                })?;
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
    ) -> Result<(), WireError> {
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
                shallow_file: repo.shallow_file().map_err(|e| WireError::of(&e))?,
                shallow: &shallow,
                tags: fetch::Tags::None,
                reject_shallow_remote: false,
            },
        )
        .map_err(|e| WireError::of(&e))?
        .ok_or(WireError::NoObjects(want))
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
    WireError,
> {
    let host = url.host().ok_or(WireError::NoHost)?;
    let port = url.port.unwrap_or(9418);
    let address = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| WireError::Unresolved(host.to_owned()))?;
    let read = TcpStream::connect_timeout(&address, timeout).map_err(|e| WireError::of(&e))?;
    read.set_read_timeout(Some(timeout))
        .and_then(|()| read.set_write_timeout(Some(timeout)))
        .map_err(|e| WireError::of(&e))?;
    let write = read.try_clone().map_err(|e| WireError::of(&e))?;
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
fn token(config: &GitConfig, url: &gix::Url) -> Result<Option<String>, WireError> {
    let token = match (&config.token_file, &config.token_env) {
        (Some(file), _) => std::fs::read_to_string(file).map_err(|error| WireError::TokenFile {
            path: file.clone(),
            error,
        })?,
        (None, Some(var)) => {
            std::env::var(var).map_err(|_| WireError::TokenEnvUnset(var.clone()))?
        }
        (None, None) => return Ok(None),
    };
    let loopback = matches!(
        url.host(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    if url.scheme != gix::url::Scheme::Https && !loopback {
        return Err(WireError::TokenOverPlainHttp);
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
