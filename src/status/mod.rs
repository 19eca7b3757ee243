//! The status pages (docs/design.md §8.4): the work queue at `/` ([`list`],
//! its filters in [`filter`]) and each finding's own page at
//! `/findings/{id}` ([`finding`]), for the
//! person who opens the service in a browser. Grafana and Alertmanager stay
//! the main views of the alerts; these pages are where a finding is read
//! and triaged.
//!
//! Invariants:
//! - Rendering is pure: functions of data to a `String`. The server module
//!   gathers the data; nothing here reads a store or a clock.
//! - Everything that came from an event, a manifest, an exceptions file or
//!   a person (a note, a name) goes through [`escape`], in text and in
//!   attribute values alike.
//! - The pages act only through the authenticated triage API: the one
//!   script ([`TRIAGE_JS`], served as a file, never inline) sends
//!   `POST /v1/findings/{id}/acknowledge|resolve` with the token the person
//!   typed, kept in the tab's `sessionStorage`. The [`HEADERS`] forbid
//!   inline script, so markup that slipped through could not run either.

pub mod filter;
pub mod finding;
pub mod list;

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Response headers of every page and asset: a Content-Security-Policy
/// allowing only this origin's own script, style and requests (no inline
/// script or style), no framing, no MIME sniffing, no referrer.
pub const HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// The finding page's script, served at [`TRIAGE_JS_PATH`].
pub const TRIAGE_JS: &str = include_str!("triage.js");
pub const TRIAGE_JS_PATH: &str = "/assets/triage.js";
/// The pages' style sheet, served at [`STYLE_CSS_PATH`].
pub const STYLE_CSS: &str = include_str!("status.css");
pub const STYLE_CSS_PATH: &str = "/assets/status.css";

/// A whole page around `body` (already escaped where it must be);
/// `title` is escaped here. With `script`, the triage script is loaded.
fn page(title: &str, body: &str, script: bool) -> String {
    let mut out = String::with_capacity(body.len() + 512);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"{STYLE_CSS_PATH}\">",
        escape(title)
    );
    if script {
        let _ = write!(out, "<script src=\"{TRIAGE_JS_PATH}\" defer></script>");
    }
    out.push_str("</head><body>\n");
    out.push_str(body);
    out.push_str(
        "<footer><a href=\"/\">findings</a> · <a href=\"/v1/findings\">findings (JSON)</a> · \
         <a href=\"/metrics\">metrics</a> · <a href=\"/readyz\">readiness</a></footer>\n\
         </body></html>\n",
    );
    out
}

/// `&`, `<`, `>`, `"` and `'` as entities: enough for text and quoted
/// attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a query value keeps as it is: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A query string (`?a=b&c=d`, or empty) from the pairs given,
/// percent-encoded; escape it again to put it in an attribute.
fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut out = String::new();
    for (key, value) in pairs {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(key);
        out.push('=');
        out.extend(utf8_percent_encode(&value, QUERY_VALUE));
    }
    out
}

/// A moment as `<time>`: UTC to the second, and how long ago.
fn moment(at_ms: i64, now_ms: i64) -> String {
    format!(
        "<time datetime=\"{t}\">{t}</time> ({} ago)",
        ago(now_ms - at_ms),
        t = timestamp(at_ms)
    )
}

/// A moment as how long ago, the UTC time in its tooltip: for table rows.
fn ago_of(at_ms: i64, now_ms: i64) -> String {
    format!(
        "<time datetime=\"{t}\" title=\"{t}\">{} ago</time>",
        ago(now_ms - at_ms),
        t = timestamp(at_ms)
    )
}

/// RFC 3339 in UTC, to the second.
fn timestamp(at_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

/// `text` in `<code>`, escaped; an em dash when absent.
fn code(text: Option<&str>) -> String {
    match text {
        Some(t) if !t.is_empty() => format!("<code>{}</code>", escape(t)),
        _ => "—".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_event_data_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(-5), "0 s");
        assert_eq!(ago(59_999), "59 s");
        assert_eq!(ago(61_000), "1 min");
        assert_eq!(ago(7_200_000), "2 h");
        assert_eq!(ago(172_800_000), "2 d");
    }

    #[test]
    fn query_strings_are_percent_encoded() {
        assert_eq!(query_string([]), "");
        assert_eq!(
            query_string([
                ("repository", "r.example/a b&c".into()),
                ("since", "24h".into())
            ]),
            "?repository=r.example%2Fa%20b%26c&since=24h"
        );
    }

    #[test]
    fn moments_are_utc_seconds() {
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(
            moment(1_700_000_000_000, 1_700_000_120_000),
            "<time datetime=\"2023-11-14T22:13:20Z\">2023-11-14T22:13:20Z</time> (2 min ago)"
        );
    }

    #[test]
    fn rows_say_how_long_ago() {
        assert_eq!(
            ago_of(1_700_000_000_000, 1_700_000_120_000),
            "<time datetime=\"2023-11-14T22:13:20Z\" title=\"2023-11-14T22:13:20Z\">2 min ago</time>"
        );
    }

    #[test]
    fn the_policy_forbids_inline_script_and_framing() {
        let csp = HEADERS
            .iter()
            .find(|(k, _)| *k == "content-security-policy")
            .unwrap()
            .1;
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        // The script is a file of its own: no handler attributes in it to
        // copy into markup, and nothing that writes HTML from data.
        assert!(!TRIAGE_JS.contains("innerHTML"));
        assert!(!TRIAGE_JS.contains("localStorage"));
        assert!(!TRIAGE_JS.contains("document.cookie"));
    }
}
