#!/usr/bin/env python3
"""Soak and fault run of `image-auditor serve` against real components.

Events arrive together through the real Pub/Sub emulator (streaming pull) and the
CNCF distribution webhook, while the script:

  * makes the registry answer 503 to the auditor for a while (a proxy in front of
    the real `docker-registry`; skopeo pushes and the registry's own notifications
    go around it),
  * kills the service with SIGKILL twice and starts it again at once,
  * lands a broken manifest commit in the git repository the service follows, then
    the fix,
  * stops Alertmanager for a minute.

Afterwards it checks, from the findings store, the service's decision log, the
alert webhook receiver and Alertmanager's API: every event sent has exactly one
recorded decision with the expected verdict, every finding is in exactly one
alert, and it reports the service's memory over time.

    python3 benches/scripts/soak.py                      # 100,000 events over ~4 minutes
    python3 benches/scripts/soak.py --events 10000 --duration 60   # a quick look

Needs: docker-registry, skopeo, prometheus-alertmanager (apt), the Pub/Sub emulator
(google-cloud-cli-pubsub-emulator), git, and a release build (built unless --no-build).
Only the Python standard library is used. Exit status 0 when every check holds.
"""

import argparse
import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import queue
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "image-auditor")
EMULATOR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
REGISTRY = "/usr/bin/docker-registry"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
TOKEN = "soak-webhook-token-0123456789"
PROJECT = "soak"
EVENTS_V2 = "application/vnd.docker.distribution.events.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# The alert sinks of the soak's configuration; `log` is always one.
SINKS = ("log", "alertmanager", "receiver")
BULK_IMAGES = 100
BULK_DIGESTS_PER_IMAGE = 20


def log(message):
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def http_status(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def http_json(method, url, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as r:
        text = r.read()
        return json.loads(text) if text else None


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_digest(rng):
    return "sha256:" + "".join(rng.choice("0123456789abcdef") for _ in range(64))


class QuietHandler(BaseHTTPRequestHandler):
    """Keep-alive handler that does not log every request to stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass


def serve_in_background(handler):
    """A threading HTTP server for `handler` on a free loopback port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ---------------------------------------------------------------- processes


class Process:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.popen = None

    def start(self):
        out = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, start_new_session=True)
        out.close()
        return self

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig):
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if not self.alive():
            return self.popen.returncode if self.popen else None
        self.send(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            return self.popen.wait()

    def tail(self, lines=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""


# ---------------------------------------------------------------- OCI content


class Layout:
    """A hand-written OCI image layout that skopeo copies from."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        self.tags = []

    def blob(self, data):
        digest = sha256(data)
        with open(os.path.join(self.path, "blobs", "sha256", digest[7:]), "wb") as f:
            f.write(data)
        return digest

    def json_blob(self, media_type, value):
        data = json.dumps(value, separators=(",", ":")).encode()
        return {"mediaType": media_type, "digest": self.blob(data), "size": len(data)}

    def image(self, arch, salt):
        content = f"{arch} {salt}".encode()
        tar_bytes = io.BytesIO()
        with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo("content.txt")
            info.size = len(content)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
        tar_data = tar_bytes.getvalue()
        layer = gzip.compress(tar_data, mtime=0)
        layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": self.blob(layer), "size": len(layer)}
        config = self.json_blob("application/vnd.oci.image.config.v1+json", {
            "architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": {}, "rootfs": {"type": "layers", "diff_ids": [sha256(tar_data)]}})
        return self.json_blob(OCI_MANIFEST, {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
            "layers": [layer_desc]})

    def index(self, children):
        manifests = [dict(child, platform={"os": "linux", "architecture": arch})
                     for child, arch in children]
        return self.json_blob(OCI_INDEX, {
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})

    def tag(self, desc, tag):
        self.tags.append(dict(desc, annotations={"org.opencontainers.image.ref.name": tag}))
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.tags}, f)


def skopeo_push(layout, name, host, repository, tag):
    """Copies the layout's manifest `name` (and every platform of an index) to
    `host/repository:tag`, digests unchanged."""
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false",
         f"oci:{layout.path}:{name}", f"docker://{host}/{repository}:{tag}"],
        check=True, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- registry fault proxy


class FaultProxy:
    """Forwards the auditor's registry reads to the real registry, or answers
    503 while `faulty` is set."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.faulty = threading.Event()
        self.counts = Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(QuietHandler):
            def forward(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.faulty.is_set():
                    with proxy.lock:
                        proxy.counts["503"] += 1
                    payload = b'{"errors":[{"code":"UNAVAILABLE","message":"soak fault"}]}'
                    self.send_response(503)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                with proxy.lock:
                    proxy.counts[str(response.status)] += 1
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = forward

        self.server = serve_in_background(Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"


# ---------------------------------------------------------------- alert receiver


class AlertReceiver:
    """The generic webhook sink's receiver: keeps every alert body it is sent."""

    def __init__(self):
        self.alerts = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.alerts.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = serve_in_background(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def snapshot(self):
        with self.lock:
            return list(self.alerts)


# ---------------------------------------------------------------- the soak


class Soak:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.expected = {}  # (source, event id) -> expected verdict
        self.expected_lock = threading.Lock()
        self.sent = Counter()
        self.webhook_answers = Counter()
        self.timeline = []
        self.rss = []  # (seconds since start, run, kB)
        self.metrics_last = {}  # run -> last scraped /metrics text
        self.am_alert_ids = set()
        self.run_no = 0
        self.stop_sampling = threading.Event()
        self.started = time.monotonic()

    def mark(self, what):
        t = round(time.monotonic() - self.started, 1)
        self.timeline.append((t, what))
        log(f"t={t:6.1f}s {what}")

    # ---- set-up

    def start_components(self):
        w = self.work
        self.svc_port = free_port()
        # Registry, notifying the auditor directly (as a production registry would).
        reg_port = free_port()
        with open(f"{w}/registry.yml", "w") as f:
            f.write(
                f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {w}/registry-storage\n  delete:\n    enabled: true\n"
                f"http:\n  addr: 127.0.0.1:{reg_port}\n  secret: soak-only-secret\n"
                f"notifications:\n  endpoints:\n  - name: auditor\n"
                f"    url: http://127.0.0.1:{self.svc_port}/webhooks/distribution\n"
                f"    headers:\n      Authorization: [Bearer {TOKEN}]\n"
                f"    timeout: 2s\n    threshold: 3\n    backoff: 1s\n")
        self.registry = Process("registry", [REGISTRY, "serve", f"{w}/registry.yml"],
                                f"{w}/registry.log").start()
        self.registry_host = f"127.0.0.1:{reg_port}"
        wait_until("the registry", lambda: http_status(f"http://{self.registry_host}/v2/") == 200, 30)
        self.proxy = FaultProxy(self.registry_host)
        self.host = self.proxy.host  # what the manifests and the auditor call the registry

        # Pub/Sub emulator, topic and pull subscription.
        ps_port = free_port()
        self.emulator = Process("emulator", [EMULATOR, "--host=127.0.0.1", f"--port={ps_port}"],
                                f"{w}/emulator.log").start()
        self.pubsub = f"127.0.0.1:{ps_port}"
        base = f"http://{self.pubsub}/v1/projects/{PROJECT}"
        wait_until("the Pub/Sub emulator", lambda: http_status(f"{base}/topics") == 200, 90, 0.2)
        http_json("PUT", f"{base}/topics/gcr", {})
        http_json("PUT", f"{base}/subscriptions/auditor",
                  {"topic": f"projects/{PROJECT}/topics/gcr", "ackDeadlineSeconds": 10})

        # Alertmanager.
        self.am_port = free_port()
        with open(f"{w}/alertmanager.yml", "w") as f:
            f.write("route:\n  receiver: nobody\n  group_wait: 1s\nreceivers:\n- name: nobody\n")
        self.alertmanager = Process("alertmanager", [
            ALERTMANAGER, f"--config.file={w}/alertmanager.yml", f"--storage.path={w}/am-data",
            f"--web.listen-address=127.0.0.1:{self.am_port}", "--cluster.listen-address="],
            f"{w}/alertmanager.log")
        self.start_alertmanager()

        self.receiver = AlertReceiver()

    def start_alertmanager(self):
        self.alertmanager.start()
        wait_until("Alertmanager", lambda: http_status(
            f"http://127.0.0.1:{self.am_port}/-/ready") == 200, 30)

    def scrape_alertmanager(self):
        alerts = http_json("GET", f"http://127.0.0.1:{self.am_port}/api/v2/alerts", timeout=30)
        self.am_alert_ids.update(a["labels"].get("alert_id") for a in alerts)

    def write_content(self):
        """Real images in the registry: a single-platform image and a two-platform
        index, in staging and both destinations, and the manifests that promote them
        plus a bulk project of synthetic digests."""
        layout = Layout(f"{self.work}/layout")
        single = layout.image("amd64", "single")
        amd64, arm64 = layout.image("amd64", "multi"), layout.image("arm64", "multi")
        multi = layout.index([(amd64, "amd64"), (arm64, "arm64")])
        rogue = layout.image("amd64", "rogue")
        layout.tag(single, "single")
        layout.tag(multi, "multi")
        layout.tag(rogue, "rogue")
        self.layout = layout
        self.single, self.multi = single["digest"], multi["digest"]
        self.children = [amd64["digest"], arm64["digest"]]
        self.rogue = rogue["digest"]
        self.destinations = ["prod-us", "prod-eu"]

        self.bulk = []  # (image, digest, tag)
        bulk_yaml = io.StringIO()
        for i in range(BULK_IMAGES):
            name = f"bulk-{i:03}"
            bulk_yaml.write(f"# image {i}\r\n- name: {name}\r\n  dmap:\r\n")
            for j in range(BULK_DIGESTS_PER_IMAGE):
                digest = sha256(f"{name}/{j}".encode())
                tag = f"1.{j}.0"
                self.bulk.append((name, digest, tag))
                bulk_yaml.write(f'    "{digest}": ["{tag}"]\r\n')
        self.bulk_yaml = bulk_yaml.getvalue()

        git = f"{self.work}/manifests.git"
        self.git = git
        registries = (f"registries:\n- name: {self.host}/staging\n  src: true\n"
                      + "".join(f"- name: {self.host}/{d}\n" for d in self.destinations))
        for project, images in [
            ("core", f'- name: single\n  dmap:\n    "{self.single}": ["v1"]\n'
                     f'- name: multi\n  dmap:\n    "{self.multi}": ["v1"]\n'),
            ("bulk", self.bulk_yaml),
        ]:
            os.makedirs(f"{git}/registry/manifests/{project}")
            os.makedirs(f"{git}/registry/images/{project}")
            with open(f"{git}/registry/manifests/{project}/promoter-manifest.yaml", "w") as f:
                f.write(registries)
            with open(f"{git}/registry/images/{project}/images.yaml", "w", newline="") as f:
                f.write(images)
        self.git_cmd("init", "--quiet", "--initial-branch=main")
        self.git_commit("Promote the soak images")

    def git_cmd(self, *args):
        subprocess.run(["git", "-C", self.git, "-c", "user.name=soak", "-c",
                        "user.email=soak@example.invalid", *args],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def git_commit(self, message):
        self.git_cmd("add", "-A")
        self.git_cmd("commit", "--quiet", "-m", message)

    def push_real_images(self):
        for repository in ["staging"] + self.destinations:
            skopeo_push(self.layout, "single", self.registry_host, f"{repository}/single", "v1")
            skopeo_push(self.layout, "multi", self.registry_host, f"{repository}/multi", "v1")

    def write_config(self):
        w = self.work
        config = f"""\
data_dir: {w}/data
http:
  listen: 127.0.0.1:{self.svc_port}
manifests_git:
  url: file://{self.git}
  branch: main
  path: registry
  poll_interval: 2s
reload:
  refresh_min_interval: 2s
registry:
  insecure_http_hosts: ["{self.host}"]
  rate_limit: {{requests_per_second: 1000, burst: 1000}}
  per_host_rate_limit: {{requests_per_second: 1000, burst: 1000}}
  max_retries: 2
  backoff_base: 100ms
  backoff_max: 1s
pubsub:
  pull:
    project: {PROJECT}
    subscription: auditor
    streams: 2
    max_lease_extension: 10s
webhooks:
  distribution:
  - name: soak
    registry: {self.host}
    token: {TOKEN}
alerts:
  group_wait: 2s
  backoff_max: 10s
  sinks:
  - name: alertmanager
    alertmanager: {{url: "http://127.0.0.1:{self.am_port}"}}
  - name: receiver
    webhook: {{url: "{self.receiver.url}"}}
log:
  format: json
"""
        self.config = f"{w}/serve.yaml"
        with open(self.config, "w") as f:
            f.write(config)

    # ---- the service

    def start_service(self):
        self.run_no += 1
        env = dict(os.environ, PUBSUB_EMULATOR_HOST=self.pubsub)
        self.service = Process(f"serve#{self.run_no}", [BIN, "serve", "--config", self.config],
                               f"{self.work}/serve.log", env=env).start()
        url = f"http://127.0.0.1:{self.svc_port}/readyz"
        try:
            wait_until("the service to be ready", lambda: http_status(url) == 200, 60)
        except RuntimeError:
            raise RuntimeError(f"serve did not become ready:\n{self.service.tail()}") from None
        self.mark(f"service run {self.run_no} ready (pid {self.service.pid})")

    def kill_and_restart(self):
        self.mark(f"SIGKILL service run {self.run_no}")
        self.service.stop(signal.SIGKILL)
        self.start_service()

    def sample(self):
        """RSS of the live service and its last /metrics, until told to stop."""
        while not self.stop_sampling.wait(0.5):
            service = getattr(self, "service", None)
            if service is None or not service.alive():
                continue
            try:
                with open(f"/proc/{service.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            kb = int(line.split()[1])
                            self.rss.append((time.monotonic() - self.started, self.run_no, kb))
            except OSError:
                pass
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.svc_port}/metrics", timeout=2) as r:
                    self.metrics_last[self.run_no] = r.read().decode()
            except Exception:  # noqa: BLE001 - the service is being killed
                pass

    # ---- events

    def event(self, kind, rng):
        """(repository path below the registry, digest, tag, expected verdict)."""
        dest = rng.choice(self.destinations)
        if kind == "promoted":
            name, digest, tag = rng.choice(self.bulk)
            return f"{dest}/{name}", digest, tag, "promoted"
        if kind == "child":
            return f"{dest}/multi", rng.choice(self.children), None, "promoted_child"
        if kind == "unpromoted":
            return f"{dest}/single", random_digest(rng), None, "unpromoted"
        return f"{dest}/single", "sha256:" + "z" * 64, None, "malformed"

    def kind(self, rng):
        r = rng.random()
        if r < 0.90:
            return "promoted"
        if r < 0.965:
            return "child"
        if r < 0.995:
            return "unpromoted"
        return "malformed"

    def publish(self, count, rate):
        """GCR payloads through the emulator, in batches of 100, at `rate` per second."""
        rng = random.Random(self.args.seed + 1)
        url = f"http://{self.pubsub}/v1/projects/{PROJECT}/topics/gcr:publish"
        sent, started = 0, time.monotonic()
        while sent < count:
            batch, verdicts = [], []
            for _ in range(min(100, count - sent)):
                repository, digest, tag, verdict = self.event(self.kind(rng), rng)
                if verdict == "malformed":
                    data = b'{"action": "INSERT", "digest": 17'
                else:
                    payload = {"action": "INSERT", "digest": f"{self.host}/{repository}@{digest}"}
                    if tag:
                        payload["tag"] = f"{self.host}/{repository}:{tag}"
                    data = json.dumps(payload).encode()
                batch.append({"data": base64.b64encode(data).decode()})
                verdicts.append(verdict)
            ids = http_json("POST", url, {"messages": batch}, timeout=60)["messageIds"]
            with self.expected_lock:
                for message_id, verdict in zip(ids, verdicts):
                    self.expected[("pubsub_pull", message_id)] = verdict
            sent += len(batch)
            self.sent["pubsub"] += len(batch)
            pause = started + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def post_webhooks(self, count, rate, workers=4):
        """Distribution notifications of 1-5 events each, as a registry fleet sends
        them, retried on any failure like the registry's endpoint queue does."""
        rng = random.Random(self.args.seed + 2)
        envelopes = queue.Queue(maxsize=1000)

        def worker():
            conn = None
            while True:
                body = envelopes.get()
                if body is None:
                    return
                while True:
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection("127.0.0.1", self.svc_port, timeout=30)
                        conn.request("POST", "/webhooks/distribution", body=body, headers={
                            "content-type": EVENTS_V2, "authorization": f"Bearer {TOKEN}"})
                        response = conn.getresponse()
                        response.read()
                        self.webhook_answers[response.status] += 1
                        if response.status == 200:
                            break
                    except (OSError, http.client.HTTPException):
                        self.webhook_answers["connection error"] += 1
                        if conn is not None:
                            conn.close()
                        conn = None
                    time.sleep(0.5)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()
        sent, started = 0, time.monotonic()
        while sent < count:
            events = []
            for _ in range(min(rng.randint(1, 5), count - sent)):
                repository, digest, tag, verdict = self.event(self.kind(rng), rng)
                event_id = f"soak-{uuid.UUID(int=rng.getrandbits(128))}"
                target = {"mediaType": OCI_MANIFEST, "size": 1234, "digest": digest,
                          "length": 1234, "repository": repository,
                          "url": f"http://{self.registry_host}/v2/{repository}/manifests/{digest}"}
                if tag:
                    target["tag"] = tag
                events.append({
                    "id": event_id, "timestamp": "2026-12-02T00:00:00Z", "action": "push",
                    "target": target,
                    "request": {"id": str(uuid.uuid4()), "addr": "10.0.0.1", "host": "registry",
                                "method": "PUT", "useragent": "soak"},
                    "actor": {}, "source": {"addr": "registry:5000", "instanceID": "soak"}})
                with self.expected_lock:
                    self.expected[("distribution", event_id)] = verdict
            envelopes.put(json.dumps({"events": events}).encode())
            sent += len(events)
            self.sent["webhook"] += len(events)
            self.sent["webhook envelopes"] += 1
            pause = started + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        for _ in threads:
            envelopes.put(None)
        for t in threads:
            t.join()

    # ---- faults

    def faults(self, duration):
        at = lambda fraction: self.stream_started + fraction * duration  # noqa: E731

        def until(t):
            pause = t - time.monotonic()
            if pause > 0:
                time.sleep(pause)

        until(at(0.10))
        self.proxy.faulty.set()
        self.mark("registry answers 503")
        until(at(0.20))
        self.kill_and_restart()
        until(at(0.25))
        self.proxy.faulty.clear()
        self.mark("registry healthy again")
        until(at(0.35))
        with open(f"{self.git}/registry/images/bulk/images.yaml", "w", newline="") as f:
            f.write(self.bulk_yaml.replace('"]\r\n', '"\r\n', 1))  # an unterminated list
        self.git_commit("Break the bulk project (soak)")
        self.mark("broken manifest commit landed")
        until(at(0.50))
        with open(f"{self.git}/registry/images/bulk/images.yaml", "w", newline="") as f:
            f.write(self.bulk_yaml)
        self.git_commit("Fix the bulk project (soak)")
        self.mark("manifest fix landed")
        until(at(0.55))
        self.scrape_alertmanager()
        self.alertmanager.stop(signal.SIGKILL)
        self.mark("Alertmanager down")
        time.sleep(60)
        self.start_alertmanager()
        self.mark("Alertmanager up again")
        until(at(0.80))
        self.kill_and_restart()

    # ---- the run

    def run(self):
        self.start_components()
        self.write_content()
        self.write_config()
        threading.Thread(target=self.sample, daemon=True).start()
        self.start_service()
        self.push_real_images()
        self.mark("real images pushed with skopeo")

        duration, events = self.args.duration, self.args.events
        pubsub = int(events * 0.6)
        webhook = events - pubsub
        self.stream_started = time.monotonic()
        self.mark(f"streaming {pubsub} Pub/Sub and {webhook} webhook events over {duration} s")
        threads = [
            threading.Thread(target=self.publish, args=(pubsub, pubsub / duration)),
            threading.Thread(target=self.post_webhooks, args=(webhook, webhook / duration)),
            threading.Thread(target=self.faults, args=(duration,)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.mark(f"all events sent ({dict(self.sent)})")

        # The registry's own notification of a real push nobody promoted.
        skopeo_push(self.layout, "rogue", self.registry_host, "prod-us/single", "rogue")
        self.mark("rogue image pushed with skopeo")

        db = f"{self.work}/data/findings.sqlite"
        wait_until("every event decided and every finding delivered",
                   lambda: self.settled(db), self.args.settle_timeout, 1.0)
        self.mark("settled")
        self.scrape_alertmanager()
        self.stop_sampling.set()
        code = self.service.stop(signal.SIGTERM, timeout=60)
        self.mark(f"service stopped with SIGTERM (exit {code})")
        return self.report(db)

    def settled(self, db):
        with self.expected_lock:
            expected = set(self.expected)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            decided = set(conn.execute("SELECT source, event_id FROM decisions"))
            if not expected <= decided:
                return False
            rogue = conn.execute("SELECT count(*) FROM findings WHERE digest = ?",
                                 (self.rogue,)).fetchone()[0]
            return rogue == 1 and backlog(conn) == 0

    # ---- the report

    def report(self, db):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        decisions = {(s, i): v for s, i, v in conn.execute(
            "SELECT source, event_id, verdict FROM decisions")}
        findings = conn.execute(
            "SELECT id, source, event_id, verdict, digest FROM findings").fetchall()
        delivered = dict(conn.execute(
            "SELECT sink, count(*) FROM deliveries WHERE state = 'delivered' GROUP BY sink"))
        pending = backlog(conn)
        conn.close()

        lost = [k for k in self.expected if k not in decisions]
        wrong = Counter((v, decisions[k]) for k, v in self.expected.items()
                        if k in decisions and decisions[k] != v)
        others = Counter((k[0], v) for k, v in decisions.items() if k not in self.expected)

        # The decision log: exactly one `recorded` line per decided event, whatever
        # the kills and redeliveries.
        recorded = Counter()
        retried = Counter()
        with open(f"{self.work}/serve.log", errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                fields = entry.get("fields", entry)
                if fields.get("message") != "event decided":
                    continue
                key = (fields.get("source"), fields.get("event_id"))
                if fields.get("outcome") == "recorded":
                    recorded[key] += 1
                else:
                    retried[fields.get("verdict")] += 1
        duplicates = {k: n for k, n in recorded.items() if n > 1}
        # Manifest breakages are recorded by the reloader, not as events.
        unlogged = [k for k in decisions if k not in recorded and k[0] != "manifests"]

        alerts = self.receiver.snapshot()
        alert_ids_of = defaultdict(set)
        deliveries = Counter()
        for alert in alerts:
            deliveries[(alert["alert_id"], alert["status"], tuple(alert["finding_ids"]))] += 1
            for fid in alert["finding_ids"]:
                alert_ids_of[fid].add(alert["alert_id"])
        finding_ids = [f[0] for f in findings]
        without_alert = [fid for fid in finding_ids if not alert_ids_of.get(fid)]
        in_two_alerts = [fid for fid in finding_ids if len(alert_ids_of.get(fid, ())) > 1]
        receiver_alert_ids = {a["alert_id"] for a in alerts}
        repeated = sum(n - 1 for n in deliveries.values())

        runs = sorted({run for _, run, _ in self.rss})
        peak = {run: max(kb for _, r, kb in self.rss if r == run) for run in runs}
        longest = max(runs, key=lambda r: sum(1 for _, x, _ in self.rss if x == r))
        longest_samples = [kb for _, r, kb in self.rss if r == longest]
        quartiles = [longest_samples[min(len(longest_samples) - 1, int(q * len(longest_samples)))]
                     for q in (0.1, 0.25, 0.5, 0.75, 1.0)]

        metric_sums = Counter()
        for text in self.metrics_last.values():
            for line in text.splitlines():
                for name in ("image_auditor_duplicate_deliveries_total",
                             "image_auditor_retried_deliveries_total"):
                    if line.startswith(name):
                        metric_sums[name] += float(line.rsplit(" ", 1)[1])

        report = {
            "events_sent": dict(self.sent),
            "expected_decisions": len(self.expected),
            "decisions_in_store": len(decisions),
            "verdicts": dict(Counter(decisions.values())),
            "other_decisions (registry notifications, manifests)": {
                f"{s}/{v}": n for (s, v), n in others.items()},
            "losses": len(lost),
            "wrong_verdicts": {f"{a}->{b}": n for (a, b), n in wrong.items()},
            "duplicate_decisions": len(duplicates),
            "decisions_not_in_log": len(unlogged),
            "retried_before_deciding (log lines)": dict(retried),
            "redeliveries_answered_from_store (last scrape per run, a lower bound)":
                metric_sums["image_auditor_duplicate_deliveries_total"],
            "handed_back_for_redelivery (last scrape per run, a lower bound)":
                metric_sums["image_auditor_retried_deliveries_total"],
            "findings": len(findings),
            "findings_by_source_and_verdict": {
                f"{s}/{v}": n for (s, v), n in Counter((f[1], f[3]) for f in findings).items()},
            "findings_for_one_event_twice": len(findings) - len({(f[1], f[2]) for f in findings}),
            "alert_messages_received": len(alerts),
            "alerts (distinct alert_id)": len(receiver_alert_ids),
            "alert_statuses": dict(Counter(a["status"] for a in alerts)),
            "findings_without_alert": len(without_alert),
            "findings_in_two_alerts": len(in_two_alerts),
            "alert_messages_repeated_verbatim (at-least-once after SIGKILL)": repeated,
            "alertmanager_alert_ids_seen": len(self.am_alert_ids - {None}),
            "alertmanager_matches_receiver": (self.am_alert_ids - {None}) == receiver_alert_ids,
            "delivered_per_sink": delivered,
            "outbox_backlog": pending,
            "webhook_answers": {str(k): v for k, v in self.webhook_answers.items()},
            "registry_proxy_answers": dict(self.proxy.counts),
            "service_runs": len(runs),
            "peak_rss_mb_per_run": {r: round(kb / 1024, 1) for r, kb in peak.items()},
            f"rss_mb_of_run_{longest}_at_10/25/50/75/100%": [round(kb / 1024, 1) for kb in quartiles],
            "timeline": self.timeline,
        }
        with open(f"{self.work}/report.json", "w") as f:
            json.dump(report, f, indent=2)
        print(json.dumps(report, indent=2))
        failures = []
        if lost:
            failures.append(f"{len(lost)} events lost, e.g. {lost[:3]}")
        if wrong:
            failures.append(f"wrong verdicts: {dict(wrong)}")
        if duplicates:
            failures.append(f"{len(duplicates)} events decided twice, e.g. {list(duplicates)[:3]}")
        if unlogged:
            failures.append(f"{len(unlogged)} decisions without their log line, e.g. {unlogged[:3]}")
        if without_alert or in_two_alerts:
            failures.append(f"{len(without_alert)} findings without an alert, "
                            f"{len(in_two_alerts)} in two alerts")
        if report["findings_for_one_event_twice"]:
            failures.append("an event has two findings")
        if not report["alertmanager_matches_receiver"]:
            failures.append("Alertmanager did not see the same alerts as the webhook receiver")
        if pending:
            failures.append(f"{pending} findings still undelivered")
        for failure in failures:
            log(f"FAILED: {failure}")
        log("all checks hold" if not failures else f"{len(failures)} checks failed")
        return 0 if not failures else 1

    def stop_all(self):
        self.stop_sampling.set()
        for name in ("service", "alertmanager", "emulator", "registry"):
            process = getattr(self, name, None)
            if process is not None:
                process.stop(signal.SIGKILL, timeout=10)


def backlog(conn):
    """Findings some sink still owes: pending deliveries, and findings past the
    sink's watermark (every finding, for a sink that has not claimed yet)."""
    pending = conn.execute("SELECT count(*) FROM deliveries WHERE state = 'pending'").fetchone()[0]
    watermarks = dict(conn.execute("SELECT sink, watermark FROM sinks"))
    unclaimed = sum(
        conn.execute("SELECT count(*) FROM findings WHERE id > ?",
                     (watermarks.get(sink, 0),)).fetchone()[0]
        for sink in SINKS)
    return pending + unclaimed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in all (default 100000)")
    parser.add_argument("--duration", type=float, default=240, help="seconds to send them over")
    parser.add_argument("--settle-timeout", type=float, default=900,
                        help="seconds to wait afterwards for every decision and alert")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--no-build", action="store_true", help="use the existing release binary")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    for path in (EMULATOR, REGISTRY, ALERTMANAGER):
        if not os.path.exists(path):
            sys.exit(f"soak: {path} is missing (see the docstring for what to install)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "image-auditor"],
                       cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="image-auditor-soak-")
    log(f"work directory {work}")
    soak = Soak(args, work)
    try:
        code = soak.run()
    except BaseException:
        for process in ("service", "registry", "alertmanager"):
            p = getattr(soak, process, None)
            if p is not None:
                log(f"{process} log tail:\n{p.tail()}")
        raise
    finally:
        soak.stop_all()
        if not args.keep and "code" in locals() and code == 0:
            subprocess.run(["rm", "-rf", work])
    sys.exit(code)


if __name__ == "__main__":
    main()
