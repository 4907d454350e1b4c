"""Route table partitions: placement by host hash, incremental assembly, automatic growth."""

from __future__ import annotations

import zlib
from typing import Any

from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.ir import DirectResponse, IngressRef, PathMatch, Route, VirtualHost
from controlplane.translate import partitions as pt
from controlplane.translate.listeners import connection_manager
from controlplane.translate.routes import framed_vhost, route_configuration_from_frames, vhost_bytes
from controlplane.xds import resources as rt


def frame(host: str) -> bytes:
    route = Route(host, PathMatch("prefix", "/"), DirectResponse(200, host), IngressRef("c", "ns", "ing"))
    vh = VirtualHost(host or "catch-all", (host or "*",), (route,))
    return framed_vhost(vhost_bytes(vh))


def rendered(table: pt.RouteTable) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    table.render(lambda type_url, name, body: out.__setitem__((rt.SHORT_NAMES[type_url], name), body))
    return out


def domains(body: bytes) -> list[str]:
    return sorted(d for vh in route_pb2.RouteConfiguration.FromString(body).virtual_hosts for d in vh.domains)


def test_host_hash_ignores_case_and_port() -> None:
    assert pt.host_hash("Shop.Example.COM:8443") == pt.host_hash("shop.example.com")
    assert pt.host_hash("a.example.com") != pt.host_hash("b.example.com")
    assert 0 <= pt.bucket_of("shop.example.com", 16) < 16


def test_a_services_east_west_names_are_one_hash_so_its_virtual_host_is_in_one_table() -> None:
    names = ("web.shop", "web.shop.svc", "web.shop.svc.cluster.local", "Web.Shop.SVC.cluster.local:8080")
    assert {pt.host_hash(n) for n in names} == {zlib.crc32(b"web.shop")}
    # Only a whole trailing label is dropped, and never the whole host.
    assert pt.host_hash("web.shopsvc") == zlib.crc32(b"web.shopsvc")
    assert pt.host_hash(".svc") == zlib.crc32(b".svc")
    assert pt.host_hash(".svc.cluster.local") == zlib.crc32(b".svc.cluster.local")
    table = pt.RouteTable("east_west", ignore_port=False, partitions=64)
    for i in range(50):
        service = (f"svc-{i}.ns", f"svc-{i}.ns.svc", f"svc-{i}.ns.svc.cluster.local")
        table.put(service, frame(service[0]), (*service, *(f"{n}:80" for n in service)))
    out = rendered(table)
    tables = [route_pb2.RouteConfiguration.FromString(body) for (t, _), body in out.items() if t == "RDS"]
    assert sum(len(table.virtual_hosts) for table in tables) == 50  # each Service's once


def test_one_table_is_the_plain_route_configuration() -> None:
    table = pt.RouteTable("http")
    for host in ("b.com", "", "a.com"):
        table.put(host, frame(host), (host,))
    out = rendered(table)
    want = route_configuration_from_frames("http", [frame(""), frame("a.com"), frame("b.com")])
    assert out == {("RDS", "http"): want}


def test_exact_hosts_land_in_their_bucket_and_shared_hosts_everywhere() -> None:
    hosts = [f"h{i}.example.com" for i in range(20)]
    table = pt.RouteTable("http", partitions=4)
    for host in [*hosts, "*.wild.example.com", ""]:
        table.put(host, frame(host), (host,))
    out = rendered(table)
    assert {n for t, n in out if t == "SRDS"} == {"http/4/0", "http/4/1", "http/4/2", "http/4/3"}
    scope = out[("SRDS", "http/4/2")]
    assert isinstance(scope, scoped_route_pb2.ScopedRouteConfiguration)
    assert scope.route_configuration_name == "http/4/2" and scope.key.fragments[0].string_key == "http/4/2"
    for b in range(4):
        body = out[("RDS", f"http/4/{b}")]
        want = sorted([h for h in hosts if pt.bucket_of(h, 4) == b] + ["*", "*.wild.example.com"])
        assert domains(body) == want
        assert list(route_pb2.RouteConfiguration.FromString(body).request_headers_to_remove) == [pt.SCOPE_HEADER]


def test_a_change_rebuilds_only_the_tables_it_touches() -> None:
    table = pt.RouteTable("http", partitions=8)
    for i in range(40):
        table.put(f"h{i}.example.com", frame(f"h{i}.example.com"), (f"h{i}.example.com",))
    rendered(table)
    assert rendered(table) == {}  # nothing changed
    table.put("h3.example.com", frame("h3.example.com"), ("h3.example.com",))
    assert rendered(table) == {}  # same bytes: no table is rebuilt
    table.put("new.example.com", frame("new.example.com"), ("new.example.com",))
    assert set(rendered(table)) == {("RDS", f"http/8/{pt.bucket_of('new.example.com', 8)}")}
    table.remove("h5.example.com")
    assert set(rendered(table)) == {("RDS", f"http/8/{pt.bucket_of('h5.example.com', 8)}")}
    table.put("*.x.com", frame("*.x.com"), ("*.x.com",))
    assert len(rendered(table)) == 8  # a wildcard is in every table
    # A multi-name entry (east-west: svc.ns, svc.ns.svc, ...) is in each bucket one of its names hashes to.
    names = ("web.ns", "web.ns.svc", "web.ns.svc.cluster.local:80")
    table.put("web", frame("web.ns"), names)
    assert {n for _, n in rendered(table)} == {f"http/8/{pt.bucket_of(n, 8)}" for n in names}


def test_old_layouts_linger_for_draining_listeners_then_go() -> None:
    now = [100.0]
    table = pt.RouteTable("http", linger=60, clock=lambda: now[0])
    table.put("a.com", frame("a.com"), ("a.com",))
    rendered(table)
    table.repartition(2)
    out = rendered(table)
    assert {k for k, v in out.items() if v is not None} == {
        ("SRDS", "http/2/0"), ("SRDS", "http/2/1"), ("RDS", "http/2/0"), ("RDS", "http/2/1")
    }
    assert table.names == ["http/2/0", "http/2/1"] and table.next_retirement() == 160.0
    # The old single table still follows every change while the old listener drains.
    table.put("b.com", frame("b.com"), ("b.com",))
    assert ("RDS", "http") in rendered(table)
    table.repartition(4)  # two layouts lingering now
    assert len(rendered(table)) == 8
    now[0] = 161.0
    out = rendered(table)
    assert out[("RDS", "http")] is None and out[("RDS", "http/2/1")] is None and out[("SRDS", "http/2/0")] is None
    assert all(v is None for v in out.values()) and table.next_retirement() is None
    assert table.names == [f"http/4/{i}" for i in range(4)] and len(table) == 2


def test_a_layout_not_yet_published_is_not_kept_and_an_old_one_comes_back() -> None:
    now = [0.0]
    table = pt.RouteTable("http", linger=60, clock=lambda: now[0])
    table.put("a.com", frame("a.com"), ("a.com",))
    table.repartition(4)  # before any render: the single table was never sent
    assert table.next_retirement() is None
    assert {n for _, n in rendered(table)} == {f"http/4/{i}" for i in range(4)}
    table.repartition(1)  # auth appeared: one table, the partitions linger
    rendered(table)
    table.repartition(4)  # and went again: the lingering layout is current again, nothing rebuilt twice
    assert table.names == [f"http/4/{i}" for i in range(4)] and table.next_retirement() == 60.0


def test_auto_partitions_grow_and_never_shrink() -> None:
    assert pt.auto_partitions(10, 1) == 1
    assert pt.auto_partitions(999, 1) == 1
    assert pt.auto_partitions(1000, 1) == 64
    assert pt.auto_partitions(10_000, 1) == 512
    assert pt.auto_partitions(50, 128) == 128  # shrinking would rebuild every listener for nothing
    assert pt.auto_partitions(10**7, 1) == pt.MAX_PARTITIONS


def test_connection_manager_uses_scoped_routes_with_the_scope_filter_first() -> None:
    one = connection_manager("http", "http", [])
    assert one.rds.route_config_name == "http" and not one.HasField("scoped_routes")
    many = connection_manager("http", "http", [hcm_pb2.HttpFilter(name="x")], partitions=4)
    assert not many.HasField("rds")
    assert [f.name for f in many.http_filters] == [pt.SCOPE_FILTER, "x", "envoy.filters.http.router"]
    scoped = many.scoped_routes
    assert scoped.scope_key_builder.fragments[0].header_value_extractor.name == pt.SCOPE_HEADER
    assert scoped.HasField("scoped_rds") and scoped.rds_config_source.HasField("ads")


def test_an_unused_table_is_not_published_until_needed() -> None:
    now = [0.0]
    table = pt.RouteTable("https", partitions=2, linger=60, clock=lambda: now[0])
    table.set_active(False)  # no HTTPS listener yet
    table.put("a.com", frame("a.com"), ("a.com",))
    assert rendered(table) == {}
    table.set_active(True)  # the first certificate arrived: everything is sent, current
    out = rendered(table)
    assert {n for t, n in out if t == "RDS"} == {"https/2/0", "https/2/1"}
    assert sorted(d for (t, _), body in out.items() if t == "RDS" for d in domains(body)) == ["a.com"]
    table.set_active(False)  # the last one went: the partitions linger for draining connections
    table.put("b.com", frame("b.com"), ("b.com",))
    assert {n for t, n in rendered(table) if t == "RDS"} == {f"https/2/{pt.bucket_of('b.com', 2)}"}
    now[0] = 61.0
    assert all(v is None for v in rendered(table).values())
    table.put("c.com", frame("c.com"), ("c.com",))
    assert rendered(table) == {}
