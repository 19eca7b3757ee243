#!/usr/bin/env python3
"""Replicas soak: several `image-auditor serve` processes on one Pub/Sub
subscription and one findings store, killed and cut off from their store while
events stream in; afterwards, nothing lost and nothing said twice.

    python3 benches/scripts/soak-replicas.py                    # 3 replicas on PostgreSQL, 20,000+ events
    python3 benches/scripts/soak-replicas.py --events 2000 --duration 30
    python3 benches/scripts/soak-replicas.py --store sqlite --replicas 1   # the checks on one process

Parts, all on loopback ports of this machine:
  * the Pub/Sub emulator with one topic and one pull subscription that every
    replica pulls from (`pubsub.pull`, one stream each);
  * PostgreSQL from Debian's packages (`initdb` + `pg_ctl` in a temporary
    directory, run as the unprivileged user `image-auditor-test`, created when
    the script runs as root), or with `--store sqlite` the default SQLite file
    of a single replica;
  * two alert collectors, one per webhook sink (`receiver-a`, `receiver-b`);
  * the CNCF distribution webhook, sent round-robin to the replicas the way a
    load balancer would (an envelope answered with anything but 200 goes to the
    next replica, as the registry's notification queue retries it).

Events (`--events`, default 20,000): 90% pushes of promoted digests, 9.5%
rogue pushes of an unpromoted digest copied to every region (`--regions`, 5 by
default; the copies go through Pub/Sub and the webhook alike, so they land on
different replicas and must still make one alert), 0.5% malformed payloads.

Faults while they stream: SIGKILL of a replica at 20% and another at 70% of
the sending time (each restarted at once, like a Deployment does), and with
PostgreSQL a restart of the database at 45% (`pg_ctl stop -m immediate`, down
for `--db-down` seconds, then started again; every replica must answer 503 /
`/readyz` 503 meanwhile and recover unaided).

Checks, each a non-zero exit when violated:
  * every event sent has exactly one decision with the expected verdict
    (the store's `decisions` table; the replicas' `event decided` log lines
    say no event was recorded by two replicas);
  * nothing acknowledged that is not recorded: every webhook event answered
    200 is in the store, and the subscription is empty at the end;
  * every finding is in exactly one alert per sink, and a fact (one digest of
    one image, in every region) is raised as `new` once per sink: later copies
    may only update it; a message repeated verbatim (at-least-once after a
    SIGKILL) is counted, not a violation;
  * with PostgreSQL: the replicas reported the store down while it was down
    and were all ready again afterwards.

The store is read with the schema both backends share (`decisions(source,
endpoint, event_id, verdict)`, `findings(id, source, endpoint, event_id,
verdict, digest)`): SQLite with Python's sqlite3, PostgreSQL with `psql`.

Needs: the Pub/Sub emulator (google-cloud-cli-pubsub-emulator), postgresql
(for the default `--store postgres`), a release build (built unless
--no-build). Only the Python standard library is used; the process, emulator
and HTTP helpers are benches/scripts/soak.py's.
"""

import argparse
import base64
import glob
import http.client
import itertools
import json
import os
import pwd
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soak  # noqa: E402  (the shared helpers of the single-process soak)
from soak import Process, free_port, http_json, http_status, log, sha256, wait_until  # noqa: E402

PROJECT = "soak-replicas"
SUBSCRIPTION = "auditor"
HOST = "registry.soak.invalid"
TOKEN = "soak-replicas-token-0123456789"
SINKS = ("receiver-a", "receiver-b")
PG_USER = "image-auditor-test"
DATABASE = "image_auditor"
URL_ENV = "SOAK_DATABASE_URL"
PROMOTED_IMAGES = 50
PROMOTED_DIGESTS_PER_IMAGE = 20


# ---------------------------------------------------------------- PostgreSQL


class Postgres:
    """A PostgreSQL server of Debian's newest installed version in a temporary
    directory, on a loopback port, owned by an unprivileged user (PostgreSQL
    refuses to run as root)."""

    def __init__(self):
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                          key=lambda p: int(p.split("/")[4]))
        if not versions:
            sys.exit("soak-replicas: no /usr/lib/postgresql/*/bin/pg_ctl (apt-get install postgresql)")
        self.bin = os.path.dirname(versions[-1])
        self.dir = tempfile.mkdtemp(prefix="image-auditor-soak-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.as_user = []
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", PG_USER], check=True)
            shutil.chown(self.dir, PG_USER, PG_USER)
            self.as_user = ["runuser", "-u", PG_USER, "--"]
        self.run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.url = f"host=127.0.0.1 port={self.port} user=postgres dbname={DATABASE}"

    def run(self, program, *args, check=True):
        return subprocess.run([*self.as_user, os.path.join(self.bin, program), *args],
                              check=check, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)

    def start(self):
        # -w waits until the server accepts connections (pg_isready's check).
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200")
        out = self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"),
                       "-w", "-t", "60", "-o", options, "start", check=False)
        if out.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed:\n{out.stdout}\n{self.tail()}")

    def create_database(self):
        self.psql("postgres", f"CREATE DATABASE {DATABASE}")

    def stop(self, mode="fast"):
        self.run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def psql(self, database, sql):
        """Rows of `sql` as lists of strings."""
        out = subprocess.run(
            [os.path.join(self.bin, "psql"), "-X", "-q", "-At", "-F", "\t", "-v",
             "ON_ERROR_STOP=1", f"host=127.0.0.1 port={self.port} user=postgres dbname={database}",
             "-c", sql], check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"psql: {sql}: {out.stderr.strip()}")
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def tail(self):
        try:
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return ""

    def remove(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- the store, read back


class StoreReader:
    """The rows the checks need, from either backend."""

    def __init__(self, postgres=None, sqlite_path=None):
        self.postgres = postgres
        self.sqlite_path = sqlite_path

    def query(self, sql):
        if self.postgres is not None:
            return self.postgres.psql(DATABASE, sql)
        if not os.path.exists(self.sqlite_path):
            return []
        with sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=10) as conn:
            return [[str(c) for c in row] for row in conn.execute(sql)]

    def decisions(self):
        """(source, event_id) -> [verdict, …], one entry per row."""
        rows = defaultdict(list)
        for source, event_id, verdict in self.query(
                "SELECT source, event_id, verdict FROM decisions"):
            rows[(source, event_id)].append(verdict)
        return rows

    def findings(self):
        return [(int(i), s, e, v, d or None) for i, s, e, v, d in self.query(
            "SELECT id, source, event_id, verdict, coalesce(digest, '') FROM findings")]


# ---------------------------------------------------------------- the soak


class ReplicaSoak:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.started = time.monotonic()
        self.timeline = []
        self.expected = {}  # (source, event id) -> verdict
        self.acked = set()  # webhook events whose envelope was answered 200
        self.lock = threading.Lock()
        self.sent = Counter()
        self.webhook_answers = Counter()
        self.readyz_while_db_down = Counter()
        self.replicas = []
        self.postgres = None
        self.rr = itertools.count()

    def mark(self, what):
        t = round(time.monotonic() - self.started, 1)
        self.timeline.append((t, what))
        log(f"t={t:6.1f}s {what}")

    # ---- set-up

    def start_components(self):
        w = self.work
        ps_port = free_port()
        self.emulator = Process("emulator", [soak.EMULATOR, "--host=127.0.0.1", f"--port={ps_port}"],
                                f"{w}/emulator.log").start()
        self.pubsub = f"127.0.0.1:{ps_port}"
        base = f"http://{self.pubsub}/v1/projects/{PROJECT}"
        wait_until("the Pub/Sub emulator", lambda: http_status(f"{base}/topics") == 200, 90, 0.2)
        http_json("PUT", f"{base}/topics/gcr", {})
        http_json("PUT", f"{base}/subscriptions/{SUBSCRIPTION}",
                  {"topic": f"projects/{PROJECT}/topics/gcr", "ackDeadlineSeconds": 10})
        self.mark("Pub/Sub emulator ready")

        if self.args.store == "postgres":
            self.postgres = Postgres()
            self.postgres.start()
            self.postgres.create_database()
            self.store = StoreReader(postgres=self.postgres)
            self.mark(f"PostgreSQL ready on port {self.postgres.port} ({self.postgres.bin})")
        else:
            self.store = StoreReader(sqlite_path=f"{w}/replica-0/findings.sqlite")

        self.collectors = {sink: soak.AlertReceiver() for sink in SINKS}

    def write_manifests(self):
        """A manifest tree promoting PROMOTED_IMAGES images to every region."""
        root = f"{self.work}/manifests"
        self.regions = [f"region-{i:02}" for i in range(self.args.regions)]
        self.promoted = []  # (image, digest, tag)
        lines = []
        for i in range(PROMOTED_IMAGES):
            name = f"app-{i:03}"
            lines.append(f"- name: {name}\n  dmap:\n")
            for j in range(PROMOTED_DIGESTS_PER_IMAGE):
                digest = sha256(f"{name}/{j}".encode())
                self.promoted.append((name, digest, f"1.{j}.0"))
                lines.append(f'    "{digest}": ["1.{j}.0"]\n')
        os.makedirs(f"{root}/manifests/soak")
        os.makedirs(f"{root}/images/soak")
        with open(f"{root}/manifests/soak/promoter-manifest.yaml", "w") as f:
            f.write(f"registries:\n- name: {HOST}/staging\n  src: true\n"
                    + "".join(f"- name: {HOST}/{r}\n" for r in self.regions))
        with open(f"{root}/images/soak/images.yaml", "w") as f:
            f.write("".join(lines))
        self.manifests = root

    def config(self, i, port):
        store = ""
        if self.postgres is not None:
            store = f"store:\n  postgres:\n    url_env: {URL_ENV}\n    pool_size: 4\n    connect_timeout: 2s\n"
        sinks = "".join(
            f"  - name: {sink}\n    webhook: {{url: \"{c.url}\"}}\n"
            for sink, c in self.collectors.items())
        return f"""\
{store}data_dir: {self.work}/replica-{i}
manifests: {self.manifests}
resolve: false
http:
  listen: 127.0.0.1:{port}
pubsub:
  pull:
    project: {PROJECT}
    subscription: {SUBSCRIPTION}
    streams: 1
    max_lease_extension: 10s
webhooks:
  distribution:
  - name: soak
    registry: {HOST}
    token: {TOKEN}
alerts:
  poll_interval: 200ms
  group_wait: 3s
  backoff_max: 5s
  sinks:
{sinks}log:
  format: json
"""

    def start_replica(self, i):
        if i == len(self.replicas):
            port = free_port()
            path = f"{self.work}/replica-{i}.yaml"
            with open(path, "w") as f:
                f.write(self.config(i, port))
            self.replicas.append({"port": port, "config": path, "runs": 0, "process": None})
        r = self.replicas[i]
        r["runs"] += 1
        env = dict(os.environ, PUBSUB_EMULATOR_HOST=self.pubsub)
        if self.postgres is not None:
            env[URL_ENV] = self.postgres.url
        r["process"] = Process(f"replica-{i}#{r['runs']}",
                               [self.args.bin, "serve", "--config", r["config"]],
                               f"{self.work}/replica-{i}.log", env=env).start()
        url = f"http://127.0.0.1:{r['port']}/readyz"
        try:
            wait_until(f"replica {i} to be ready", lambda: http_status(url) == 200, 90)
        except RuntimeError:
            raise RuntimeError(f"replica {i} did not become ready:\n{r['process'].tail()}") from None
        self.mark(f"replica {i} run {r['runs']} ready (pid {r['process'].pid}, port {r['port']})")

    def kill_and_restart(self, i):
        self.mark(f"SIGKILL replica {i}")
        self.replicas[i]["process"].stop(signal.SIGKILL)
        self.start_replica(i)

    # ---- events

    def plan(self):
        """Every event to send, with its path and expected verdict, in order."""
        rng = random.Random(self.args.seed)
        events = []  # (path, repository, digest, tag, verdict)
        while len(events) < self.args.events:
            r = rng.random()
            path = lambda: "pubsub" if rng.random() < 0.6 else "webhook"  # noqa: E731
            region = rng.choice(self.regions)
            if r < 0.90:
                name, digest, tag = rng.choice(self.promoted)
                events.append((path(), f"{region}/{name}", digest, tag, "promoted"))
            elif r < 0.995:
                # One rogue digest, pushed to every region within moments:
                # one fact, one alert.
                name = f"app-{rng.randrange(PROMOTED_IMAGES):03}"
                digest = "sha256:" + "".join(rng.choice("0123456789abcdef") for _ in range(64))
                for region in self.regions:
                    events.append((path(), f"{region}/{name}", digest, None, "unpromoted"))
            else:
                events.append((path(), f"{region}/app-000", None, None, "malformed"))
        return events

    def publish(self, events, rate):
        url = f"http://{self.pubsub}/v1/projects/{PROJECT}/topics/gcr:publish"
        sent, started = 0, time.monotonic()
        for start in range(0, len(events), 100):
            batch, verdicts = [], []
            for _, repository, digest, tag, verdict in events[start:start + 100]:
                if verdict == "malformed":
                    data = b'{"action": "INSERT", "digest": 17'
                else:
                    payload = {"action": "INSERT", "digest": f"{HOST}/{repository}@{digest}"}
                    if tag:
                        payload["tag"] = f"{HOST}/{repository}:{tag}"
                    data = json.dumps(payload).encode()
                batch.append({"data": base64.b64encode(data).decode()})
                verdicts.append(verdict)
            ids = http_json("POST", url, {"messages": batch}, timeout=60)["messageIds"]
            with self.lock:
                for message_id, verdict in zip(ids, verdicts):
                    self.expected[("pubsub_pull", message_id)] = verdict
                self.sent["pubsub"] += len(batch)
            sent += len(batch)
            pause = started + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def post_envelope(self, body, ids):
        """Sends one envelope to the next replica in turn until one answers 200."""
        while True:
            port = self.replicas[next(self.rr) % len(self.replicas)]["port"]
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/webhooks/distribution", body=body, headers={
                    "content-type": soak.EVENTS_V2, "authorization": f"Bearer {TOKEN}"})
                response = conn.getresponse()
                response.read()
                conn.close()
                with self.lock:
                    self.webhook_answers[response.status] += 1
                    if response.status == 200:
                        self.acked.update(("distribution", i) for i in ids)
                        return
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.webhook_answers["connection error"] += 1
            time.sleep(0.2)

    def post_webhooks(self, events, rate, workers=4):
        rng = random.Random(self.args.seed + 1)
        envelopes = []
        rest = list(events)
        while rest:
            n = rng.randint(1, 5)
            take, rest = rest[:n], rest[n:]
            body, ids = [], []
            for _, repository, digest, tag, verdict in take:
                event_id = f"soak-{uuid.UUID(int=rng.getrandbits(128))}"
                target = {"mediaType": soak.OCI_MANIFEST, "size": 1234, "length": 1234,
                          "repository": repository,
                          "digest": digest if verdict != "malformed" else "sha256:" + "z" * 64}
                if tag:
                    target["tag"] = tag
                body.append({"id": event_id, "timestamp": "2026-12-02T00:00:00Z",
                             "action": "push", "target": target,
                             "request": {"id": str(uuid.uuid4()), "method": "PUT"},
                             "actor": {}, "source": {"addr": "registry:5000"}})
                ids.append(event_id)
                with self.lock:
                    self.expected[("distribution", event_id)] = verdict
            envelopes.append((json.dumps({"events": body}).encode(), ids))

        work = iter(envelopes)
        work_lock = threading.Lock()
        started = time.monotonic()
        done = Counter()

        def worker():
            while True:
                with work_lock:
                    item = next(work, None)
                    if item is None:
                        return
                    done["events"] += len(item[1])
                    due = started + done["events"] / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self.post_envelope(*item)
                with self.lock:
                    self.sent["webhook"] += len(item[1])
                    self.sent["webhook envelopes"] += 1

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # ---- faults

    def faults(self, duration):
        def until(fraction):
            pause = self.stream_started + fraction * duration - time.monotonic()
            if pause > 0:
                time.sleep(pause)

        n = len(self.replicas)
        until(0.20)
        self.kill_and_restart(0)
        if self.postgres is not None:
            until(0.45)
            self.restart_database()
        until(0.70)
        self.kill_and_restart(1 % n)

    def restart_database(self):
        self.mark("PostgreSQL stopped (immediate: like a crash)")
        self.postgres.stop("immediate")
        down_until = time.monotonic() + self.args.db_down
        while time.monotonic() < down_until:
            for i, r in enumerate(self.replicas):
                try:
                    status = http_status(f"http://127.0.0.1:{r['port']}/readyz")
                except OSError as e:
                    status = f"unreachable: {e}"
                with self.lock:
                    self.readyz_while_db_down[(i, status)] += 1
            time.sleep(0.5)
        self.postgres.start()
        self.mark("PostgreSQL started again")
        for i, r in enumerate(self.replicas):
            url = f"http://127.0.0.1:{r['port']}/readyz"
            try:
                wait_until(f"replica {i} ready after the database restart",
                           lambda: http_status(url) == 200, 120, 0.2)
            except RuntimeError:
                self.db_recovery_failed = True
                self.mark(f"replica {i} not ready 120 s after the database returned")
        self.mark("every replica ready again")

    # ---- the run

    def run(self):
        self.start_components()
        self.write_manifests()
        for i in range(self.args.replicas):
            self.start_replica(i)
        events = self.plan()
        pubsub = [e for e in events if e[0] == "pubsub"]
        webhook = [e for e in events if e[0] == "webhook"]
        duration = self.args.duration
        self.stream_started = time.monotonic()
        self.mark(f"streaming {len(pubsub)} Pub/Sub and {len(webhook)} webhook events "
                  f"over {duration} s to {len(self.replicas)} replicas")
        threads = [
            threading.Thread(target=self.publish, args=(pubsub, len(pubsub) / duration)),
            threading.Thread(target=self.post_webhooks, args=(webhook, len(webhook) / duration)),
            threading.Thread(target=self.faults, args=(duration,)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.mark(f"all events sent ({dict(self.sent)})")
        try:
            wait_until("every event decided and every finding alerted at every sink",
                       self.settled, self.args.settle_timeout, 1.0)
            self.mark("settled")
        except RuntimeError as e:
            self.mark(f"not settled: {e}")
        # A last look for alerts still in flight.
        time.sleep(3)
        leftover = self.pull_leftovers()
        for i, r in enumerate(self.replicas):
            code = r["process"].stop(signal.SIGTERM, timeout=60)
            self.mark(f"replica {i} stopped with SIGTERM (exit {code})")
        return self.report(leftover)

    def settled(self):
        with self.lock:
            expected = set(self.expected)
        decided = set(self.store.decisions())
        if not expected <= decided:
            return False
        ids = {f[0] for f in self.store.findings()}
        return all(ids <= self.alerted_ids(c.snapshot()) for c in self.collectors.values())

    @staticmethod
    def alerted_ids(alerts):
        return {fid for a in alerts for fid in a["finding_ids"]}

    def pull_leftovers(self):
        """Messages still in the subscription once the replicas settled: each
        was neither acknowledged nor given up."""
        url = f"http://{self.pubsub}/v1/projects/{PROJECT}/subscriptions/{SUBSCRIPTION}:pull"
        try:
            got = http_json("POST", url, {"maxMessages": 100, "returnImmediately": True})
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            return f"pull failed: {e}"
        return len((got or {}).get("receivedMessages", []))

    # ---- the report

    def decision_log(self):
        """(source, event id) -> `recorded` log lines, over every replica's log."""
        recorded = Counter()
        for path in glob.glob(f"{self.work}/replica-*.log"):
            with open(path, errors="replace") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    fields = entry.get("fields", entry)
                    if (fields.get("message") == "event decided"
                            and fields.get("outcome") == "recorded"):
                        recorded[(fields.get("source"), fields.get("event_id"))] += 1
        return recorded

    def sink_report(self, alerts, findings):
        """What one sink received, and its violations."""
        by_id = {f[0]: f for f in findings}
        alert_ids_of = defaultdict(set)
        news = defaultdict(set)  # alert_id -> distinct finding sets sent as `new`
        verbatim = Counter()
        for a in alerts:
            fids = tuple(sorted(a["finding_ids"]))
            verbatim[(a["alert_id"], a["status"], fids)] += 1
            if a["status"] == "new":
                news[a["alert_id"]].add(fids)
            for fid in fids:
                alert_ids_of[fid].add(a["alert_id"])
        without = [fid for fid in by_id if not alert_ids_of.get(fid)]
        in_two = [fid for fid in by_id if len(alert_ids_of.get(fid, ())) > 1]
        new_twice = {aid: len(sets) for aid, sets in news.items() if len(sets) > 1}
        # A rogue digest's copies (one per region) under one alert id.
        ids_per_digest = defaultdict(set)
        for fid, ids in alert_ids_of.items():
            if fid in by_id and by_id[fid][3] == "unpromoted":
                ids_per_digest[by_id[fid][4]].update(ids)
        split_facts = {d: len(ids) for d, ids in ids_per_digest.items() if len(ids) > 1}
        first_new_complete = sum(
            1 for sets in news.values()
            if len(max(sets, key=len)) == self.args.regions)
        return {
            "messages": len(alerts),
            "alerts (distinct alert_id)": len({a["alert_id"] for a in alerts}),
            "statuses": dict(Counter(a["status"] for a in alerts)),
            "findings_without_alert": len(without),
            "findings_in_two_alerts": len(in_two),
            "facts_raised_new_twice": len(new_twice),
            "rogue_digests_split_over_alerts": len(split_facts),
            f"rogue_facts_whose_new_alert_had_all_{self.args.regions}_regions": first_new_complete,
            "messages_repeated_verbatim (at-least-once after SIGKILL)":
                sum(n - 1 for n in verbatim.values()),
        }, {
            "without": without[:3], "in_two": in_two[:3],
            "new_twice": list(new_twice.items())[:3], "split": list(split_facts.items())[:3],
        }

    def report(self, leftover):
        decisions = self.store.decisions()
        findings = self.store.findings()
        with self.lock:
            expected = dict(self.expected)
            acked = set(self.acked)
        lost = [k for k in expected if k not in decisions]
        twice_in_store = {k: v for k, v in decisions.items() if len(v) > 1}
        wrong = Counter((v, decisions[k][0]) for k, v in expected.items()
                        if k in decisions and decisions[k][0] != v)
        acked_not_recorded = [k for k in acked if k not in decisions]
        recorded = self.decision_log()
        logged_twice = {k: n for k, n in recorded.items() if n > 1}
        not_logged = [k for k in expected if k in decisions and not recorded.get(k)]
        findings_per_event = Counter((f[1], f[2]) for f in findings)

        failures = []
        sinks = {}
        for sink, collector in self.collectors.items():
            alerts = collector.snapshot()
            with open(f"{self.work}/alerts-{sink}.json", "w") as f:
                json.dump(alerts, f)
            summary, examples = self.sink_report(alerts, findings)
            sinks[sink] = summary
            if summary["findings_without_alert"] or summary["findings_in_two_alerts"]:
                failures.append(f"{sink}: {summary['findings_without_alert']} findings without "
                                f"an alert, {summary['findings_in_two_alerts']} in two, "
                                f"e.g. {examples['without']} {examples['in_two']}")
            if summary["facts_raised_new_twice"]:
                failures.append(f"{sink}: {summary['facts_raised_new_twice']} facts raised as "
                                f"new twice (a second alert), e.g. {examples['new_twice']}")
            if summary["rogue_digests_split_over_alerts"]:
                failures.append(f"{sink}: rogue digests in several alerts: {examples['split']}")

        report = {
            "store": self.args.store,
            "replicas": len(self.replicas),
            "runs_per_replica": [r["runs"] for r in self.replicas],
            "events_sent": dict(self.sent),
            "expected_decisions": len(expected),
            "decisions_in_store": len(decisions),
            "verdicts": dict(Counter(v[0] for v in decisions.values())),
            "losses": len(lost),
            "decided_twice_in_store": len(twice_in_store),
            "recorded_by_two_replicas (log)": len(logged_twice),
            "decisions_without_log_line (a SIGKILL may cut the last lines)": len(not_logged),
            "wrong_verdicts": {f"{a}->{b}": n for (a, b), n in wrong.items()},
            "webhook_events_acked_not_recorded": len(acked_not_recorded),
            "subscription_leftovers": leftover,
            "findings": len(findings),
            "findings_for_one_event_twice": sum(n - 1 for n in findings_per_event.values()),
            "sinks": sinks,
            "webhook_answers": {str(k): v for k, v in self.webhook_answers.items()},
            "timeline": self.timeline,
        }
        if self.postgres is not None:
            statuses = Counter()
            for (_, status), n in self.readyz_while_db_down.items():
                statuses[status] += n
            report["readyz_while_database_down"] = {str(k): v for k, v in statuses.items()}
            down_seen = {i for (i, status), _ in self.readyz_while_db_down.items() if status == 503}
            if len(down_seen) < len(self.replicas):
                failures.append(f"replicas {sorted(set(range(len(self.replicas))) - down_seen)} "
                                "never reported the store down while it was down")
            if getattr(self, "db_recovery_failed", False):
                failures.append("a replica did not recover after the database restart")

        if lost:
            failures.append(f"{len(lost)} events without a decision, e.g. {lost[:3]}")
        if twice_in_store or logged_twice:
            failures.append(f"events decided twice: store {list(twice_in_store)[:3]}, "
                            f"log {list(logged_twice)[:3]}")
        if wrong:
            failures.append(f"wrong verdicts: {dict(wrong)}")
        if acked_not_recorded:
            failures.append(f"{len(acked_not_recorded)} webhook events acknowledged but not "
                            f"recorded, e.g. {acked_not_recorded[:3]}")
        if leftover not in (0, None):
            failures.append(f"the subscription still holds messages: {leftover}")
        if report["findings_for_one_event_twice"]:
            failures.append("an event has two findings")

        with open(f"{self.work}/report.json", "w") as f:
            json.dump(report, f, indent=2)
        print(json.dumps(report, indent=2))
        for failure in failures:
            log(f"FAILED: {failure}")
        log("all checks hold" if not failures else f"{len(failures)} checks failed")
        return 0 if not failures else 1

    def stop_all(self):
        for r in self.replicas:
            if r["process"] is not None:
                r["process"].stop(signal.SIGKILL, timeout=10)
        if getattr(self, "emulator", None) is not None:
            self.emulator.stop(signal.SIGKILL, timeout=10)
        if self.postgres is not None:
            self.postgres.remove()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events in all (default 20000)")
    parser.add_argument("--duration", type=float, default=120, help="seconds to send them over")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--regions", type=int, default=5,
                        help="regional copies of each rogue push (default 5)")
    parser.add_argument("--db-down", type=float, default=5,
                        help="seconds PostgreSQL stays down (default 5)")
    parser.add_argument("--settle-timeout", type=float, default=600,
                        help="seconds to wait afterwards for every decision and alert")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--no-build", action="store_true", help="use the existing release binary")
    parser.add_argument("--bin", default=soak.BIN,
                        help="the image-auditor binary (default: the release build; implies --no-build)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.store == "sqlite" and args.replicas != 1:
        sys.exit("soak-replicas: SQLite has one writer: --store sqlite needs --replicas 1")
    if args.replicas < 1 or args.regions < 1:
        sys.exit("soak-replicas: --replicas and --regions are at least 1")
    if not os.path.exists(soak.EMULATOR):
        sys.exit(f"soak-replicas: {soak.EMULATOR} is missing (see the docstring)")
    if not args.no_build and args.bin == soak.BIN:
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "image-auditor"],
                       cwd=soak.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="image-auditor-soak-replicas-")
    log(f"work directory {work}")
    run = ReplicaSoak(args, work)
    code = None
    try:
        code = run.run()
    except BaseException:
        for r in run.replicas:
            if r["process"] is not None:
                log(f"{r['process'].name} log tail:\n{r['process'].tail()}")
        if run.postgres is not None:
            log(f"PostgreSQL log tail:\n{run.postgres.tail()}")
        raise
    finally:
        run.stop_all()
        if not args.keep and code == 0:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
