//! The command line against the shipped fixtures: output and exit codes.

use std::process::{Command, Output};

const ETCD: &str = "sha256:4ad90a11b55313b182afc186b9876c8e891531b8db4c9bf1541953021618d0e2";
const REGION: &str = "us-central1-docker.pkg.dev/k8s-artifacts-prod/images";

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_image-auditor"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("IMAGE_AUDITOR_MANIFESTS")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn validate_reports_every_problem_and_fails() {
    let out = run(&["manifests", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("k8s-staging-ingress-nginx/images.yaml:203: error:"),
        "{text}"
    );
    assert!(
        text.contains("k8s-staging-aws-encryption-provider/images.yaml: error: does not exist")
    );
    assert!(text.contains("k8s-staging-boskos/promoter-manifest.yaml:47: warning:"));
    assert!(
        text.ends_with("37 projects valid, 2 excluded; 2 errors, 1 warnings\n"),
        "{text}"
    );
}

#[test]
fn validate_of_a_valid_set_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    std::fs::write(
        &file,
        format!(
            "registries:\n- name: gcr.io/staging\n  src: true\n- name: registry.example/prod\n\
             images:\n- name: app\n  dmap:\n    \"{ETCD}\": [\"1.10\"]\n"
        ),
    )
    .unwrap();
    let out = run(&["manifests", "validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("1 projects valid, 0 excluded; 0 errors"));
}

#[test]
fn check_prints_one_verdict_per_reference_and_exits_one_on_violations() {
    let promoted = format!("{REGION}/etcd:3.4.13-0@{ETCD}");
    let out = run(&["check", &promoted]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with(&format!(
        "promoted\t{promoted}\tpromoted by k8s-staging-etcd"
    )));

    let moved = format!("{REGION}/etcd:3.5.0-0@{ETCD}");
    let staging = "gcr.io/k8s-staging-etcd/etcd:latest".to_string();
    let out = run(&["check", &promoted, &moved, &staging]);
    assert_eq!(out.status.code(), Some(1));
    let kinds: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["promoted", "tag_moved", "out_of_scope"]);
}

#[test]
fn check_rejects_a_bad_reference_before_loading() {
    let out = run(&["check", "not a reference"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("error: repository \"not a reference\""),
        "{err}"
    );
}

#[test]
fn replay_judges_each_payload_line_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let lines = [
        format!(
            r#"{{"action":"INSERT","digest":"{REGION}/etcd@{ETCD}","tag":"{REGION}/etcd:3.4.13-0"}}"#
        ),
        String::new(),
        r#"{"action":"WOOF","digest":"gcr.io/x/y@sha256:0"}"#.to_string(),
        format!(r#"{{"action":"DELETE","tag":"{REGION}/etcd:3.4.13-0"}}"#),
        "{".to_string(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = run(&["replay", "--json", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let verdicts: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = verdicts
        .iter()
        .map(|v| v["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["promoted", "malformed", "deleted", "malformed"]);
    // Ids name the file line, blank lines included in the numbering.
    assert!(
        verdicts[1]["event"]
            .as_str()
            .unwrap()
            .ends_with("events.ndjson:3")
    );
    assert_eq!(verdicts[0]["evidence"][0]["image"], "etcd");
    assert_eq!(verdicts[0]["evidence"][0]["line"], 3);
}

#[test]
fn lookup_lists_where_a_digest_is_promoted() {
    let out = run(&["lookup", ETCD]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains(
            "k8s-staging-etcd/images.yaml:3: project k8s-staging-etcd, image etcd, tags [3.4.13-0]"
        ),
        "{text}"
    );
    assert!(text.contains(&format!("  {REGION}/kubernetes/etcd\n")));

    let unknown = format!("sha256:{}", "0".repeat(64));
    assert_eq!(run(&["lookup", &unknown]).status.code(), Some(1));
}

#[test]
fn lookup_json_names_each_placement() {
    let out = run(&["lookup", "--json", ETCD]);
    assert_eq!(out.status.code(), Some(0));
    let found: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(found["digest"], ETCD);
    assert_eq!(found["promoted"], true);
    let placement = &found["placements"][0];
    assert!(
        placement["file"]
            .as_str()
            .unwrap()
            .ends_with("k8s-staging-etcd/images.yaml"),
        "{found}"
    );
    assert_eq!(placement["line"], 3);
    assert_eq!(placement["project"], "k8s-staging-etcd");
    assert_eq!(placement["image"], "etcd");
    assert_eq!(placement["tags"], serde_json::json!(["3.4.13-0"]));
    // The same shape as `GET /v1/digests/{digest}`.
    assert_eq!(placement["digest"], ETCD);
    assert_eq!(placement["parent"], serde_json::Value::Null);
    let repositories = placement["repositories"].as_array().unwrap();
    assert!(
        repositories.contains(&format!("{REGION}/kubernetes/etcd").into()),
        "{found}"
    );

    let unknown = format!("sha256:{}", "0".repeat(64));
    let out = run(&["lookup", "--json", &unknown]);
    assert_eq!(out.status.code(), Some(1));
    let found: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(found["promoted"], false);
    assert_eq!(found["placements"], serde_json::json!([]));
}

#[test]
fn a_root_above_a_thin_root_is_refused_naming_the_thin_root() {
    let out = run(&["manifests", "validate", "manifests-fixtures/k8s.io"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}{stderr}", stdout(&out));
    assert!(
        stderr.contains("manifests-fixtures/k8s.io is not a manifest root")
            && stderr.contains("manifests-fixtures/k8s.io/registry.k8s.io below it"),
        "{stderr}"
    );
}

#[test]
fn a_plain_file_without_images_is_not_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    std::fs::write(
        &file,
        "registries:\n- name: gcr.io/staging\n  src: true\n- name: registry.example/prod\n",
    )
    .unwrap();
    let out = run(&["manifests", "validate", file.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("m.yaml: error: not a plain manifest: it has `registries:` but no `images:`"),
        "{text}"
    );
    assert!(text.contains("0 projects valid, 1 excluded"), "{text}");
}

#[test]
fn a_missing_path_is_reported_once() {
    let out = run(&["manifests", "validate", "no/such/dir"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("no/such/dir"), "{stderr}");
}

#[test]
fn index_stats_reports_sizes_as_json() {
    let out = run(&["index", "stats", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let stats: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(stats["projects"], 37);
    assert_eq!(stats["excluded_projects"], 2);
    assert!(stats["load_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn shipped_registry_config_example_parses_and_bad_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/registry.example.yaml");
    let text = std::fs::read_to_string(&example).unwrap();
    let config: image_auditor::registry::RegistryConfig = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(config.max_retries, 3);
    assert!(config.hosts.contains_key("registry.example.com"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "cache_dirr: /tmp/x\n").unwrap();
    let out = run(&[
        "--registry-config",
        bad.to_str().unwrap(),
        "check",
        "--resolve",
        &format!("{REGION}/etcd@{ETCD}"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.yaml") && err.contains("cache_dirr"),
        "{err}"
    );
}

/// `store status` and `store migrate` on the SQLite store of a data
/// directory: nothing there yet, then migrated, then a file a newer build
/// wrote.
#[test]
fn store_status_and_migrate_on_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let known = image_auditor::findings::Backend::Sqlite.known_version();

    let out = run(&["store", "status", "--data-dir", data]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "not up to date: {}",
        stdout(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("store: sqlite "), "{text}");
    assert!(
        text.contains(&format!("schema: version 0, this build knows {known}")),
        "{text}"
    );
    assert!(text.contains("pending: 1 "), "{text}");
    assert!(
        !std::path::Path::new(data).exists(),
        "status created nothing"
    );

    let out = run(&["store", "migrate", "--data-dir", data, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["before"], 0);
    assert_eq!(v["after"]["found"], known);
    assert_eq!(v["applied"].as_array().unwrap().len() as i64, known);

    let out = run(&["store", "status", "--data-dir", data, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["backend"].as_str(), &v["found"]),
        (Some("sqlite"), &v["known"])
    );
    assert_eq!(v["pending"], serde_json::json!([]));
    let out = run(&["store", "migrate", "--data-dir", data]);
    assert!(
        stdout(&out).contains("up to date; nothing to apply"),
        "{}",
        stdout(&out)
    );

    // A newer build's file: named, refused, left alone.
    let file = dir.path().join("data").join("findings.sqlite");
    rusqlite::Connection::open(&file)
        .unwrap()
        .pragma_update(None, "user_version", known + 1)
        .unwrap();
    let out = run(&["store", "status", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("newer than this build knows"),
        "{}",
        stdout(&out)
    );
    let out = run(&["store", "migrate", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is newer than this build understands"),
        "{err}"
    );
    assert!(err.contains(&file.display().to_string()), "{err}");
}
