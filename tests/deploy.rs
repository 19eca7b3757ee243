//! The deployment files under `deploy/`: every YAML document parses and says
//! what matters (probes, non-root, read-only root, resources, replicas that
//! share one PostgreSQL store and survive a rollout, a drain and a zone
//! outage), the configs load as the service's own `Config`, the alerts pass
//! `promtool check rules` and their unit tests (`promtool test rules`), and
//! the dashboard and the alerts use only metrics the service exports.
//!
//! Needs `promtool` (Debian package `prometheus`, installed by
//! `scripts/install-test-deps.sh`); without it the promtool tests fail.

use crate::support;
use support::run_ok;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use image_auditor::audit::VerdictKind;
use image_auditor::config::Config;
use serde_json::{Value, json};

/// The metrics contract: every name the service exports (README "Metrics",
/// docs/design.md §8.3). The dashboard and the alerts may use nothing else.
const METRICS: &[&str] = &[
    "image_auditor_events_total",
    "image_auditor_duplicate_deliveries_total",
    "image_auditor_retried_deliveries_total",
    "image_auditor_store_errors_total",
    "image_auditor_webhook_requests_total",
    "image_auditor_webhook_ignored_events_total",
    "image_auditor_manifest_load_failures_total",
    "image_auditor_registry_requests_total",
    "image_auditor_cache_hits_total",
    "image_auditor_cache_misses_total",
    "image_auditor_cache_corruptions_total",
    "image_auditor_alerts_total",
    "image_auditor_processing_seconds",
    "image_auditor_last_event_timestamp_seconds",
    "image_auditor_index_digests",
    "image_auditor_index_manifests",
    "image_auditor_index_excluded_manifests",
    "image_auditor_index_children",
    "image_auditor_index_generation",
    "image_auditor_index_last_load_timestamp_seconds",
    "image_auditor_undecided_backlog",
    "image_auditor_outbox_backlog",
];
const HISTOGRAMS: &[&str] = &["image_auditor_processing_seconds"];

const CONFIG_PATH: &str = "/etc/image-auditor/config.yaml";
const SERVE_ARGS: [&str; 3] = ["serve", "--config", CONFIG_PATH];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every non-empty document of a YAML file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_string()
}

fn kube_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// The single Kubernetes resource of `kind` under deploy/kubernetes/.
fn resource(kind: &str) -> Value {
    let mut found: Vec<Value> = yaml_files(&kube_dir())
        .iter()
        .filter(|p| !file_name(p).ends_with(".test.yaml"))
        .flat_map(|p| yaml_docs(p))
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} in deploy/kubernetes");
    found.pop().unwrap()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not a list: {v}"))
}

/// `promtool`, or a failure that says how to install it.
fn promtool() -> &'static str {
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => "promtool",
        Ok(out) => panic!(
            "`promtool --version` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "promtool is needed by this test and cannot be run ({e}): \
             apt-get install prometheus (or bash scripts/install-test-deps.sh)"
        ),
    }
}

/// The text of the repository's shell script at `path`, once `bash -n`
/// has found its syntax valid.
fn shell_script(path: &str) -> String {
    let path = repo().join(path);
    run_ok(Command::new("bash").arg("-n").arg(&path));
    read(&path)
}

fn run_promtool(dir: &Path, args: &[&str]) {
    run_ok(Command::new(promtool()).args(args).current_dir(dir));
}

/// The alerting rules of the PrometheusRule, by alert name.
fn alerts() -> BTreeMap<String, Value> {
    let rule = resource("PrometheusRule");
    let mut alerts = BTreeMap::new();
    for group in arr(&rule["spec"]["groups"], "spec.groups") {
        for r in arr(&group["rules"], "rules") {
            if let Some(name) = r["alert"].as_str() {
                assert!(
                    alerts.insert(name.to_string(), r.clone()).is_none(),
                    "alert {name} defined twice"
                );
            }
        }
    }
    alerts
}

/// Writes the PrometheusRule's spec as a plain rules file (JSON is YAML).
fn write_rules_file(dir: &Path) {
    let rule = resource("PrometheusRule");
    std::fs::write(
        dir.join("image-auditor.rules.yaml"),
        serde_json::to_string_pretty(&rule["spec"]).unwrap(),
    )
    .unwrap();
}

/// The keys of `store.postgres` (README "Configuration").
const POSTGRES_KEYS: &[&str] = &[
    "url_env",
    "url_file",
    "pool_size",
    "connect_timeout",
    "ca_file",
];

/// A shipped config as the service's `Config`, and its `store` section as
/// YAML for [`postgres_url_env`], which checks what `Config` accepts but a
/// deployment must not use (a URL file, a pool too large).
fn parse_config(text: &str) -> (Config, Value) {
    let value: Value = serde_saphyr::from_str(text).unwrap();
    let store = value["store"].clone();
    let config: Config = serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("config does not parse: {e}\n{text}"));
    assert!(
        config.store.postgres.is_some(),
        "the store section parses as PostgreSQL"
    );
    (config, store)
}

/// The findings store of a shipped config is PostgreSQL (never SQLite in
/// `data_dir`, which the deployments keep on a disk that dies with the pod),
/// with its URL from the environment: the variable's name.
fn postgres_url_env(store: &Value, what: &str) -> String {
    let pg = &store["postgres"];
    let keys = pg
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no store.postgres: the findings would be in data_dir"));
    for key in keys.keys() {
        assert!(
            POSTGRES_KEYS.contains(&key.as_str()),
            "{what}: store.postgres.{key}"
        );
    }
    assert_eq!(
        store.as_object().unwrap().len(),
        1,
        "{what}: store has one backend"
    );
    assert!(
        pg["url_file"].is_null(),
        "{what}: the URL comes from a secret's variable"
    );
    assert!(
        pg["pool_size"]
            .as_u64()
            .is_some_and(|n| (1..=32).contains(&n)),
        "{what}: pool_size {}",
        pg["pool_size"]
    );
    assert!(pg["connect_timeout"].is_string(), "{what}: connect_timeout");
    let var = str_of(&pg["url_env"], "store.postgres.url_env").to_string();
    // IMAGE_AUDITOR_* variables override config keys (README "Configuration").
    assert!(!var.starts_with("IMAGE_AUDITOR_"), "{what}: {var}");
    var
}

/// The container variable `name` of `container`, taken from a secret:
/// (secret name, key).
fn env_from_secret(container: &Value, name: &str) -> (String, String) {
    let env = arr(&container["env"], "env");
    let found: Vec<&Value> = env.iter().filter(|e| e["name"] == name).collect();
    assert_eq!(found.len(), 1, "one env entry {name}: {env:?}");
    assert!(
        found[0]["value"].is_null(),
        "{name} must not be written inline"
    );
    let secret = &found[0]["valueFrom"]["secretKeyRef"];
    (
        str_of(&secret["name"], "secretKeyRef.name").to_string(),
        str_of(&secret["key"], "secretKeyRef.key").to_string(),
    )
}

/// Loads a config through `Config::load` (full validation), with the paths
/// that only exist in a container pointed at the repository's fixtures and a
/// temporary data directory. `Config::load` also reads the process
/// environment (PORT, IMAGE_AUDITOR_*); nothing here sets it.
fn load_config_redirected(text: &str) -> Config {
    let mut value: Value = serde_saphyr::from_str(text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    value["manifests"] = json!(repo().join(image_auditor::config::DEFAULT_MANIFESTS));
    value["data_dir"] = json!(dir.path().join("data"));
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, serde_json::to_string(&value).unwrap()).unwrap();
    Config::load(Some(&path)).unwrap_or_else(|e| panic!("config does not load: {e}"))
}

/// The shipped configs follow registry.k8s.io/ of kubernetes/k8s.io in
/// process (the image has no `git`, and no volume brings the manifests).
fn follows_k8s_io(config: &Config) {
    let git = config.manifests_git.as_ref().expect("manifests_git");
    assert_eq!(git.url, "https://github.com/kubernetes/k8s.io");
    assert_eq!(git.branch, "main");
    assert_eq!(git.path, Path::new("registry.k8s.io"));
    assert!(
        git.token_env.is_none() && git.token_file.is_none(),
        "public"
    );
}

/// Every `image_auditor_*` name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("image_auditor_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The contract name a referenced series belongs to (histogram series carry
/// `_bucket`, `_sum`, `_count`).
fn contract_name(series: &str) -> Option<&'static str> {
    if let Some(m) = METRICS.iter().find(|m| **m == series) {
        return Some(m);
    }
    HISTOGRAMS.iter().copied().find(|h| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| series.strip_prefix(h) == Some(s))
    })
}

fn dashboard() -> Value {
    let path = repo().join("deploy/grafana/image-auditor.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("dashboard JSON: {e}"))
}

/// Every PromQL expression of the dashboard: (panel title, expr).
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in arr(&dash["panels"], "panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                str_of(&panel["title"], "title").to_string(),
                str_of(&target["expr"], "expr").to_string(),
            ));
        }
    }
    queries
}

// ---------------------------------------------------------------- Kubernetes

#[test]
fn every_yaml_document_under_deploy_parses() {
    for dir in ["deploy/kubernetes", "deploy/cloudrun"] {
        let files = yaml_files(&repo().join(dir));
        assert!(!files.is_empty(), "no YAML in {dir}");
        for file in files {
            let docs = yaml_docs(&file);
            assert!(!docs.is_empty(), "{} has no document", file.display());
            if dir == "deploy/kubernetes" && !file_name(&file).ends_with(".test.yaml") {
                for doc in docs {
                    assert!(doc["apiVersion"].is_string(), "{}", file.display());
                    assert!(doc["kind"].is_string(), "{}", file.display());
                    assert!(doc["metadata"]["name"].is_string() || doc["kind"] == "Kustomization");
                }
            }
        }
    }
}

#[test]
fn kustomization_lists_every_resource_file() {
    let kustomization = resource("Kustomization");
    let listed: BTreeSet<String> = arr(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resource").to_string())
        .collect();
    let mut present = BTreeSet::new();
    for entry in std::fs::read_dir(kube_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == "kustomization.yaml" || name.ends_with(".test.yaml") {
            continue;
        }
        assert!(
            name.ends_with(".yaml"),
            "deploy/kubernetes/{name} is neither a resource nor a test"
        );
        present.insert(name);
    }
    assert_eq!(listed, present, "kustomization.yaml resources vs files");
}

#[test]
fn deployment_is_three_non_root_read_only_replicas_with_probes() {
    let d = resource("Deployment");
    assert_eq!(d["apiVersion"], "apps/v1");
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 3, "replicas on one subscription");
    // A rollout never has fewer than three ready pods.
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], 1);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 60);
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &spec["template"]["metadata"]["labels"][k], v,
            "selector {k}"
        );
    }

    let containers = arr(&pod["containers"], "containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["image"], "ghcr.io/example/image-auditor:0.1.0");
    assert_eq!(c["args"], json!(SERVE_ARGS));
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );

    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
    }

    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );

    let r = &c["resources"];
    assert_eq!(r["requests"], json!({"cpu": "100m", "memory": "256Mi"}));
    assert_eq!(r["limits"], json!({"cpu": "1", "memory": "512Mi"}));
}

/// The replicas are spread over zones (hard: a zone outage takes one) and
/// nodes (soft: a small cluster still schedules them), each selecting
/// exactly the Deployment's pods.
#[test]
fn deployment_spreads_replicas_across_zones_and_nodes() {
    let d = resource("Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    let selects_the_pods = |selector: &Value, what: &str| {
        let wanted = selector["matchLabels"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: matchLabels"));
        assert!(!wanted.is_empty(), "{what}");
        for (k, v) in wanted {
            assert_eq!(&labels[k], v, "{what}: label {k}");
        }
    };

    let spread = arr(
        &pod["topologySpreadConstraints"],
        "topologySpreadConstraints",
    );
    let zone: Vec<&Value> = spread
        .iter()
        .filter(|c| c["topologyKey"] == "topology.kubernetes.io/zone")
        .collect();
    assert_eq!(zone.len(), 1, "one spread over zones: {spread:?}");
    let zone = zone[0];
    assert_eq!(zone["maxSkew"], 1);
    assert_eq!(zone["whenUnsatisfiable"], "DoNotSchedule");
    // A zone that is down (its nodes tainted) is no domain: the pods it
    // lost must be schedulable in the zones that remain.
    assert_eq!(zone["nodeTaintsPolicy"], "Honor");
    // Each revision spreads on its own: the rollout's surge pod fits.
    assert_eq!(zone["matchLabelKeys"], json!(["pod-template-hash"]));
    selects_the_pods(&zone["labelSelector"], "zone spread");

    let anti = arr(
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"],
        "preferred podAntiAffinity",
    );
    assert_eq!(anti.len(), 1);
    let term = &anti[0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    selects_the_pods(&term["labelSelector"], "node anti-affinity");
    assert!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .is_null(),
        "a hard per-node rule would block the surge pod on a three-node cluster"
    );
}

#[test]
fn pod_disruption_budget_lets_a_drain_take_one_replica_at_a_time() {
    let d = resource("Deployment");
    let pdb = resource("PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"]["minAvailable"].is_null());
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"], d["spec"]["selector"]["matchLabels"],
        "the budget covers exactly the Deployment's pods"
    );
    assert!(
        d["spec"]["replicas"].as_u64().unwrap() > 1,
        "a budget of one replica blocks drains"
    );
}

#[test]
fn deployment_volumes_match_the_configmap_secret_and_config() {
    let d = resource("Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let volumes: BTreeMap<&str, &Value> = arr(&pod["volumes"], "volumes")
        .iter()
        .map(|v| (str_of(&v["name"], "volume name"), v))
        .collect();
    let mounts: BTreeMap<&str, &str> = arr(&c["volumeMounts"], "volumeMounts")
        .iter()
        .map(|m| {
            (
                str_of(&m["name"], "mount name"),
                str_of(&m["mountPath"], "mountPath"),
            )
        })
        .collect();
    for name in mounts.keys() {
        assert!(volumes.contains_key(name), "mount {name} has no volume");
    }

    // --config names config.yaml of the mounted ConfigMap.
    let cm = resource("ConfigMap");
    assert_eq!(
        volumes["config"]["configMap"]["name"],
        cm["metadata"]["name"]
    );
    assert_eq!(format!("{}/config.yaml", mounts["config"]), CONFIG_PATH);
    let text = str_of(&cm["data"]["config.yaml"], "data.config.yaml");
    let (config, store) = parse_config(text);

    // The findings are in PostgreSQL, its URL in the variable the config
    // names, set from a Secret, never from the ConfigMap.
    let var = postgres_url_env(&store, "configmap.yaml");
    assert_eq!(
        env_from_secret(c, &var),
        ("image-auditor-database".to_string(), "url".to_string())
    );
    assert!(!text.contains("postgres://") && !text.contains("postgresql://"));
    // data_dir holds only what a pod rebuilds (registry cache, manifest
    // tree): a volume that dies with the pod, no claim that three replicas
    // would have to share.
    assert_eq!(Path::new(mounts["data"]), config.data_dir);
    assert!(
        volumes["data"]["emptyDir"].is_object(),
        "{}",
        volumes["data"]
    );
    for (name, v) in &volumes {
        assert!(
            v["persistentVolumeClaim"].is_null(),
            "volume {name} is a claim"
        );
    }
    let kinds: BTreeSet<String> = yaml_files(&kube_dir())
        .iter()
        .flat_map(|p| yaml_docs(p))
        .filter_map(|d| d["kind"].as_str().map(str::to_string))
        .collect();
    assert!(!kinds.contains("PersistentVolumeClaim"), "{kinds:?}");

    // The manifests are fetched into data_dir: no volume to provide.
    follows_k8s_io(&config);
    assert!(!mounts.contains_key("manifests") && !volumes.contains_key("manifests"));
    assert_eq!(c["ports"][0]["containerPort"], config.http.listen.port());
    // With a read-only root, temporary files need a writable /tmp.
    assert_eq!(mounts["tmp"], "/tmp");
    assert_eq!(
        pod["serviceAccountName"],
        resource("ServiceAccount")["metadata"]["name"]
    );
}

#[test]
fn service_and_service_monitor_scrape_metrics_on_the_http_port() {
    let d = resource("Deployment");
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    let svc = resource("Service");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "Service selector {k}");
    }
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}])
    );

    let sm = resource("ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selector {k}"
        );
    }
    let endpoints = arr(&sm["spec"]["endpoints"], "endpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["path"], "/metrics");
    assert_eq!(endpoints[0]["port"], "http");
    assert_eq!(endpoints[0]["interval"], "30s");
    // The alerts select job="image-auditor": the operator names the job
    // after the Service unless jobLabel says otherwise.
    assert_eq!(svc["metadata"]["name"], "image-auditor");
    assert!(sm["spec"]["jobLabel"].is_null());
}

#[test]
fn configmap_config_loads_as_the_service_config() {
    let cm = resource("ConfigMap");
    let text = str_of(&cm["data"]["config.yaml"], "data.config.yaml");
    // The text as shipped: types, unknown keys, durations.
    let (config, store) = parse_config(text);
    assert_eq!(postgres_url_env(&store, "configmap.yaml"), "DATABASE_URL");
    follows_k8s_io(&config);
    assert_eq!(config.data_dir, Path::new("/var/lib/image-auditor"));
    assert_eq!(config.http.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.log.format, image_auditor::config::LogFormat::Json);
    assert!(
        !config.pubsub.push.enabled,
        "unauthenticated push in-cluster"
    );
    let pull = config.pubsub.pull.as_ref().expect("pubsub.pull");
    pull.validate()
        .unwrap_or_else(|e| panic!("pubsub.pull: {e}"));
    // Full validation, as `serve` does it, with the container paths
    // redirected to the fixtures and a temporary directory.
    let loaded = load_config_redirected(text);
    assert!(loaded.pubsub.pull.is_some());
}

// ------------------------------------------------------------------- Alerts

#[test]
fn prometheus_rule_passes_promtool_check_rules() {
    let dir = tempfile::tempdir().unwrap();
    write_rules_file(dir.path());
    run_promtool(dir.path(), &["check", "rules", "image-auditor.rules.yaml"]);
}

#[test]
fn prometheus_rule_unit_tests_pass() {
    let dir = tempfile::tempdir().unwrap();
    write_rules_file(dir.path());
    std::fs::copy(
        kube_dir().join("prometheusrule.test.yaml"),
        dir.path().join("prometheusrule.test.yaml"),
    )
    .unwrap();
    run_promtool(dir.path(), &["test", "rules", "prometheusrule.test.yaml"]);
}

#[test]
fn every_alert_is_actionable_documented_and_tested_both_ways() {
    let alerts = alerts();
    let readme = read(&repo().join("deploy/README.md"));
    let tests = yaml_docs(&kube_dir().join("prometheusrule.test.yaml"));
    assert_eq!(tests[0]["rule_files"], json!(["image-auditor.rules.yaml"]));
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in arr(&tests[0]["tests"], "tests") {
        for t in arr(&case["alert_rule_test"], "alert_rule_test") {
            let name = str_of(&t["alertname"], "alertname").to_string();
            let expected = t["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected > 0 { &mut fires } else { &mut quiet }.insert(name);
        }
    }
    for (name, rule) in &alerts {
        let severity = str_of(&rule["labels"]["severity"], "severity");
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity}"
        );
        for key in ["summary", "description", "runbook_url"] {
            let text = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: no {key}");
        }
        let runbook = str_of(&rule["annotations"]["runbook_url"], "runbook_url");
        let anchor = name.to_lowercase();
        assert!(
            runbook.ends_with(&format!("deploy/README.md#{anchor}")),
            "{name}: {runbook}"
        );
        assert!(
            readme.lines().any(|l| l == format!("#### {name}")),
            "deploy/README.md has no runbook section for {name}"
        );
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "deploy/README.md alert table lacks {name}"
        );
        assert!(fires.contains(name), "no promtool case where {name} fires");
        assert!(
            quiet.contains(name),
            "no promtool case where {name} stays quiet"
        );
    }
    for name in fires.union(&quiet) {
        assert!(alerts.contains_key(name), "test of unknown alert {name}");
    }
}

#[test]
fn shipped_alerts_have_the_agreed_conditions() {
    let alerts = alerts();
    let names: BTreeSet<&str> = alerts.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "ImageAuditorAlertDeliveryFailing",
            "ImageAuditorDown",
            "ImageAuditorManifestLoadFailed",
            "ImageAuditorNoEventsSinceStart",
            "ImageAuditorNoRecentEvents",
            "ImageAuditorOutboxBacklog",
            "ImageAuditorReplicaDown",
            "ImageAuditorUndecidedBacklogGrowing",
            "ImageAuditorUnverifiable",
            "ImageAuditorViolation",
        ])
    );
    let expr = |name: &str| str_of(&alerts[name]["expr"], "expr").to_string();
    let for_ = |name: &str| alerts[name]["for"].as_str().map(str::to_string);
    assert_eq!(
        expr("ImageAuditorOutboxBacklog").trim(),
        "max by (sink) (image_auditor_outbox_backlog) > 100"
    );
    assert_eq!(for_("ImageAuditorOutboxBacklog").as_deref(), Some("15m"));
    assert_eq!(
        expr("ImageAuditorManifestLoadFailed").trim(),
        "increase(image_auditor_manifest_load_failures_total[30m]) > 0"
    );
    assert!(
        expr("ImageAuditorAlertDeliveryFailing")
            .contains(r#"increase(image_auditor_alerts_total{outcome="failed"}[15m]) > 0"#)
    );
    assert_eq!(
        expr("ImageAuditorNoRecentEvents").trim(),
        "time() - image_auditor_last_event_timestamp_seconds > 3600"
    );
    assert!(
        expr("ImageAuditorNoEventsSinceStart")
            .contains("absent(image_auditor_last_event_timestamp_seconds")
    );
    assert_eq!(
        for_("ImageAuditorNoEventsSinceStart").as_deref(),
        Some("1h")
    );
    // Replicas: the page is for no replica up; one replica down is a warning.
    let down = expr("ImageAuditorDown");
    assert!(down.contains(r#"max by (job) (up{job="image-auditor"}) == 0"#));
    assert!(down.contains(r#"absent(up{job="image-auditor"})"#));
    let replica = expr("ImageAuditorReplicaDown");
    assert!(replica.contains(r#"(up{job="image-auditor"} == 0) and on (job)"#));
    assert_eq!(for_("ImageAuditorReplicaDown").as_deref(), Some("15m"));
    assert_eq!(
        alerts["ImageAuditorReplicaDown"]["labels"]["severity"].as_str(),
        Some("warning")
    );
}

/// The two verdict alerts cover exactly the verdicts that need a human
/// (`VerdictKind::alerts`), each verdict in one alert only.
#[test]
fn verdict_alerts_cover_exactly_the_verdicts_that_need_a_human() {
    let alerts = alerts();
    let needs_human: BTreeSet<&str> = VerdictKind::ALL
        .iter()
        .filter(|v| v.alerts())
        .map(|v| v.as_str())
        .collect();

    let violation = str_of(&alerts["ImageAuditorViolation"]["expr"], "expr");
    let mut regexes = BTreeSet::new();
    let mut rest = violation;
    while let Some(at) = rest.find(r#"verdict=~""#) {
        let tail = &rest[at + r#"verdict=~""#.len()..];
        let end = tail.find('"').unwrap();
        regexes.insert(&tail[..end]);
        rest = &tail[end..];
    }
    assert_eq!(regexes.len(), 1, "one verdict set throughout: {regexes:?}");
    let in_violation: BTreeSet<&str> = regexes.first().unwrap().split('|').collect();

    let unverifiable = str_of(&alerts["ImageAuditorUnverifiable"]["expr"], "expr");
    assert!(unverifiable.contains(r#"verdict="unverifiable""#));
    assert!(!in_violation.contains("unverifiable"), "would alert twice");

    let mut covered = in_violation.clone();
    covered.insert("unverifiable");
    assert_eq!(covered, needs_human);
}

// ---------------------------------------------------------------- Cloud Run

/// The Cloud SQL instance service.yaml connects to.
const CLOUD_SQL_INSTANCE: &str = "PROJECT:REGION:INSTANCE";

#[test]
fn cloud_run_service_scales_out_on_cloud_sql_with_probes() {
    let docs = yaml_docs(&repo().join("deploy/cloudrun/service.yaml"));
    assert_eq!(docs.len(), 1);
    let s = &docs[0];
    assert_eq!(s["apiVersion"], "serving.knative.dev/v1");
    assert_eq!(s["kind"], "Service");
    let template = &s["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["autoscaling.knative.dev/minScale"], "1");
    let max_scale: u32 = str_of(&annotations["autoscaling.knative.dev/maxScale"], "maxScale")
        .parse()
        .unwrap();
    assert!(
        max_scale > 1,
        "instances share one store: maxScale {max_scale}"
    );
    assert_eq!(
        annotations["run.googleapis.com/cloudsql-instances"],
        CLOUD_SQL_INSTANCE
    );
    let spec = &template["spec"];
    assert!(spec["containerConcurrency"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(
        spec["serviceAccountName"],
        "image-auditor@PROJECT.iam.gserviceaccount.com"
    );
    let containers = arr(&spec["containers"], "containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["args"], json!(SERVE_ARGS));
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    for probe in ["startupProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], 8080, "{probe}");
    }
    // Cloud Run sets PORT; defining it is refused at deploy time.
    for env in c["env"].as_array().into_iter().flatten() {
        assert_ne!(env["name"], "PORT");
    }
    let mounts: BTreeSet<&str> = arr(&c["volumeMounts"], "volumeMounts")
        .iter()
        .map(|m| str_of(&m["mountPath"], "mountPath"))
        .collect();
    assert!(mounts.contains("/etc/image-auditor"));
    assert!(mounts.contains("/var/lib/image-auditor"));
    assert!(
        !mounts.contains("/manifests"),
        "manifests come from manifests_git"
    );

    // The store: Cloud SQL, the URL from Secret Manager in the variable
    // config.yaml names; data_dir (in memory) holds no findings.
    let (config, store) = parse_config(&read(&repo().join("deploy/cloudrun/config.yaml")));
    let var = postgres_url_env(&store, "cloudrun/config.yaml");
    let (secret, version) = env_from_secret(c, &var);
    assert_eq!(secret, "image-auditor-database-url");
    assert_eq!(version, "latest");
    assert_eq!(config.data_dir, Path::new("/var/lib/image-auditor"));

    // cloudsql.sh writes that secret: a unix-socket connection string for
    // the instance of the annotation.
    let script = shell_script("deploy/cloudrun/cloudsql.sh");
    let assigned = |name: &str| {
        script
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("cloudsql.sh does not set {name}"))
            .trim_matches('"')
            .to_string()
    };
    assert_eq!(assigned("SECRET"), secret);
    let connection = assigned("INSTANCE_CONNECTION_NAME")
        .replace("${PROJECT}", "PROJECT")
        .replace("${REGION}", "REGION")
        .replace("${INSTANCE}", "INSTANCE");
    assert_eq!(connection, CLOUD_SQL_INSTANCE);
    let url = assigned("URL");
    let host = url
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("host="))
        .expect("host= in the connection string");
    assert_eq!(host, "/cloudsql/${INSTANCE_CONNECTION_NAME}");
    for key in ["dbname=", "user=", "password="] {
        assert!(
            url.split_whitespace().any(|kv| kv.starts_with(key)),
            "{url} lacks {key}"
        );
    }
    assert_eq!(
        assigned("RUNTIME_SA").replace("${PROJECT}", "PROJECT"),
        str_of(&spec["serviceAccountName"], "serviceAccountName")
    );
    for needle in [
        r#"gcloud secrets create "$SECRET""#,
        "--role roles/secretmanager.secretAccessor",
        "--role roles/cloudsql.client",
    ] {
        assert!(script.contains(needle), "cloudsql.sh lacks {needle}");
    }
    // The in-memory volume is no store.
    let volumes = arr(&spec["volumes"], "volumes");
    let data = volumes
        .iter()
        .find(|v| v["name"] == "data")
        .expect("data volume");
    assert_eq!(data["emptyDir"]["medium"], "Memory");
}

#[test]
fn cloud_run_config_loads_and_matches_the_push_script() {
    let text = read(&repo().join("deploy/cloudrun/config.yaml"));
    let (config, _) = parse_config(&text);
    assert!(config.pubsub.push.enabled);
    assert!(config.pubsub.pull.is_none());
    let auth = config.pubsub.push.auth.clone().expect("pubsub.push.auth");
    auth.validate()
        .unwrap_or_else(|e| panic!("pubsub.push.auth: {e}"));
    assert_eq!(
        auth.service_account_emails,
        ["push-invoker@project-id.iam.gserviceaccount.com"]
    );
    assert_eq!(config.data_dir, Path::new("/var/lib/image-auditor"));
    follows_k8s_io(&config);
    load_config_redirected(&text);

    let script = shell_script("deploy/cloudrun/pubsub-push.sh");
    for needle in [
        "gcloud pubsub subscriptions create",
        r#"--push-endpoint="${SERVICE_URL}/pubsub/push""#,
        r#"--push-auth-service-account="$INVOKER""#,
        r#"--push-auth-token-audience="$AUDIENCE""#,
        r#"INVOKER="push-invoker@${PROJECT}.iam.gserviceaccount.com""#,
        "--role roles/run.invoker",
        "--role roles/iam.serviceAccountTokenCreator",
    ] {
        assert!(script.contains(needle), "pubsub-push.sh lacks {needle}");
    }

    // The config snippet in the script's comment is valid config and says
    // what config.yaml says.
    let snippet: String = script
        .lines()
        .skip_while(|l| *l != "#   pubsub:")
        .take_while(|l| *l != "#")
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    let from_comment: Config = serde_saphyr::from_str(&snippet)
        .unwrap_or_else(|e| panic!("snippet in pubsub-push.sh: {e}\n{snippet}"));
    let comment_auth = from_comment.pubsub.push.auth.expect("auth in snippet");
    assert_eq!(comment_auth.audience, auth.audience);
    assert_eq!(
        comment_auth.service_account_emails,
        auth.service_account_emails
    );
}

// ---------------------------------------------------------- Docker, Grafana

#[test]
fn dockerfile_builds_locked_and_runs_as_nonroot_on_distroless() {
    let text = read(&repo().join("deploy/Dockerfile"));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let rust_version = lines
        .iter()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let cargo_toml = read(&repo().join("Cargo.toml"));
    let msrv = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let minor = |v: &str| v.split('.').nth(1).unwrap().parse::<u32>().unwrap();
    assert!(
        minor(rust_version) >= minor(msrv),
        "{rust_version} < {msrv}"
    );
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(
        froms,
        [
            "FROM rust:${RUST_VERSION}-bookworm AS builder",
            "FROM gcr.io/distroless/cc-debian12:nonroot"
        ]
    );
    assert!(text.contains("cargo build --release --locked"));
    let runtime: Vec<&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("FROM gcr.io/distroless"))
        .copied()
        .collect();
    for want in [
        "USER 65532:65532",
        "EXPOSE 8080",
        r#"ENTRYPOINT ["/usr/local/bin/image-auditor"]"#,
        r#"CMD ["serve"]"#,
        "COPY manifests-fixtures /opt/image-auditor/manifests-fixtures",
        "WORKDIR /opt/image-auditor",
    ] {
        assert!(runtime.contains(&want), "runtime stage lacks {want}");
    }
    // Nothing is installed at run time (distroless has no shell to run it):
    // manifests_git speaks git in process, so no `git` is needed either.
    assert!(
        !runtime.iter().any(|l| l.starts_with("RUN ")),
        "the runtime stage runs nothing"
    );
    // No variable that would silently override the config file.
    assert!(!lines.iter().any(|l| l.starts_with("ENV ")));
    // The embedded default is where the image puts the fixtures.
    assert!(
        repo()
            .join(image_auditor::config::DEFAULT_MANIFESTS)
            .is_dir()
    );

    let ignore = read(&repo().join(".dockerignore"));
    let patterns: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for p in ["target/", "data/", ".git/"] {
        assert!(patterns.contains(p), ".dockerignore lacks {p}");
    }
    for needed in ["src", "Cargo.lock", "manifests-fixtures", "benches"] {
        assert!(
            !patterns.iter().any(|p| p.trim_end_matches('/') == needed),
            ".dockerignore excludes {needed}, which the build needs"
        );
    }
}

#[test]
fn grafana_dashboard_parses_and_uses_the_datasource_variable() {
    let dash = dashboard();
    assert_eq!(dash["schemaVersion"], 39);
    let vars = arr(&dash["templating"]["list"], "templating.list");
    assert!(
        vars.iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "no DS_PROMETHEUS datasource variable"
    );
    let mut ids = BTreeSet::new();
    for panel in arr(&dash["panels"], "panels") {
        let title = str_of(&panel["title"], "title");
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = arr(&panel["targets"], "targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        }
    }
    let queries = dashboard_queries(&dash);
    let has = |needle: &str| queries.iter().any(|(_, e)| e.contains(needle));
    assert!(has("histogram_quantile(0.5,"));
    assert!(has("histogram_quantile(0.99,"));
    assert!(has("image_auditor_processing_seconds_bucket"));
}

/// Every Grafana query is valid PromQL: `promtool check rules` on a file of
/// recording rules made from them (Grafana's variables substituted).
#[test]
fn grafana_queries_are_valid_promql() {
    let dash = dashboard();
    let rules: Vec<Value> = dashboard_queries(&dash)
        .iter()
        .enumerate()
        .map(|(i, (title, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$__range", "6h")
                .replace("$job", "image-auditor");
            assert!(!expr.contains('$'), "{title}: unknown variable in {expr}");
            json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(dir.path().join("dashboard.rules.yaml"), file.to_string()).unwrap();
    run_promtool(dir.path(), &["check", "rules", "dashboard.rules.yaml"]);
}

/// The dashboard and the alerts reference only exported metrics, and the
/// dashboard shows every one of them.
#[test]
fn referenced_metrics_are_in_the_contract() {
    let rule_text = serde_json::to_string(&resource("PrometheusRule")["spec"]).unwrap();
    let dash_text = read(&repo().join("deploy/grafana/image-auditor.json"));
    let mut on_dashboard = BTreeSet::new();
    for (what, text) in [("PrometheusRule", &rule_text), ("dashboard", &dash_text)] {
        let names = metric_names(text);
        assert!(!names.is_empty(), "{what} references no metric");
        for name in names {
            let Some(contract) = contract_name(&name) else {
                panic!("{what} references {name}, which the service does not export");
            };
            if what == "dashboard" {
                on_dashboard.insert(contract);
            }
        }
    }
    let missing: Vec<&&str> = METRICS
        .iter()
        .filter(|m| !on_dashboard.contains(**m))
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
    // Promtool's unit tests feed series by name too.
    let tests = read(&kube_dir().join("prometheusrule.test.yaml"));
    for name in metric_names(&tests) {
        assert!(contract_name(&name).is_some(), "test series {name}");
    }
}

#[test]
fn install_script_installs_promtool_and_amtool() {
    let script = read(&repo().join("scripts/install-test-deps.sh"));
    let line = script
        .lines()
        .find(|l| l.starts_with("packages=("))
        .expect("packages=(…)");
    let packages: BTreeSet<&str> = line
        .trim_start_matches("packages=(")
        .trim_end_matches(')')
        .split_whitespace()
        .collect();
    assert!(packages.contains("prometheus"), "{line}");
    assert!(packages.contains("prometheus-alertmanager"), "{line}");
}

/// The running service exports every metric of the contract (so no alert
/// or panel watches a name that is never written), and a real Prometheus
/// scrapes and stores them. Against a real registry, so that the
/// registry and cache counters carry samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_the_whole_contract_and_prometheus_scrapes_it() {
    use support::registry::{Workbench, push_tag};

    let mut bench = Workbench::start();
    let (host, dir, layout) = (&bench.reg.host, &bench.work, &mut bench.layout);
    let amd64 = layout.image("amd64");
    let index = layout.index(&[(&amd64, Some(("linux", "amd64")))]);
    layout.tag(&index, "1.0");
    push_tag(layout, "1.0", host, "staging/app");
    let root = dir.path().join("manifests-root");
    for project in ["demo", "broken"] {
        std::fs::create_dir_all(root.join("manifests").join(project)).unwrap();
        std::fs::create_dir_all(root.join("images").join(project)).unwrap();
        std::fs::write(
            root.join("manifests")
                .join(project)
                .join("promoter-manifest.yaml"),
            format!("registries:\n- name: {host}/staging\n  src: true\n- name: {host}/{project}\n"),
        )
        .unwrap();
    }
    std::fs::write(
        root.join("images/demo/images.yaml"),
        format!(
            "- name: app\n  dmap:\n    \"{}\": [\"1.0\"]\n",
            index.digest
        ),
    )
    .unwrap();
    // A project with an error is left out: pushes to it are undecided.
    std::fs::write(
        root.join("images/broken/images.yaml"),
        "- name: app\n  dmap: {\"sha256:1\": []}\n",
    )
    .unwrap();
    let token = "metrics-test-token-0123456789";
    let config = format!(
        "registry:\n  insecure_http_hosts: [\"{host}\"]\n\
         webhooks:\n  distribution:\n  - name: local\n    registry: \"{host}\"\n    token: {token}\n\
         alerts:\n  poll_interval: 100ms\n  group_wait: 100ms\n  sinks:\n  - name: hook\n    \
         webhook:\n      url: http://127.0.0.1:9/unreachable\n"
    );
    let service = support::service::Service::start(dir.path(), &root, &config).await;
    let push = |id: &'static str, repository: String, digest: String| {
        let payload = json!({"action": "INSERT", "digest": format!("{repository}@{digest}")});
        let data = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            payload.to_string(),
        );
        reqwest::Client::new()
            .post(service.url("/pubsub/push"))
            .json(&json!({"message": {"data": data, "messageId": id}}))
            .send()
    };
    let unknown = format!("sha256:{}", "e".repeat(64));
    // A child resolved through the registry, an unpromoted digest (a
    // finding, so alerts and the outbox move), its resend (a duplicate),
    // and a push to the broken project (undecided: retried).
    for (id, repository, digest, status) in [
        (
            "m1",
            format!("{host}/demo/app"),
            amd64.digest.to_string(),
            200,
        ),
        ("m2", format!("{host}/demo/app"), unknown.clone(), 200),
        ("m2", format!("{host}/demo/app"), unknown.clone(), 200),
        ("m3", format!("{host}/broken/app"), unknown.clone(), 503),
    ] {
        let response = push(id, repository, digest).await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            status,
            "{id}: {}",
            service.log()
        );
    }
    // A distribution notification of a blob: accepted, ignored.
    let response = reqwest::Client::new()
        .post(service.url("/webhooks/distribution"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/vnd.docker.distribution.events.v1+json")
        .body(json!({"events": [{"id": "b1", "action": "push", "target": {
            "mediaType": "application/octet-stream", "digest": unknown, "repository": "demo/app"}}]})
            .to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // The unreachable sink fails, and its backlog is reported.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = service.metrics().await;
        if text.contains(r#"image_auditor_alerts_total{sink="hook",outcome="failed"}"#)
            && text.contains(r#"image_auditor_outbox_backlog{sink="hook"} 1"#)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed alert:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = service.metrics().await;
    let declared: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in METRICS {
        // OpenMetrics declares counters without `_total`.
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            declared.contains(family),
            "{name} is in the contract but serve does not export it:\n{text}"
        );
    }
    for sample in [
        format!("image_auditor_registry_requests_total{{host=\"{host}\",outcome=\"ok\"}}"),
        "image_auditor_cache_misses_total ".to_string(),
        "image_auditor_events_total{source=\"pubsub_push\",action=\"insert\",verdict=\"promoted_child\"} 1".to_string(),
        "image_auditor_manifest_load_failures_total 1".to_string(),
        "image_auditor_webhook_ignored_events_total{source=\"distribution\",reason=\"blob\"} 1".to_string(),
        "image_auditor_duplicate_deliveries_total{source=\"pubsub_push\"} 1".to_string(),
    ] {
        assert!(text.contains(&sample), "no {sample} in\n{text}");
    }
    // What Prometheus itself makes of the exposition (OpenMetrics, which
    // `promtool check metrics` cannot lint: it expects the classic format).
    let prometheus = support::prometheus::Prometheus::start(service.port);
    for (query, value) in [
        ("up{job=\"image-auditor\"}", "1"),
        (
            "image_auditor_events_total{verdict=\"promoted_child\"}",
            "1",
        ),
        ("image_auditor_manifest_load_failures_total", "1"),
        // m1, m2, its duplicate and the undecided m3 (webhook blobs are no delivery).
        ("sum(image_auditor_processing_seconds_count)", "4"),
        ("image_auditor_outbox_backlog{sink=\"hook\"}", "1"),
    ] {
        assert_eq!(prometheus.query_until(query, value).await, value, "{query}");
    }
}
