//! Image references and their parts: [`Digest`], [`Tag`], [`Repository`],
//! [`RegistryPrefix`] and the full [`Reference`].
//!
//! Every type here is validated on construction, so code that holds one never
//! re-checks it. Parsing never panics; errors name the text that was rejected.
//!
//! Slightly over 500 lines on purpose: the five types share one grammar
//! (`check_registry_path`, the name limits) and one error, and the syntax
//! tables that test them sit beside them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// Why a reference, digest, tag or repository was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {text:?}: {reason}")]
pub struct ParseError {
    what: &'static str,
    text: String,
    reason: String,
    /// The name is over [`MAX_REPOSITORY_LEN`]: a limit on untrusted input,
    /// counted where it refuses a request or an event.
    too_long: bool,
}

impl ParseError {
    fn new(what: &'static str, text: &str, reason: impl Into<String>) -> Self {
        Self {
            what,
            text: crate::event::excerpt(text),
            reason: reason.into(),
            too_long: false,
        }
    }

    fn of_name(what: &'static str, text: &str, problem: NameProblem) -> Self {
        Self {
            too_long: matches!(problem, NameProblem::TooLong(_)),
            ..Self::new(what, text, problem.to_string())
        }
    }

    /// Whether the name was refused for its length alone.
    pub fn is_too_long(&self) -> bool {
        self.too_long
    }
}

/// A content digest: `sha256:` + 64 lower-case hex, or `sha512:` + 128.
///
/// Stored as bytes so that index keys are 32 bytes and comparisons are cheap.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Digest {
    Sha256([u8; 32]),
    // Boxed so the common sha256 case keeps `Digest` small.
    Sha512(Box<[u8; 64]>),
}

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Digest::Sha256(sha2::Sha256::digest(bytes).into())
    }

    /// Whether `bytes` hash to this digest, with this digest's algorithm.
    pub fn verifies(&self, bytes: &[u8]) -> bool {
        match self {
            Digest::Sha256(d) => sha2::Sha256::digest(bytes).as_slice() == d,
            Digest::Sha512(d) => sha2::Sha512::digest(bytes).as_slice() == d.as_slice(),
        }
    }

    pub fn algorithm(&self) -> &'static str {
        match self {
            Digest::Sha256(_) => "sha256",
            Digest::Sha512(_) => "sha512",
        }
    }

    pub fn hex(&self) -> String {
        match self {
            Digest::Sha256(d) => hex::encode(d),
            Digest::Sha512(d) => hex::encode(d.as_slice()),
        }
    }

    /// The raw digest bytes (32 or 64).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Digest::Sha256(d) => d,
            Digest::Sha512(d) => d.as_slice(),
        }
    }
}

impl FromStr for Digest {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = |reason: &str| ParseError::new("digest", s, reason);
        let (alg, hex_part) = s
            .split_once(':')
            .ok_or_else(|| err("expected `sha256:` followed by 64 lower-case hex digits"))?;
        let want = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(err("algorithm must be sha256 or sha512")),
        };
        if hex_part.len() != want {
            return Err(err(&format!(
                "{alg} needs {want} hex digits, found {}",
                hex_part.len()
            )));
        }
        match alg {
            "sha256" => {
                let mut bytes = [0u8; 32];
                decode_lower_hex(hex_part, &mut bytes)
                    .map_err(|()| err("digits must be lower-case hex (0-9, a-f)"))?;
                Ok(Digest::Sha256(bytes))
            }
            _ => {
                let mut bytes = Box::new([0u8; 64]);
                decode_lower_hex(hex_part, &mut bytes[..])
                    .map_err(|()| err("digits must be lower-case hex (0-9, a-f)"))?;
                Ok(Digest::Sha512(bytes))
            }
        }
    }
}

/// Decodes lower-case hex only: digests are canonical, so `A-F` is an error.
/// Hand-written because this runs once per promoted digest on every load and
/// the general decoder was a measurable part of it.
fn decode_lower_hex(hex: &str, out: &mut [u8]) -> Result<(), ()> {
    fn nibble(b: u8) -> Result<u8, ()> {
        match b {
            b'0'..=b'9' => Ok(b - b'0'),
            b'a'..=b'f' => Ok(b - b'a' + 10),
            _ => Err(()),
        }
    }
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(())
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Box<str>);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subject digest if this tag follows the cosign attachment convention
    /// `sha256-<hex>.sig|.att|.sbom`.
    pub fn attachment_subject(&self) -> Option<Digest> {
        let (stem, suffix) = self.0.rsplit_once('.')?;
        if !matches!(suffix, "sig" | "att" | "sbom") {
            return None;
        }
        let (alg, hex_part) = stem.split_once('-')?;
        format!("{alg}:{hex_part}").parse().ok()
    }
}

impl FromStr for Tag {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = |reason: &str| ParseError::new("tag", s, reason);
        let mut bytes = s.bytes();
        match bytes.next() {
            None => return Err(err("tag is empty")),
            Some(b) if b.is_ascii_alphanumeric() || b == b'_' => {}
            Some(_) => return Err(err("must start with a letter, digit or `_`")),
        }
        if s.len() > 128 {
            return Err(err(&format!("at most 128 characters, found {}", s.len())));
        }
        if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
            return Err(err("only letters, digits, `_`, `.` and `-` are allowed"));
        }
        Ok(Tag(s.into()))
    }
}

/// `host[:port]` followed by at least `min_components` `/`-separated path
/// components.
///
/// The host must look like a registry host (contain a `.` or `:`, or be
/// `localhost`): the auditor never guesses a default registry.
fn check_registry_path(
    what: &'static str,
    s: &str,
    min_components: usize,
) -> Result<(), ParseError> {
    let err = |problem: NameProblem| ParseError::of_name(what, s, problem);
    check_length(s).map_err(err)?;
    let (host, path) = match s.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (s, None),
    };
    check_host(host).map_err(err)?;
    match path {
        None if min_components > 0 => Err(err(NameProblem::NoPath)),
        None => Ok(()),
        Some(path) => check_path_components(path).map_err(err),
    }
}

/// `/`-separated components of `[a-z0-9._-]`, each starting and ending with a
/// letter or digit: the distribution spec's repository name grammar, relaxed
/// only in allowing any mix of separators.
fn check_path_components(path: &str) -> Result<(), NameProblem> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(NameProblem::EmptyComponent);
        }
        if !component
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        {
            return Err(NameProblem::ComponentChars(component.to_owned()));
        }
        let bytes = component.as_bytes();
        if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
            return Err(NameProblem::ComponentEdges(component.to_owned()));
        }
    }
    Ok(())
}

/// Checks an image name as written in a manifest: a repository path relative
/// to a registry prefix (`etcd`, `e2e-test-images/agnhost`).
pub fn check_image_name(name: &str) -> Result<(), ParseError> {
    check_length(name)
        .and_then(|()| check_path_components(name))
        .map_err(|problem| ParseError::of_name("image name", name, problem))
}

/// Longest repository name, host and port included: the OCI distribution
/// spec lets registries refuse anything longer, and clients do.
pub const MAX_REPOSITORY_LEN: usize = 255;

/// Checked before anything else, so that no error quotes a huge component.
fn check_length(s: &str) -> Result<(), NameProblem> {
    if s.len() > MAX_REPOSITORY_LEN {
        return Err(NameProblem::TooLong(s.len()));
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), NameProblem> {
    if host.is_empty() {
        return Err(NameProblem::EmptyHost);
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(NameProblem::Port(port.to_owned()));
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
    {
        return Err(NameProblem::NotAHostName(name.to_owned()));
    }
    if !(name.contains('.') || port.is_some() || name == "localhost") {
        return Err(NameProblem::NotARegistryHost(name.to_owned()));
    }
    Ok(())
}

/// What is wrong with a repository or image name; it becomes the reason of
/// a [`ParseError`].
#[derive(Debug, thiserror::Error)]
enum NameProblem {
    #[error("longer than {MAX_REPOSITORY_LEN} characters, the longest repository name ({0} bytes)")]
    TooLong(usize),
    #[error("registry host is empty")]
    EmptyHost,
    #[error("port {0:?} must be 1-5 digits")]
    Port(String),
    #[error("registry host {0:?} is not a host name")]
    NotAHostName(String),
    #[error("{0:?} is not a registry host (write the host, e.g. docker.io/{0})")]
    NotARegistryHost(String),
    #[error("needs a path after the registry host")]
    NoPath,
    #[error("empty path component (`//`, or a leading or trailing `/`)")]
    EmptyComponent,
    #[error("path component {0:?} may only contain a-z, 0-9, `.`, `_` and `-`")]
    ComponentChars(String),
    #[error("path component {0:?} must start and end with a letter or digit")]
    ComponentEdges(String),
}

macro_rules! registry_path_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $min:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The registry host, with its port if any.
            pub fn host(&self) -> &str {
                self.0.split('/').next().unwrap_or_default()
            }
        }

        impl FromStr for $name {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<Self, ParseError> {
                check_registry_path($what, s, $min)?;
                Ok($name(s.into()))
            }
        }
    };
}

registry_path_type!(
    /// A full image path without tag or digest: `host[:port]/path`.
    Repository,
    "repository",
    1
);
registry_path_type!(
    /// Where a manifest promotes to or from: `host[:port][/path]`.
    RegistryPrefix,
    "registry prefix",
    0
);

impl Repository {
    /// The path after the host: what the distribution API calls the name.
    pub fn path(&self) -> &str {
        self.0.split_once('/').map(|(_, p)| p).unwrap_or_default()
    }

    /// Every split into a registry prefix and an image name, longest prefix
    /// first: `h/a/b` gives (`h/a`, `b`) and (`h`, `a/b`). Splitting at `/`
    /// only is what keeps `…/kube-state-metrics` out of a prefix `…/kube-state`.
    pub fn splits(&self) -> impl Iterator<Item = (&str, &str)> {
        segment_splits(&self.0)
    }

    /// `prefix/name` as a repository.
    pub fn join(prefix: &RegistryPrefix, name: &str) -> Result<Self, ParseError> {
        format!("{}/{}", prefix.as_str(), name).parse()
    }
}

/// Every split of `s` at a `/` into (before, after), longest `before` first.
pub(crate) fn segment_splits(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.rmatch_indices('/')
        .map(move |(i, _)| (&s[..i], &s[i + 1..]))
}

/// `host[:port]/path[:tag][@digest]`, with at least a tag or a digest where the
/// caller requires it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub repository: Repository,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl FromStr for Reference {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (rest, digest) = match s.rsplit_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // The tag separator is the last `:` after the last `/`, so that a
        // registry port is never mistaken for a tag.
        let last_slash = rest.rfind('/').unwrap_or(0);
        let (repo, tag) = match rest[last_slash..].rfind(':') {
            Some(i) if last_slash > 0 => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].parse::<Tag>()?))
            }
            _ => (rest, None),
        };
        Ok(Reference {
            repository: repo.parse()?,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.repository.as_str())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Display, Debug and serde as the validated text, for the string newtypes.
macro_rules! text_impls {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    )*};
}

/// Serialize as the canonical text and deserialize through `FromStr`.
macro_rules! serde_via_str {
    ($($name:ident),*) => {$(
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

text_impls!(Tag, Repository, RegistryPrefix);
serde_via_str!(Tag, Repository, RegistryPrefix, Digest, Reference);

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The digest and tag syntax tables of the retired auditor, which the
/// manifests it audited were written against.
/// Digests and tags for the unit tests of every module.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Digest, Tag};

    /// A digest of its own for each `n`.
    pub(crate) fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    pub(crate) fn t(s: &str) -> Tag {
        s.parse().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::{Digest, Tag};

    #[test]
    fn digest_syntax() {
        for ok in [
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "sha256:c3d3c3d3c3d3c3d3c3d3c3d3c3d3c3d3c3d3c3d3c3d3c3d3c3d3c3d3c3d3c3d3",
            "sha256:4ad90a11b55313b182afc186b9876c8e891531b8db4c9bf1541953021618d0e2",
            "sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        ] {
            let digest: Digest = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(digest.to_string(), ok);
        }
        let hex64 = "a".repeat(64);
        for bad in [
            String::new(),
            "sha256:0".into(),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha256:{}g", "a".repeat(63)),
            hex64.clone(),
            format!(":{hex64}"),
            format!("sha256:{}", hex64.to_uppercase()),
            format!("sha256 :{hex64}"),
            format!("sha256:{hex64} "),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn tag_syntax() {
        for ok in [
            "a".to_string(),
            "_".into(),
            "latest".into(),
            "_latest".into(),
            "_____----hello........".into(),
            "1.10".into(),
            "a".repeat(128),
        ] {
            let tag: Tag = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(tag.as_str(), ok);
        }
        for bad in [
            String::new(),
            ".".into(),
            "-".into(),
            "héllo".into(),
            "hello world".into(),
            "a".repeat(129),
            "v1:2".into(),
            "v1/2".into(),
        ] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?} parsed");
        }
    }
}
