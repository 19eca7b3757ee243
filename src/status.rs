//! The status page at `/` (docs/design.md §8.4): what the live index is, which
//! sources are delivering, and the latest findings — for the person who
//! opens the service in a browser. Grafana and Alertmanager stay the main
//! views; this page only renders, and everything it shows that came from
//! an event or a manifest is escaped.

use std::fmt::Write as _;

use crate::event::Source;
use crate::findings::Finding;
use crate::index::Stats;

/// The page, given the index's stats, each source's last delivery (Unix
/// ms), the newest findings and the time now (Unix ms).
pub fn render(
    stats: &Stats,
    last_events: &[(Source, i64)],
    findings: &[Finding],
    now_ms: i64,
) -> String {
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>image-auditor</title><style>body{font-family:sans-serif;margin:2em}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
         code{font-size:90%}</style></head><body>\n<h1>image-auditor</h1>\n",
    );
    let commit = stats.commit.as_deref().unwrap_or("(not from git)");
    let _ = write!(
        page,
        "<h2>Index</h2>\n<table>\n<tr><th>commit</th><td><code>{}</code></td></tr>\n\
         <tr><th>generation</th><td>{}</td></tr>\n<tr><th>projects</th><td>{} ({} left out)</td></tr>\n\
         <tr><th>images</th><td>{}</td></tr>\n<tr><th>digests</th><td>{} ({} children learnt)</td></tr>\n\
         <tr><th>destinations</th><td>{}</td></tr>\n</table>\n",
        escape(commit),
        stats.generation,
        stats.projects,
        stats.excluded_projects,
        stats.images,
        stats.digests,
        stats.children,
        stats.destinations
    );
    page.push_str("<h2>Sources</h2>\n");
    if last_events.is_empty() {
        page.push_str("<p>No event received since start.</p>\n");
    } else {
        page.push_str("<table>\n<tr><th>source</th><th>last event</th></tr>\n");
        for (source, at) in last_events {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{} ago</td></tr>",
                source.as_str(),
                ago(now_ms - at)
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("<h2>Latest findings</h2>\n");
    if findings.is_empty() {
        page.push_str("<p>None.</p>\n");
    } else {
        page.push_str(
            "<table>\n<tr><th>when</th><th>verdict</th><th>repository</th><th>tag</th>\
             <th>digest</th><th>event</th><th>reason</th></tr>\n",
        );
        for f in findings {
            let _ = writeln!(
                page,
                "<tr><td>{} ago</td><td>{}</td><td><code>{}</code></td><td>{}</td>\
                 <td><code>{}</code></td><td>{} {}</td><td>{}</td></tr>",
                ago(now_ms - f.created_at_ms),
                f.verdict.as_str(),
                escape(
                    &f.repository
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
                escape(f.tag.as_ref().map_or("", |t| t.as_str())),
                escape(
                    &f.digest
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
                f.source.as_str(),
                escape(&f.event_id.0),
                escape(&f.reason)
            );
        }
        page.push_str("</table>\n<p><a href=\"/v1/findings\">all findings (JSON)</a></p>\n");
    }
    page.push_str("<p><a href=\"/metrics\">metrics</a> · <a href=\"/readyz\">readiness</a></p>\n</body></html>\n");
    page
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

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
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
}
