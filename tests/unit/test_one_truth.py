"""What Envoy gets is a function of the objects present: Secrets deleted or broken, Ingress ages in
file mode and ties, and a batch that fails half-way. Each is checked against a cold build of the same
objects (a fresh replica) where the rule says they must agree, and the report says what happens."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from controlplane.controller import Controller
from controlplane.ingress.convert import creation_time, descending
from controlplane.offline import translate_paths
from controlplane.sources.files import FileSource
from controlplane.store import INGRESS, SECRET, SERVICE, ClusterStore
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache
from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import dump_manifests, ingress, rule
from tests.support.snapshots import CONFIG, FlakyCache, cold_build, diff, engine, resources, store_objects

N = "nginx.ingress.kubernetes.io/"
CA = make_ca("one truth CA")
CERT_A = issue_cert(CA, ["a.example.com"])
CERT_B = issue_cert(CA, ["b.example.com"])
SDS_A = "c1/default/a-tls"


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"port": 80}]}}  # fmt: skip


def secret(name: str, cert: Any = CERT_A, *, uid: str | None = "uid-1", valid: bool = True) -> dict[str, Any]:
    obj = tls_secret(name, "default", cert.cert if valid else b"not a certificate", cert.key)
    if uid:
        obj["metadata"]["uid"] = uid
    return obj


def tls_ing(name: str, host: str, secret_name: str, **annotations: str) -> dict[str, Any]:
    return ingress(name, [rule(host, ("/", "Prefix", "web", 80))], tls=[{"hosts": [host], "secretName": secret_name}],
                   annotations={N + k: v for k, v in annotations.items()})  # fmt: skip


def report(ctl: Controller, name: str) -> dict[str, Any]:
    return next(r for r in ctl.ingress_reports() if r["name"] == name)


def http_action(cache: SnapshotCache, host: str) -> str:
    """'redirect' or 'route' for `host` on the plain-HTTP listener's table."""
    table = rt.decode(rt.ROUTE, cache.get(rt.ROUTE).resources["http"].any_bytes)
    vhost = next(v for v in table["virtual_hosts"] if host in v["domains"])
    first = vhost["routes"][0]  # the 308 for "/" itself is a direct response (the bare origin as Location)
    return "redirect" if "redirect" in first or first.get("direct_response", {}).get("status") == 308 else "route"


def agrees_with_cold_build(e: Any) -> None:
    got, want = resources(e.cache), cold_build(store_objects(e.stores))
    assert got == want, diff(got, want)


# -- Secrets ------------------------------------------------------------------------------------------
def test_deleted_secret_stops_being_served_and_is_reported() -> None:
    with engine() as e:
        store, ctl = e.stores["c1"], e.controller
        store.upsert(SERVICE, service("web"))
        store.upsert(SECRET, secret("a-tls"))
        store.upsert(SECRET, secret("b-tls", CERT_B))
        store.upsert(INGRESS, tls_ing("a", "a.example.com", "a-tls"))
        store.upsert(INGRESS, tls_ing("b", "b.example.com", "b-tls", **{"force-ssl-redirect": "true"}))
        ctl.flush()
        assert {SDS_A, "c1/default/b-tls"} <= e.cache.get(rt.SECRET).resources.keys()
        assert http_action(e.cache, "a.example.com") == "redirect"

        store.delete(SECRET, "default", "a-tls")
        store.delete(SECRET, "default", "b-tls")
        ctl.flush()
        assert not e.cache.get(rt.SECRET).resources  # no certificate is served any more
        assert "https" not in e.cache.get(rt.LISTENER).resources  # no HTTPS filter chain left at all
        assert http_action(e.cache, "a.example.com") == "route"  # ssl-redirect needs a certificate
        assert http_action(e.cache, "b.example.com") == "redirect"  # force-ssl-redirect does not (ingress-nginx)
        agrees_with_cold_build(e)
        warnings = report(ctl, "a")["warnings"]
        assert any("secret default/a-tls: not found" in w and "plain HTTP only" in w for w in warnings), warnings
        warnings = report(ctl, "b")["warnings"]
        assert any("force-ssl-redirect still redirects" in w for w in warnings), warnings

        store.upsert(SECRET, secret("a-tls", uid="uid-2"))  # back: served again
        ctl.flush()
        assert SDS_A in e.cache.get(rt.SECRET).resources and http_action(e.cache, "a.example.com") == "redirect"
        assert not any("a-tls" in w for w in report(ctl, "a")["warnings"])
        agrees_with_cold_build(e)


def test_invalid_secret_keeps_last_good_certificate_only_while_it_is_the_same_object() -> None:
    with engine() as e:
        store, ctl = e.stores["c1"], e.controller
        store.upsert(SERVICE, service("web"))
        store.upsert(SECRET, secret("a-tls"))
        store.upsert(INGRESS, tls_ing("a", "a.example.com", "a-tls"))
        ctl.flush()
        good = e.cache.get(rt.SECRET).resources[SDS_A]

        store.upsert(SECRET, secret("a-tls", valid=False))  # same object (uid), bad edit: last good kept
        ctl.flush()
        assert e.cache.get(rt.SECRET).resources.get(SDS_A) == good
        assert http_action(e.cache, "a.example.com") == "redirect"
        warnings = report(ctl, "a")["warnings"]
        assert any("tls.crt is not a PEM certificate" in w and "last good certificate is still served" in w
                   for w in warnings), warnings  # fmt: skip
        # The one deliberate history dependence: a fresh replica never saw the good content.
        assert SDS_A not in cold_build(store_objects(e.stores))[rt.SECRET]

        # Deleted and created again (a new uid), still invalid: a new object has no last good certificate.
        store.delete(SECRET, "default", "a-tls")
        store.upsert(SECRET, secret("a-tls", uid="uid-2", valid=False))
        ctl.flush()
        assert SDS_A not in e.cache.get(rt.SECRET).resources
        warnings = report(ctl, "a")["warnings"]
        assert any("no certificate for a.example.com" in w for w in warnings), warnings
        agrees_with_cold_build(e)


@pytest.mark.parametrize("one_batch", [True, False])
def test_secret_without_uid_deleted_and_recreated_invalid_loses_last_good(one_batch: bool) -> None:
    """File mode has no uid: the delete itself is what makes it a new object, even within one batch."""
    with engine() as e:
        store, ctl = e.stores["c1"], e.controller
        store.upsert(SERVICE, service("web"))
        store.upsert(SECRET, secret("a-tls", uid=None))
        store.upsert(INGRESS, tls_ing("a", "a.example.com", "a-tls"))
        ctl.flush()
        store.delete(SECRET, "default", "a-tls")
        if not one_batch:
            ctl.flush()
        store.upsert(SECRET, secret("a-tls", uid=None, valid=False))
        ctl.flush()
        assert SDS_A not in e.cache.get(rt.SECRET).resources
        agrees_with_cold_build(e)


# -- ages and ties ---------------------------------------------------------------------------------------
def test_creation_time_normalized_missing_is_oldest() -> None:
    import datetime as dt

    assert creation_time(None) == ("", None)
    assert creation_time("2024-01-02T03:04:05Z") == ("2024-01-02T03:04:05Z", None)
    assert creation_time("2024-01-02T05:04:05+02:00") == ("2024-01-02T03:04:05Z", None)
    assert creation_time(dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) == ("2024-01-02T03:04:05Z", None)
    created, problem = creation_time("yesterday")
    assert created == "" and problem is not None and "yesterday" in problem
    # Ties: "namespace/name" in reverse byte order, as Go's `in > jn` (prefixes and '-' < '/' included).
    names = ["a/x", "a/xy", "a-b/x", "ab/x", "b/a", "default/é", "default/e"]
    assert sorted(names, key=descending) == sorted(names, key=str.encode, reverse=True)


def _winner(directory: Path) -> str:
    reports = {r["name"]: r for r in translate_paths([directory], CONFIG).reports}
    losers = {n for n, r in reports.items() if any("is served by" in w for w in r["warnings"])}
    (winner,) = set(reports) - losers
    return winner


def _conflicting(name: str, **extra: Any) -> dict[str, Any]:
    return ingress(name, [rule("same.example.com", ("/", "Prefix", "web", 80))], **extra)


def test_file_mode_ages_are_not_file_times_and_ties_break_as_ingress_nginx(tmp_path: Path) -> None:
    (tmp_path / "svc.yaml").write_text(dump_manifests([service("web")]))
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(dump_manifests([_conflicting("a")]))
    b.write_text(dump_manifests([_conflicting("b")]))
    os.utime(a, (1_600_000_000, 1_600_000_000))  # a's file is older
    os.utime(b, (1_700_000_000, 1_700_000_000))
    # No creationTimestamp: a tie, broken as ingress-nginx's sortIngressSlice does ("default/b" > "default/a").
    assert _winner(tmp_path) == "b"
    # An annotation edit (a newer file) changes nothing, nor does a restart reading it again.
    a.write_text(dump_manifests([_conflicting("a", annotations={N + "proxy-read-timeout": "30"})]))
    os.utime(a, (1_800_000_000, 1_800_000_000))
    assert _winner(tmp_path) == "b"

    # A creationTimestamp decides; a missing one is Go's zero time: older than any.
    b.write_text(dump_manifests([_conflicting("b", created="2024-01-01T00:00:00Z")]))
    assert _winner(tmp_path) == "a"
    a.write_text(dump_manifests([_conflicting("a", created="2024-06-01T00:00:00Z")]))
    assert _winner(tmp_path) == "b"
    # Unquoted in YAML the time is a datetime: the same order.
    unquoted = "name: a\n  creationTimestamp: 2023-01-01T00:00:00Z\n"
    a.write_text(dump_manifests([_conflicting("a")]).replace("name: a\n", unquoted))
    assert _winner(tmp_path) == "a"


def test_file_mode_object_in_two_files_last_path_wins_not_last_edit(tmp_path: Path) -> None:
    def svc(origin: str) -> str:
        return dump_manifests([{**service("web"), "metadata": {"name": "web", "namespace": "default",
                                                              "labels": {"from": origin}}}])  # fmt: skip

    def labels(store: ClusterStore) -> Any:
        obj = store.get(SERVICE, "default", "web")
        return obj and obj["metadata"]["labels"]

    a, z = tmp_path / "a.yaml", tmp_path / "z.yaml"
    a.write_text(svc("a"))
    z.write_text(svc("z"))
    running = ClusterStore("c1", primary=True)
    source = FileSource(tmp_path, running)
    source.load_all()
    assert labels(running) == {"from": "z"}
    a.write_text(svc("a2"))  # editing the other definition does not make it win
    source.load_file(a)
    assert labels(running) == {"from": "z"}
    restarted = ClusterStore("c1", primary=True)
    FileSource(tmp_path, restarted).load_all()
    assert labels(restarted) == labels(running)
    z.unlink()
    source.load_file(z)
    assert labels(running) == {"from": "a2"}
    a.unlink()
    source.load_file(a)
    assert running.get(SERVICE, "default", "web") is None


# -- a batch that fails half-way ---------------------------------------------------------------------------------
def test_failed_batch_leaves_no_marker_set_next_batch_publishes_what_a_cold_build_would() -> None:
    cache = FlakyCache()
    with engine(cache=cache) as e:
        store, ctl = e.stores["c1"], e.controller
        store.upsert(SERVICE, service("web"))
        store.upsert(SERVICE, service("api"))
        store.upsert(INGRESS, ingress("plain", [rule("plain.example.com", ("/", "Prefix", "web", 80))]))
        ctl.flush()
        before = resources(cache)

        # One batch touching every marker: TLS (a new chain), a variant cluster, a listener input (CORS filter),
        # a route table partition, an EDS assignment.
        store.upsert(SECRET, secret("a-tls"))
        store.upsert(INGRESS, tls_ing("a", "a.example.com", "a-tls", **{"load-balance": "ewma", "enable-cors": "true"}))
        store.upsert(INGRESS, ingress("plain", [rule("plain.example.com", ("/v2", "Prefix", "api", 80))]))
        cache.armed = True
        ctl.flush()  # raises inside; logged, the previous snapshot stays
        assert resources(cache) == before

        ctl.flush()  # nothing new arrived: the next batch still publishes everything
        agrees_with_cold_build(e)
        assert SDS_A in cache.get(rt.SECRET).resources and "https" in cache.get(rt.LISTENER).resources

        # And the engine is incremental again afterwards.
        store.upsert(INGRESS, ingress("plain", [rule("plain.example.com", ("/v3", "Prefix", "web", 80))]))
        ctl.flush()
        agrees_with_cold_build(e)


def test_failed_batch_is_retried_without_a_new_event() -> None:
    import asyncio

    cache = FlakyCache()
    with engine(cache=cache) as e:
        store, ctl = e.stores["c1"], e.controller
        store.upsert(SERVICE, service("web"))
        ctl.flush()
        cache.armed = True
        store.upsert(INGRESS, ingress("late", [rule("late.example.com", ("/", "Prefix", "web", 80))]))
        loop = ctl._loop
        assert loop is not None

        async def published() -> None:
            async with asyncio.timeout(10):
                while "late.example.com" not in str(resources(cache)[rt.ROUTE]):
                    await asyncio.sleep(0.02)

        loop.run_until_complete(published())  # the flush fails, then the retry (backoff) rebuilds
        agrees_with_cold_build(e)
