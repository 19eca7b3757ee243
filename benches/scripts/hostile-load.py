#!/usr/bin/env python3
"""Hostile clients against `image-auditor serve`, on loopback only.

Starts the service on the k8s.io fixture set and runs four attacks one after
the other, each bounded in count and time:

  idle      many sockets that connect and send nothing
  slow      many unauthenticated webhook and push requests that announce a
            1 MB body and trickle it
  fanout    distribution envelopes of many `{}` events, with a valid token
  reload    clients calling POST /-/reload in a loop (with the admin token)

Push authentication is configured (its JWKS URL is never reached: the slow
clients carry no token), so every slow client is one without credentials.
Throughout, a probe asks GET /healthz and sends an authorised distribution
push notification every 250 ms. For each attack it reports the service's RSS
before, at its peak during, and after (once the attack's connections are
closed and the service had a moment), and how many probes were answered.

    python3 benches/scripts/hostile-load.py                      # defaults below
    python3 benches/scripts/hostile-load.py --idle 2000 --slow 500 --seconds 5

Only the Python standard library is used; needs a built binary (`--bin`,
default target/release/image-auditor, else target/debug/image-auditor).
Exit status 0 when every probe was answered.
"""

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFESTS = os.path.join(ROOT, "manifests-fixtures", "k8s.io", "registry.k8s.io")
TOKEN = "hostile-webhook-token-0123456789"
ADMIN = "hostile-admin-token-0123456789"
EVENTS = "application/vnd.docker.distribution.events.v1+json"


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def request(port, method, path, body=None, headers=None, timeout=5):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def envelope(events):
    return json.dumps({"events": events}).encode()


def push_event(n):
    digest = "sha256:" + f"{n:064x}"
    return {"id": f"probe-{n}-{time.time_ns()}", "timestamp": "2026-12-06T00:00:00Z",
            "action": "push",
            "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "size": 1, "digest": digest, "length": 1,
                       "repository": "benches/scripts/probe", "tag": "v1"},
            "request": {"id": "r", "addr": "10.0.0.1", "host": "registry",
                        "method": "PUT", "useragent": "hostile-load"},
            "actor": {}, "source": {"addr": "registry:5000", "instanceID": "bench"}}


class Probe(threading.Thread):
    """Asks /healthz and sends one authorised push every 250 ms."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.counts = {"healthz_ok": 0, "healthz": 0, "push_ok": 0, "push": 0}
        self.n = 0

    def take(self):
        counts, self.counts = self.counts, {k: 0 for k in self.counts}
        return counts

    def run(self):
        while not self.stop.wait(0.25):
            status, _ = request(self.port, "GET", "/healthz")
            self.counts["healthz"] += 1
            self.counts["healthz_ok"] += status == 200
            self.n += 1
            status, _ = request(self.port, "POST", "/webhooks/distribution",
                                envelope([push_event(self.n)]),
                                {"Content-Type": EVENTS, "Authorization": f"Bearer {TOKEN}"})
            self.counts["push"] += 1
            self.counts["push_ok"] += status == 200


class Peak(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self):
        while not self.stop.wait(0.1):
            self.peak = max(self.peak, rss_mb(self.pid))


def idle(port, args):
    sockets, failed = [], 0
    deadline = time.monotonic() + args.seconds * 3
    for _ in range(args.idle):
        if time.monotonic() > deadline:
            break
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
            sockets.append(s)
        except OSError:
            failed += 1
            s.close()
    time.sleep(args.seconds)
    closed_by_server = 0
    for s in sockets:
        s.setblocking(False)
        try:
            closed_by_server += s.recv(1) == b""
        except (BlockingIOError, OSError):
            pass
        s.close()
    return f"{len(sockets)} connected ({failed} failed), {closed_by_server} closed by the service"


def slow(port, args):
    heads = [
        f"POST /webhooks/distribution HTTP/1.1\r\nHost: a\r\nContent-Type: {EVENTS}\r\n"
        "Content-Length: 1000000\r\n\r\n",
        "POST /pubsub/push HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000\r\n\r\n",
    ]
    sockets, sent, answered = [], 0, {}
    for i in range(args.slow):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(heads[i % 2].encode())
        except OSError:
            s.close()
            continue
        s.setblocking(False)
        sockets.append(s)
    chunk = b" " * 1024
    deadline = time.monotonic() + args.seconds
    open_ = list(sockets)
    while time.monotonic() < deadline and open_:
        still = []
        for s in open_:
            try:
                sent += s.send(chunk)
            except (BlockingIOError, OSError):
                pass
            try:
                data = s.recv(64)
                if data:
                    status = data.split(b" ")[1].decode() if b" " in data else "?"
                    answered[status] = answered.get(status, 0) + 1
                continue
            except BlockingIOError:
                still.append(s)
            except OSError:
                continue
        open_ = still
        time.sleep(0.1)
    for s in sockets:
        s.close()
    return (f"{len(sockets)} clients, {sent / 1e6:.1f} MB of body accepted by the kernel, "
            f"answers {answered or 'none'}, {len(open_)} never answered")


def fanout(port, args):
    body = envelope([{}] * args.fanout_events)
    results = []

    def one():
        started = time.monotonic()
        status, text = request(port, "POST", "/webhooks/distribution", body,
                               {"Content-Type": EVENTS, "Authorization": f"Bearer {TOKEN}"},
                               timeout=args.seconds * 6)
        results.append(f"{status} in {time.monotonic() - started:.1f}s {text[:80]!r}")

    threads = [threading.Thread(target=one) for _ in range(args.fanout_parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return f"{args.fanout_parallel} × {len(body) / 1e6:.2f} MB envelopes of " \
           f"{args.fanout_events} events: " + "; ".join(results)


def generation(port):
    status, body = request(port, "GET", "/readyz")
    return json.loads(body)["index"]["generation"] if status == 200 else None


def reload_flood(port, args):
    before = generation(port)
    counts, lock = {}, threading.Lock()
    deadline = time.monotonic() + args.seconds

    def client():
        while time.monotonic() < deadline:
            status, _ = request(port, "POST", "/-/reload", b"",
                                {"Authorization": f"Bearer {ADMIN}"}, timeout=60)
            with lock:
                counts[status] = counts.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(args.reload_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    unauthenticated, _ = request(port, "POST", "/-/reload")
    runs = generation(port) - before
    return (f"{args.reload_clients} clients: answers {counts}, {runs} reloads run; "
            f"without the token: {unauthenticated}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin")
    parser.add_argument("--idle", type=int, default=10000, help="idle sockets")
    parser.add_argument("--slow", type=int, default=2000, help="slow unauthenticated bodies")
    parser.add_argument("--fanout-events", type=int, default=20000)
    parser.add_argument("--fanout-parallel", type=int, default=2)
    parser.add_argument("--reload-clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10, help="length of each attack")
    args = parser.parse_args()
    binary = args.bin or next(
        (p for p in (os.path.join(ROOT, "target", d, "image-auditor") for d in ("release", "debug"))
         if os.path.exists(p)), None)
    if not binary:
        sys.exit("build the service first (cargo build --release)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.idle = min(args.idle, hard - 200)

    work = tempfile.mkdtemp(prefix="hostile-load-")
    port = free_port()
    config = os.path.join(work, "config.yaml")
    with open(config, "w") as f:
        f.write(f"""manifests: {MANIFESTS}
data_dir: {work}/data
resolve: false
http:
  listen: 127.0.0.1:{port}
  admin:
    token: {ADMIN}
log:
  format: json
  filter: warn
pubsub:
  push:
    auth:
      audience: https://auditor.example/pubsub/push
      service_account_emails: [push@bench.iam.gserviceaccount.com]
      jwks_url: http://127.0.0.1:9/certs
webhooks:
  distribution:
  - name: bench
    registry: registry.example
    token: {TOKEN}
""")
    service_log = open(os.path.join(work, "service.log"), "w")
    service = subprocess.Popen([binary, "serve", "--config", config],
                               stdout=service_log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if request(port, "GET", "/healthz")[0] == 200:
                break
            if service.poll() is not None:
                sys.exit(f"serve exited; see {work}/service.log")
            time.sleep(0.1)
        log(f"{binary} (pid {service.pid}) on port {port}, RSS {rss_mb(service.pid):.0f} MB")
        probe = Probe(port)
        probe.start()
        time.sleep(1)
        probe.take()
        rows, all_answered = [], True
        for name, attack in (("idle", idle), ("slow", slow), ("fanout", fanout),
                             ("reload", reload_flood)):
            before = rss_mb(service.pid)
            peak = Peak(service.pid)
            peak.start()
            log(f"{name}: starting")
            detail = attack(port, args)
            peak.stop.set()
            peak.join()
            time.sleep(3)
            counts = probe.take()
            after = rss_mb(service.pid)
            ok = counts["healthz_ok"] == counts["healthz"] and counts["push_ok"] == counts["push"]
            all_answered &= ok
            rows.append((name, before, max(peak.peak, before), after, counts, detail))
            log(f"{name}: {detail}")
        probe.stop.set()
        print()
        print("| attack | RSS before | RSS peak | RSS after | /healthz answered | "
              "authorised push answered | what happened |")
        print("|---|---|---|---|---|---|---|")
        for name, before, peak, after, c, detail in rows:
            print(f"| {name} | {before:.0f} MB | {peak:.0f} MB | {after:.0f} MB | "
                  f"{c['healthz_ok']}/{c['healthz']} | {c['push_ok']}/{c['push']} | {detail} |")
        status, metrics = request(port, "GET", "/metrics")
        print()
        for line in metrics.decode().splitlines():
            if line.startswith("image_auditor_rejected_requests_total{"):
                print(line)
        sys.exit(0 if all_answered else 1)
    finally:
        service.terminate()
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()


if __name__ == "__main__":
    main()
