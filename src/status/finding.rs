//! `/findings/{id}`: one finding with every field it carries, its evidence
//! (manifest file and line, image, tags, parent index; what a pushed list
//! names), its deliveries, its triage, and the controls to acknowledge or
//! resolve it. The controls are hidden until the script shows them; without
//! script the page reads the same and says acting needs it.

use std::fmt::Write as _;

use serde_json::Value;

use super::{code, escape, moment, page};
use crate::findings::triage::{Transition, transition};
use crate::findings::{Finding, TriageAction, TriageState};

/// Everything the finding's page shows.
pub struct FindingPage<'a> {
    pub finding: &'a Finding,
    /// Whether anyone may triage on this service (`triage.tokens` or
    /// `triage.oidc` configured).
    pub triage_enabled: bool,
    pub now_ms: i64,
}

/// The page.
pub fn render(p: &FindingPage<'_>) -> String {
    let f = p.finding;
    let mut body = format!(
        "<p><a href=\"/\">← findings</a></p>\n<h1>Finding #{} <span class=\"verdict\">{}</span></h1>\n\
         <p class=\"reason\" id=\"reason\">{}</p>\n",
        f.id,
        f.verdict.as_str(),
        escape(&f.reason)
    );
    triage(&mut body, f, p.triage_enabled, p.now_ms);
    fields(&mut body, f, p.now_ms);
    evidence(&mut body, &f.evidence);
    deliveries(&mut body, f, p.now_ms);
    page(&format!("finding #{} · image-auditor", f.id), &body, true)
}

/// The 404 page for an id that names no finding; `id` is what the path
/// said, escaped.
pub fn not_found(id: &str) -> String {
    let body = format!(
        "<h1>No such finding</h1>\n<p id=\"not-found\">There is no finding <code>{}</code> \
         in the store.</p>\n<p><a href=\"/\">All findings</a></p>\n",
        escape(&crate::event::excerpt(id))
    );
    page("no such finding · image-auditor", &body, false)
}

fn triage(body: &mut String, f: &Finding, enabled: bool, now_ms: i64) {
    let t = &f.triage;
    let _ = write!(
        body,
        "<section id=\"triage\" data-finding=\"{}\" data-state=\"{}\">\n<h2>Triage</h2>\n<dl>\
         <dt>state</dt><dd id=\"triage-state\">{}</dd>\
         <dt>by</dt><dd id=\"triage-by\">{}</dd>\
         <dt>at</dt><dd id=\"triage-at\">{}</dd>\
         <dt>note</dt><dd id=\"triage-note\" class=\"note\">{}</dd></dl>\n",
        f.id,
        t.state,
        t.state,
        t.by.as_deref().map(escape).unwrap_or_else(|| "—".into()),
        t.at_ms.map_or_else(|| "—".into(), |at| moment(at, now_ms)),
        t.note
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(escape)
            .unwrap_or_else(|| "—".into()),
    );
    if !enabled {
        body.push_str(
            "<p id=\"triage-disabled\">Triage is not configured on this service \
             (<code>triage.tokens</code> or <code>triage.oidc</code>).</p>\n</section>\n",
        );
        return;
    }
    body.push_str(
        "<noscript><p id=\"needs-js\">Acknowledging and resolving from this page need \
         JavaScript; without it, use <code>POST /v1/findings/{id}/acknowledge|resolve</code> \
         or <code>image-auditor findings acknowledge|resolve</code>.</p></noscript>\n\
         <form id=\"act\" hidden>\n\
         <p id=\"token-row\"><label>Triage token <input type=\"password\" id=\"token\" \
         autocomplete=\"off\" spellcheck=\"false\"></label> \
         <small>kept in this tab only (sessionStorage)</small></p>\n\
         <p id=\"token-kept\" hidden>Your token is kept for this tab. \
         <button type=\"button\" id=\"forget\">Forget it</button></p>\n\
         <p><label>Note<br><textarea id=\"note\" rows=\"3\" cols=\"60\" maxlength=\"2000\">\
         </textarea></label></p>\n<p>",
    );
    for action in [TriageAction::Acknowledge, TriageAction::Resolve] {
        // A change the rules refuse is not offered; the API still says why
        // if the state changed since the page was rendered.
        let allowed = offered(t.state).contains(&action);
        let _ = write!(
            body,
            "<button type=\"button\" id=\"{a}\" data-action=\"{a}\"{}>{}</button> ",
            if allowed { "" } else { " disabled" },
            if action == TriageAction::Acknowledge {
                "Acknowledge"
            } else {
                "Resolve"
            },
            a = action.as_str(),
        );
    }
    body.push_str("</p>\n<p id=\"result\" role=\"status\"></p>\n</form>\n</section>\n");
}

fn fields(body: &mut String, f: &Finding, now_ms: i64) {
    let rows: [(&str, String); 13] = [
        ("verdict", f.verdict.as_str().to_owned()),
        ("source", f.key.source.as_str().to_owned()),
        ("endpoint", code(Some(&f.key.endpoint.0))),
        ("event id", code(Some(&f.key.event_id.0))),
        (
            "action",
            f.action
                .map_or_else(|| "—".into(), |a| a.as_str().to_owned()),
        ),
        (
            "repository",
            code(f.repository.as_ref().map(|r| r.as_str())),
        ),
        ("tag", code(f.tag.as_ref().map(|t| t.as_str()))),
        (
            "digest",
            code(f.digest.as_ref().map(ToString::to_string).as_deref()),
        ),
        ("received", moment(f.received_at_ms, now_ms)),
        ("recorded", moment(f.created_at_ms, now_ms)),
        ("manifest commit", code(f.manifest_commit.as_deref())),
        ("index generation", f.index_generation.to_string()),
        (
            "excepted by",
            match &f.excepted_by {
                Some(e) => format!("<code>{}</code> (recorded, never alerted)", escape(e)),
                None => "—".into(),
            },
        ),
    ];
    body.push_str("<h2>Finding</h2>\n<table id=\"fields\">\n");
    for (name, value) in rows {
        let _ = writeln!(body, "<tr><th>{name}</th><td>{value}</td></tr>");
    }
    body.push_str("</table>\n");
}

/// The evidence as recorded (a JSON array, see
/// [`EvidenceEntry`](crate::audit::EvidenceEntry)): manifest entries as
/// rows, a pushed list as its children; anything else as escaped JSON.
fn evidence(body: &mut String, evidence: &Value) {
    body.push_str("<h2>Evidence</h2>\n");
    let entries = evidence.as_array().map(Vec::as_slice).unwrap_or_default();
    if entries.is_empty() {
        body.push_str("<p>No manifest entry names this content.</p>\n");
        return;
    }
    let text = |v: &Value, key: &str| match &v[key] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    for entry in entries {
        if let Some(children) = entry["pushed_list"]["children"].as_array() {
            body.push_str(
                "<h3>What the pushed list names</h3>\n<table class=\"pushed-list\">\n\
                 <tr><th>digest</th><th>platform</th></tr>\n",
            );
            for child in children {
                let _ = writeln!(
                    body,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    code(text(child, "digest").as_deref()),
                    code(text(child, "platform").as_deref())
                );
            }
            body.push_str("</table>\n");
        } else if let (Some(file), Some(line)) = (text(entry, "file"), text(entry, "line")) {
            let tags: Vec<String> = entry["tags"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).map(escape).collect())
                .unwrap_or_default();
            let _ = writeln!(
                body,
                "<table class=\"evidence\">\n\
                 <tr><th>manifest</th><td><code>{}:{}</code></td></tr>\n\
                 <tr><th>project</th><td>{}</td></tr>\n<tr><th>image</th><td>{}</td></tr>\n\
                 <tr><th>digest</th><td>{}</td></tr>\n<tr><th>tags</th><td>{}</td></tr>\n\
                 <tr><th>parent index</th><td>{}</td></tr>\n</table>",
                escape(&file),
                escape(&line),
                code(text(entry, "project").as_deref()),
                code(text(entry, "image").as_deref()),
                code(text(entry, "digest").as_deref()),
                if tags.is_empty() {
                    "—".into()
                } else {
                    tags.join(", ")
                },
                code(text(entry, "parent").as_deref()),
            );
        } else {
            let _ = writeln!(body, "<pre>{}</pre>", escape(&entry.to_string()));
        }
    }
}

fn deliveries(body: &mut String, f: &Finding, now_ms: i64) {
    body.push_str("<h2>Alert deliveries</h2>\n");
    if f.deliveries.is_empty() {
        body.push_str(if f.excepted_by.is_some() {
            "<p>None: an exception covers this finding.</p>\n"
        } else {
            "<p>No sink has claimed this finding yet.</p>\n"
        });
        return;
    }
    body.push_str(
        "<table id=\"deliveries\">\n<tr><th>sink</th><th>state</th><th>attempts</th>\
         <th>delivered</th><th>last error</th></tr>\n",
    );
    for d in &f.deliveries {
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&d.sink),
            d.state.as_str(),
            d.attempts,
            d.delivered_at_ms
                .map_or_else(|| "—".into(), |at| moment(at, now_ms)),
            d.last_error.as_deref().map(escape).unwrap_or_default()
        );
    }
    body.push_str("</table>\n");
}

/// The changes the triage rules allow from `state`.
fn offered(state: TriageState) -> Vec<TriageAction> {
    [TriageAction::Acknowledge, TriageAction::Resolve]
        .into_iter()
        .filter(|a| matches!(transition(state, *a), Ok(Transition::To(_))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::VerdictKind;
    use crate::event::{EndpointName, EventId, Source};
    use crate::findings::{DedupeKey, DeliveryState, FindingId, SinkDelivery, Triage};

    fn finding() -> Finding {
        Finding {
            id: FindingId(42),
            created_at_ms: 2_000,
            received_at_ms: 1_000,
            key: DedupeKey {
                source: Source::Distribution,
                endpoint: EndpointName("hook".into()),
                event_id: EventId("ev-1".into()),
            },
            action: Some(crate::event::Action::Insert),
            repository: Some("r.example/prod/app".parse().unwrap()),
            digest: Some(format!("sha256:{}", "a".repeat(64)).parse().unwrap()),
            tag: Some("v1".parse().unwrap()),
            verdict: VerdictKind::TagMoved,
            reason: "tag v1 moved".into(),
            evidence: serde_json::json!([
                {"project": "demo", "file": "images/demo/images.yaml", "line": 7,
                 "image": "app", "digest": format!("sha256:{}", "b".repeat(64)),
                 "tags": ["v1", "latest"], "parent": format!("sha256:{}", "c".repeat(64))},
                {"pushed_list": {"children": [
                    {"digest": format!("sha256:{}", "d".repeat(64)), "platform": "linux/arm64"}]}},
                {"something": "else"}
            ]),
            manifest_commit: Some("0123abcd".into()),
            index_generation: 3,
            excepted_by: None,
            triage: Triage::open(),
            deliveries: vec![SinkDelivery {
                sink: "am".into(),
                state: DeliveryState::Delivered,
                attempts: 2,
                next_attempt_ms: 0,
                delivered_at_ms: Some(3_000),
                last_error: Some("timeout".into()),
            }],
        }
    }

    fn render_of(f: &Finding, enabled: bool) -> String {
        render(&FindingPage {
            finding: f,
            triage_enabled: enabled,
            now_ms: 10_000,
        })
    }

    #[test]
    fn every_field_and_the_evidence_are_shown() {
        let html = render_of(&finding(), true);
        for expected in [
            "Finding #42",
            "tag v1 moved",
            "<code>hook</code>",
            "<code>ev-1</code>",
            "<code>r.example/prod/app</code>",
            "<code>v1</code>",
            "<code>0123abcd</code>",
            "<tr><th>index generation</th><td>3</td></tr>",
            "<code>images/demo/images.yaml:7</code>",
            "v1, latest",
            &format!(
                "<tr><th>parent index</th><td><code>sha256:{}</code>",
                "c".repeat(64)
            ),
            "<code>linux/arm64</code>",
            "{&quot;something&quot;:&quot;else&quot;}",
            "<td>am</td><td>delivered</td><td>2</td>",
            "<script src=\"/assets/triage.js\" defer></script>",
            "id=\"needs-js\"",
            "<form id=\"act\" hidden>",
        ] {
            assert!(html.contains(expected), "{expected} not in {html}");
        }
    }

    #[test]
    fn only_changes_the_rules_allow_are_offered() {
        use TriageAction::*;
        assert_eq!(offered(TriageState::Open), [Acknowledge, Resolve]);
        assert_eq!(offered(TriageState::Acknowledged), [Resolve]);
        assert_eq!(offered(TriageState::Resolved), []);
        let mut f = finding();
        f.triage = Triage {
            state: TriageState::Acknowledged,
            by: Some("alice".into()),
            at_ms: Some(4_000),
            note: Some("looking".into()),
        };
        let html = render_of(&f, true);
        assert!(html.contains("id=\"acknowledge\" data-action=\"acknowledge\" disabled"));
        assert!(html.contains("id=\"resolve\" data-action=\"resolve\">"));
        assert!(html.contains("<dd id=\"triage-by\">alice</dd>"), "{html}");
        assert!(html.contains("<dd id=\"triage-note\" class=\"note\">looking</dd>"));
    }

    #[test]
    fn without_triage_configured_there_is_nothing_to_press() {
        let html = render_of(&finding(), false);
        assert!(html.contains("id=\"triage-disabled\""));
        assert!(!html.contains("<button"));
    }

    #[test]
    fn hostile_text_is_escaped_everywhere() {
        let mut f = finding();
        let hostile = "\"><img src=x onerror=alert(1)><script>alert(2)</script>";
        f.reason = hostile.into();
        f.key.event_id = EventId(hostile.into());
        f.key.endpoint = EndpointName(hostile.into());
        f.manifest_commit = Some(hostile.into());
        f.excepted_by = Some(hostile.into());
        f.evidence = serde_json::json!([
            {"project": hostile, "file": hostile, "line": hostile, "image": hostile,
             "digest": hostile, "tags": [hostile], "parent": hostile},
            {"pushed_list": {"children": [{"digest": hostile, "platform": hostile}]}},
            {"x": hostile}
        ]);
        f.triage = Triage {
            state: TriageState::Resolved,
            by: Some(hostile.into()),
            at_ms: Some(1),
            note: Some(hostile.into()),
        };
        f.deliveries[0].sink = hostile.into();
        f.deliveries[0].last_error = Some(hostile.into());
        let html = render_of(&f, true);
        assert!(!html.contains("<img"), "{html}");
        assert_eq!(
            html.matches("<script").count(),
            1,
            "only the page's own: {html}"
        );
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        let missing = not_found("<script>1</script>");
        assert!(!missing.contains("<script"), "{missing}");
        assert!(missing.contains("&lt;script&gt;1&lt;/script&gt;"));
    }
}
