"""Partitioned route tables through a real Envoy: same routing as one table, one partition per change.

The Lua scope filter in Envoy and `partitions.bucket_of` in Python must agree on every host, or an
exact host lands in a table that does not hold it; these tests would then see the wildcard, the
default backend or a 404 instead of the host's own Service.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from controlplane.translate.partitions import SCOPE_HEADER, bucket_of
from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import Gateway, ingress, rule
from tests.support.http import Client, request
from tests.support.wait import wait_until

CA = make_ca()

PARTITIONS = 4
HOSTS = [f"h{i}.example.com" for i in range(12)]


def served_by(gw: Gateway, host: str, port: int | None = None, **kw: object) -> str | None:
    r = request("GET", port or gw.http_port, "/", host=host, **kw)  # type: ignore[arg-type]
    return r.json()["service"] if r.status == 200 else f"HTTP {r.status}"


def table_updates(gw: Gateway, table: str) -> dict[str, int]:
    """Envoy's update count per route table partition (`<table>/<K>/<n>`)."""
    assert gw.envoy is not None
    stats = gw.envoy.stats(r"\.rds\.")
    out: dict[str, int] = {}
    for name, value in stats.items():
        part = name.split(".rds.", 1)[1].rsplit(".", 1)
        if part[1] == "update_success" and part[0].startswith(table + "/"):
            out[part[0]] = max(out.get(part[0], 0), value)
    return out


def partitions(gw: Gateway) -> set[str]:
    """The partitioned route tables the control plane serves (scopes over SRDS)."""
    return set(gw.admin("/debug/snapshot")["types"]["SRDS"]["resources"])


def htpasswd_secret(user: str, password: str) -> dict[str, Any]:
    line = f"{user}:{{SHA}}{base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()}\n"
    meta = {"name": "users", "namespace": "default"}
    data = {"auth": base64.b64encode(line.encode()).decode()}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta, "data": data}


def assert_no_nacks(gw: Gateway) -> None:
    streams = gw.admin("/debug/syncz")
    assert streams and all(not t.get("last_nack") for s in streams for t in s["types"].values()), streams


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_partitioned_tables_route_like_one_table(make_gateway: Callable[..., Gateway], delta: bool) -> None:
    gw = make_gateway(
        delta=delta,
        serve_args=["--watch-ingress-without-class", "--route-partitions", str(PARTITIONS)],
        drain_time_s=60,  # a replaced listener's connections stay open long enough to be used
    ).start()
    assert len({bucket_of(h, PARTITIONS) for h in HOSTS}) == PARTITIONS  # the hosts spread over every table
    for svc in ("web", "wild", "shadow", "fallback"):
        gw.backend(svc)
    cert = issue_cert(CA, ["h2.example.com", "h7.example.com"])
    gw.write(
        "ing.yaml",
        [
            tls_secret("h-tls", "default", cert.cert, cert.key),
            ingress("exact", [rule(h, ("/", "Prefix", "web", 80)) for h in HOSTS],
                    annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
                    tls=[{"hosts": ["h2.example.com", "h7.example.com"], "secretName": "h-tls"}]),
            ingress("wild", [rule("*.wild.example.com", ("/", "Prefix", "wild", 80))]),
            ingress("shadow", [rule("a.wild.example.com", ("/", "Prefix", "shadow", 80))]),
            ingress("default", default_backend=("fallback", 80)),
        ],
    )
    gw.wait_served_by("unknown.org", "/", "fallback")
    for h in HOSTS:
        gw.wait_served_by(h, "/", "web")

    # Case and port do not move a host to another table; wildcards and the catch-all are in every table.
    assert served_by(gw, "H3.Example.COM:1234") == "web"
    assert served_by(gw, "zz.wild.example.com") == "wild"
    assert served_by(gw, "a.wild.example.com") == "shadow"  # exact beats wildcard, as in one table
    assert served_by(gw, "b.c.wild.example.com") == "HTTP 404"  # one label only, as in one table
    assert served_by(gw, "nothing.example.net") == "fallback"

    # HTTPS hosts (two tables apart or not) get the same partitioned routing behind SNI.
    for h in ("h2.example.com", "h7.example.com"):
        wait_until(lambda h=h: request("GET", gw.https_port, "/", host=h, tls=True, ca=CA.cert).status == 200,
                   timeout=15, message=f"https://{h} never served")  # fmt: skip
        assert request("GET", gw.https_port, "/", host=h, tls=True, ca=CA.cert).json()["service"] == "web"

    # A client cannot pick the table: the filter overwrites the header, and backends never see it.
    other = f"http/{PARTITIONS}/{(bucket_of('h1.example.com', PARTITIONS) + 1) % PARTITIONS}"
    r = gw.get("h1.example.com", "/", headers={SCOPE_HEADER: other})
    assert r.status == 200 and r.json()["service"] == "web"
    assert SCOPE_HEADER not in {k.lower() for k in r.json()["headers"]}

    # East-west names of a Service, with and without the port, are partitioned the same way: all of
    # them into one table (the Lua filter drops `.svc` and `.svc.cluster.local` before hashing).
    east_west = ("web.default", "web.default:80", "web.default.svc", "web.default.svc.cluster.local:80")
    assert len({bucket_of(name, PARTITIONS) for name in east_west}) == 1
    for name in east_west:
        assert served_by(gw, name, port=gw.east_west_port) == "web", name
    assert served_by(gw, "nope.default", port=gw.east_west_port) == "HTTP 404"

    # One new host changes one table partition; Envoy rebuilds nothing else.
    gw.wait_converged()
    before = table_updates(gw, "http")
    assert sorted(before) == [f"http/{PARTITIONS}/{i}" for i in range(PARTITIONS)], before
    gw.write("new.yaml", [ingress("new", [rule("new.example.com", ("/", "Prefix", "shadow", 80))])])
    gw.wait_served_by("new.example.com", "/", "shadow")
    gw.wait_converged()
    after = table_updates(gw, "http")
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {f"http/{PARTITIONS}/{bucket_of('new.example.com', PARTITIONS)}"}, (before, after)
    assert_no_nacks(gw)

    # Basic auth is a filter Envoy adds to a request only if the route it sees before any filter ran
    # asks for it: with partitions that route is not known yet, so the check would be skipped. The
    # north-south tables go back to one while such a route exists, and the check holds.
    kept = Client(gw.http_port)  # a keep-alive connection of the listener about to be replaced
    assert kept.request("GET", "/", host="h5.example.com").json()["service"] == "web"
    kept_socket = kept._connection().sock
    gw.write("auth.yaml", [htpasswd_secret("alice", "secret"), ingress(
        "auth", [rule("auth.example.com", ("/", "Prefix", "web", 80))],
        annotations={"nginx.ingress.kubernetes.io/auth-type": "basic",
                     "nginx.ingress.kubernetes.io/auth-secret": "users"})])  # fmt: skip
    gw.wait_status("auth.example.com", "/", 401)
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    assert gw.get("auth.example.com", "/", headers=auth).json()["service"] == "web"
    assert gw.metric("meridian_route_partitions", {"table": "http"}) == 1
    assert gw.metric("meridian_route_partitions", {"table": "east_west"}) == PARTITIONS
    # The old partitions stay published (and current) for connections of the draining listener.
    assert f"http/{PARTITIONS}/0" in partitions(gw)
    assert gw.envoy is not None
    draining = gw.envoy.stats("draining")  # the whole listener, or (in-place update) its filter chain
    assert draining.get("listener_manager.total_filter_chains_draining", 0) + draining.get(
        "listener_manager.total_listeners_draining", 0) >= 1, draining  # fmt: skip
    served_on_old = 0
    for host, svc in (("h5.example.com", "web"), ("new.example.com", "shadow")):
        if kept._connection().sock is not kept_socket:
            break  # a draining Envoy may close it after any response (Connection: close)
        r = kept.request("GET", "/", host=host)
        assert (r.status, r.json()["service"]) == (200, svc), host
        served_on_old += 1
    assert served_on_old >= 1, "the draining connection was never used"
    kept.close()
    assert served_by(gw, "h5.example.com") == "web"
    gw.remove("auth.yaml")
    gw.wait_served_by("auth.example.com", "/", "fallback")
    wait_until(lambda: gw.metric("meridian_route_partitions", {"table": "http"}) == PARTITIONS, timeout=10,
               message="tables never split again")  # fmt: skip
    for h in HOSTS:
        gw.wait_served_by(h, "/", "web")
    gw.wait_converged()
    assert_no_nacks(gw)


def test_tables_split_when_the_gateway_grows(make_gateway: Callable[..., Gateway]) -> None:
    """Automatic mode starts with one table and splits it, live, once there are 1,000 hosts."""
    gw = make_gateway().start()
    gw.backend("web")
    gw.backend("fallback")
    gw.write("small.yaml", [ingress("first", [rule("first.example.com", ("/", "Prefix", "web", 80))]),
                            ingress("default", default_backend=("fallback", 80))])  # fmt: skip
    gw.wait_served_by("first.example.com", "/", "web")
    assert not gw.admin("/debug/snapshot")["types"]["SRDS"]["resources"]

    many = [ingress(f"bulk-{i}", [rule(f"bulk-{i}.example.com", ("/", "Prefix", "web", 80))]) for i in range(1000)]
    gw.write("many.yaml", many)
    gw.wait_served_by("bulk-999.example.com", "/", "web", timeout=30)
    wait_until(lambda: len(gw.admin("/debug/snapshot")["types"]["SRDS"]["resources"]) > 0, timeout=10,
               message="the route tables were never split")  # fmt: skip
    gw.wait_converged(timeout=30)
    for host in ("first.example.com", "bulk-0.example.com", "bulk-500.example.com", "bulk-999.example.com"):
        assert served_by(gw, host) == "web", host
    assert served_by(gw, "elsewhere.example.org") == "fallback"
    assert served_by(gw, "web.default", port=gw.east_west_port) == "web"
    assert_no_nacks(gw)
