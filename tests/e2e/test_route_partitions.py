"""Partitioned route tables through a real Envoy: same routing as one table, one partition per change.

The Lua scope filter in Envoy and `partitions.bucket_of` in Python must agree on every host, or an
exact host lands in a table that does not hold it; these tests would then see the wildcard, the
default backend or a 404 instead of the host's own Service.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from controlplane.translate.partitions import SCOPE_HEADER, bucket_of
from tests.support.gateway import Gateway, ingress, rule
from tests.support.http import request
from tests.support.wait import wait_until

PARTITIONS = 4
HOSTS = [f"h{i}.example.com" for i in range(12)]


def served_by(gw: Gateway, host: str, port: int | None = None, **kw: object) -> str | None:
    r = request("GET", port or gw.http_port, "/", host=host, **kw)  # type: ignore[arg-type]
    return r.json()["service"] if r.status == 200 else f"HTTP {r.status}"


def table_updates(gw: Gateway, table: str) -> dict[str, int]:
    """Envoy's update count per route table partition (`<table>/<n>`)."""
    assert gw.envoy is not None
    stats = gw.envoy.stats(r"\.rds\.")
    out: dict[str, int] = {}
    for name, value in stats.items():
        part = name.split(".rds.", 1)[1].rsplit(".", 1)
        if part[1] == "update_success" and part[0].startswith(table + "/"):
            out[part[0]] = max(out.get(part[0], 0), value)
    return out


def assert_no_nacks(gw: Gateway) -> None:
    streams = gw.admin("/debug/syncz")
    assert streams and all(not t.get("last_nack") for s in streams for t in s["types"].values()), streams


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_partitioned_tables_route_like_one_table(make_gateway: Callable[..., Gateway], delta: bool) -> None:
    gw = make_gateway(
        delta=delta, serve_args=["--watch-ingress-without-class", "--route-partitions", str(PARTITIONS)]
    ).start()
    assert len({bucket_of(h, PARTITIONS) for h in HOSTS}) == PARTITIONS  # the hosts spread over every table
    for svc in ("web", "wild", "shadow", "fallback"):
        gw.backend(svc)
    gw.write(
        "ing.yaml",
        [
            ingress("exact", [rule(h, ("/", "Prefix", "web", 80)) for h in HOSTS]),
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

    # A client cannot pick the table: the filter overwrites the header, and backends never see it.
    other = f"http/{(bucket_of('h1.example.com', PARTITIONS) + 1) % PARTITIONS}"
    r = gw.get("h1.example.com", "/", headers={SCOPE_HEADER: other})
    assert r.status == 200 and r.json()["service"] == "web"
    assert SCOPE_HEADER not in {k.lower() for k in r.json()["headers"]}

    # East-west names of a Service, with and without the port, are partitioned the same way.
    for name in ("web.default", "web.default:80", "web.default.svc", "web.default.svc.cluster.local:80"):
        assert served_by(gw, name, port=gw.east_west_port) == "web", name
    assert served_by(gw, "nope.default", port=gw.east_west_port) == "HTTP 404"

    # One new host changes one table partition; Envoy rebuilds nothing else.
    gw.wait_converged()
    before = table_updates(gw, "http")
    assert sorted(before) == [f"http/{i}" for i in range(PARTITIONS)], before
    gw.write("new.yaml", [ingress("new", [rule("new.example.com", ("/", "Prefix", "shadow", 80))])])
    gw.wait_served_by("new.example.com", "/", "shadow")
    gw.wait_converged()
    after = table_updates(gw, "http")
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {f"http/{bucket_of('new.example.com', PARTITIONS)}"}, (before, after)
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
