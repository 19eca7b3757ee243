//! HTTP helpers shared by every registry request: the auth handshake, the
//! request loop, listings and the Google token fetch. A leaf: it imports
//! nothing from the rest of `registry`, so `auth`, `client`, `list` and
//! `google` can all use it without importing each other.

use bytes::{Bytes, BytesMut};
use reqwest::header::CONTENT_LENGTH;

/// The header a registry uses to state the digest of what it served.
pub(crate) const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// The digest a response states ([`DOCKER_CONTENT_DIGEST`]), surrounding
/// white space removed, for checking against what was served; the caller
/// parses it (and quotes it when it is no digest).
pub(crate) fn stated_digest(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
}

/// How reading a response body ended badly.
pub(crate) enum ReadError {
    TooLarge,
    Timeout,
    Network(String),
}

/// Reads a response body, stopping as soon as it exceeds `limit` bytes. The
/// response is dropped then, which closes the connection instead of
/// downloading the rest.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Bytes, ReadError> {
    if response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > limit)
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(ReadError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) if e.is_timeout() => return Err(ReadError::Timeout),
            Err(e) => return Err(ReadError::Network(error_chain(&e))),
        }
    }
}

/// reqwest's top-level message is often just "error sending request"; the
/// cause (connection refused, DNS, TLS) is what an operator needs.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `host[:port]` of a URL, as used for per-host counters.
pub(crate) fn url_host(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_keeps_explicit_ports() {
        let u = reqwest::Url::parse("http://127.0.0.1:5059/token").unwrap();
        assert_eq!(url_host(&u), "127.0.0.1:5059");
        let u = reqwest::Url::parse("https://auth.example/token").unwrap();
        assert_eq!(url_host(&u), "auth.example");
    }
}
