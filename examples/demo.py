"""`make demo`: Meridian + a real Envoy + echo backends for the two example clusters.

Starts everything, checks that every printed curl line really works, prints them,
and stops everything cleanly on Ctrl-C. `--check` exits after the self-check
(the test suite runs it that way).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controlplane.bootstrap import local_client_tls, render_bootstrap  # noqa: E402
from controlplane.devtools.echo import EchoFleet  # noqa: E402
from controlplane.devtools.envoy_proc import EnvoyProcess  # noqa: E402

# (service, namespace, source cluster, pod, port) — the ports the example EndpointSlices name.
BACKENDS = [
    ("web", "shop", "east", "web-east-1", 19101),
    ("web", "shop", "east", "web-east-2", 19102),
    ("api", "shop", "east", "api-east-1", 19103),
    ("api-canary", "shop", "east", "api-canary-east-1", 19104),
    ("web", "shop", "west", "web-west-1", 19201),
    ("catalog", "shop", "west", "catalog-west-1", 19202),
    ("fallback", "default", "west", "fallback-west-1", 19203),
]

HTTP, HTTPS, EAST_WEST, XDS, ADMIN, ENVOY_ADMIN = 8080, 8443, 15080, 18000, 19000, 9901

CURLS = [
    ("north-south by host", f"curl -s -H 'Host: shop.example.com' http://127.0.0.1:{HTTP}/"),
    ("exact path to the API", f"curl -s -H 'Host: shop.example.com' http://127.0.0.1:{HTTP}/healthz"),
    (
        "canary by header",
        f"curl -s -H 'Host: shop.example.com' -H 'X-Canary: always' http://127.0.0.1:{HTTP}/api/items",
    ),
    (
        "HTTPS with SNI",
        f"curl -s --cacert examples/shop.example.com.crt --resolve shop.example.com:{HTTPS}:127.0.0.1 "
        f"https://shop.example.com:{HTTPS}/",
    ),
    (
        "regex rewrite (cluster west)",
        f"curl -s --cacert examples/catalog.example.com.crt --resolve catalog.example.com:{HTTPS}:127.0.0.1 "
        f"https://catalog.example.com:{HTTPS}/catalog/books",
    ),
    (
        "east-west by svc.ns (merged across east and west)",
        f"curl -s -H 'Host: web.shop' http://127.0.0.1:{EAST_WEST}/",
    ),
    ("default backend for any other host", f"curl -s -H 'Host: unknown.test' http://127.0.0.1:{HTTP}/"),
    (
        "plain HTTP to a TLS host is redirected (308)",
        f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}\\n' -H 'Host: catalog.example.com' "
        f"http://127.0.0.1:{HTTP}/catalog/books",
    ),
]


def check_curls() -> list[str]:
    """Run every curl line; return the problems (empty when all work)."""
    expect = {
        0: ("web", "/"),
        1: ("api", "/healthz"),
        2: ("api-canary", "/api/items"),
        3: ("web", "/"),
        4: ("catalog", "/books"),
        5: ("web", "/"),
        6: ("fallback", "/"),
    }
    redirect = f"308 https://catalog.example.com:{HTTPS}/catalog/books"
    problems = []
    for i, (what, cmd) in enumerate(CURLS):
        out = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=10)
        if i not in expect:
            if out.stdout.strip() != redirect:
                problems.append(f"{what}: {out.stdout.strip()!r}, expected {redirect!r}")
            continue
        try:
            body = json.loads(out.stdout)
        except json.JSONDecodeError:
            problems.append(f"{what}: {out.stdout[:200]!r} {out.stderr[:200]!r}")
            continue
        service, path = expect[i]
        if body.get("service") != service or body.get("path") != path:
            problems.append(f"{what}: got service={body.get('service')} path={body.get('path')}")
    return problems


def gateway_protocol() -> str:
    """The xDS flavour the demo's Envoy streams with, as the control plane reports it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/debug/syncz", timeout=5) as resp:
        streams = json.load(resp)
    return ",".join(sorted({s["protocol"] for s in streams if s["node_id"] == "demo-gateway"})) or "none"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="exit after checking the curl lines")
    parser.add_argument("--clusters", choices=["all", "on-demand"], default="all",
                        help="the gateway's clusters: all up front, or each fetched on its first request "
                        "(`meridian bootstrap --clusters`)")  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="meridian-demo-"))
    state = work / "state"  # the demo's own local CA: xDS is TLS with client certificates, as by default
    fleet = EchoFleet()
    procs: list[subprocess.Popen[bytes]] = []
    envoy: EnvoyProcess | None = None
    try:
        for service, ns, cluster, pod, port in BACKENDS:
            fleet.add(service=service, pod=pod, namespace=ns, cluster=cluster, port=port)
        log = open(work / "meridian.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "controlplane", "serve",
                 "--cluster", f"east={ROOT / 'examples/clusters/east'}",
                 "--cluster", f"west={ROOT / 'examples/clusters/west'}",
                 "--xds-address", f"127.0.0.1:{XDS}", "--admin-address", f"127.0.0.1:{ADMIN}",
                 "--listen-address", "127.0.0.1", "--http-port", str(HTTP), "--https-port", str(HTTPS),
                 "--public-https-port", str(HTTPS),
                 "--east-west-port", str(EAST_WEST), "--state-dir", str(state)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        envoy = EnvoyProcess(
            render_bootstrap(xds_address=f"127.0.0.1:{XDS}", node_id="demo-gateway", admin_port=ENVOY_ADMIN,
                             delta=True, tls=local_client_tls(state, "meridian-gateway"), clusters=args.clusters),
            keep_admin=True,
            workdir=work / "envoy",
        )
        envoy.start()
        envoy.wait_ready(60)
        deadline = time.monotonic() + 30
        problems = check_curls()
        while problems and time.monotonic() < deadline:
            time.sleep(0.2)
            problems = check_curls()
        if not problems and gateway_protocol() != "delta":  # what `meridian bootstrap` gives users
            problems = [f"the demo Envoy streams {gateway_protocol()} xDS, not delta"]
        if problems:
            print("demo self-check failed:", *problems, sep="\n  ", file=sys.stderr)
            print(f"control plane log: {work / 'meridian.log'}", file=sys.stderr)
            return 1
        print("\nMeridian demo is up: two clusters (east, west), one Envoy gateway (Delta xDS).\n")
        for what, cmd in CURLS:
            print(f"# {what}\n{cmd}\n")
        print(f"Admin: http://127.0.0.1:{ADMIN}/debug/ingresses  /debug/clusters  /debug/syncz  /metrics")
        print(f"Envoy admin: http://127.0.0.1:{ENVOY_ADMIN}/  ·  edit files under examples/clusters/ to see changes")
        print(f"xDS is TLS with client certificates from the demo's CA in {state}; another Envoy:\n"
              f"  meridian bootstrap --state-dir {state} --xds-address 127.0.0.1:{XDS} --node-id gw-2 "
              f"--admin-port 9902 > envoy.yaml")
        if args.check:
            return 0
        print("\nCtrl-C to stop.")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        if envoy is not None:
            envoy.stop()
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        fleet.close()
        print("stopped.", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
