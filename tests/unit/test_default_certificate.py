"""The default certificate: generated once per state dir, chosen by one pure rule, bound to hosts
without a usable certificate and to the catch-all chain, the same in the engine as in `compile`."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from controlplane.config import GatewayConfig
from controlplane.default_certificate import (
    CERT_FILE,
    FAKE_CERTIFICATE_CN,
    GENERATED_NAME,
    KEY_FILE,
    fake_certificate,
    parse_secret_ref,
    state_dir_certificate,
)
from controlplane.ingress.secrets import decode_tls_secret
from controlplane.ingress.tls import CATCH_ALL, TlsPlan
from controlplane.ir import TlsHost
from controlplane.store import INGRESS, SECRET, SERVICE
from controlplane.xds import resources as rt
from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import ingress, rule
from tests.support.snapshots import CONFIG, cold_build, diff, engine, resources, store_objects

CA = make_ca("default certificate unit CA")
MINE = issue_cert(CA, ["default.example.com"])
GENERATED = fake_certificate()
FLAG_SDS = "c1/certs/mine"


# -- generation and the state dir ------------------------------------------------------------------
def test_fake_certificate_has_ingress_nginx_subject_and_a_matching_key() -> None:
    cert = x509.load_pem_x509_certificate(GENERATED.cert_chain)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == FAKE_CERTIFICATE_CN
    assert cert.issuer == cert.subject  # self-signed
    pem = {"tls.crt": GENERATED.cert_chain.decode(), "tls.key": GENERATED.private_key.decode()}
    decode_tls_secret({"stringData": pem})
    assert "PRIVATE" not in repr(GENERATED)  # never logged by accident


def test_state_dir_keeps_one_certificate_across_starts(tmp_path: Path) -> None:
    first = state_dir_certificate(tmp_path)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    again = state_dir_certificate(tmp_path)
    assert (again.cert_chain, again.private_key) == (first.cert_chain, first.private_key)
    assert again.name == GENERATED_NAME

    # A broken file is replaced (once), not served.
    (tmp_path / CERT_FILE).write_bytes(b"garbage")
    fixed = state_dir_certificate(tmp_path)
    assert fixed.cert_chain != first.cert_chain
    assert state_dir_certificate(tmp_path).cert_chain == fixed.cert_chain


@pytest.mark.parametrize("text", ["name-only", "/name", "ns/", "a/b/c", ""])
def test_secret_ref_needs_namespace_and_name(text: str) -> None:
    with pytest.raises(ValueError):
        parse_secret_ref(text)
    assert parse_secret_ref("certs/mine") == ("certs", "mine")


# -- which certificate is the default ------------------------------------------------------------------
def test_flag_secret_when_usable_else_generated_else_none() -> None:
    both = GatewayConfig(default_certificate=("certs", "mine"), generated_certificate=GENERATED)
    assert both.default_certificate_name("c1", {FLAG_SDS}) == FLAG_SDS
    assert both.default_certificate_name("c1", set()) == GENERATED_NAME  # ingress-nginx falls back to its fake
    assert replace(both, generated_certificate=None).default_certificate_name("c1", set()) is None
    assert GatewayConfig().default_certificate_name("c1", {FLAG_SDS}) is None


# -- the plan ----------------------------------------------------------------------------------------
def test_chains_add_the_catch_all_unless_a_gateway_listener_holds_it() -> None:
    plan = TlsPlan(certs={"a.example.com": "c1/default/a"}, default=GENERATED_NAME)
    tls_hosts, _ = plan.chains()
    assert TlsHost((CATCH_ALL,), GENERATED_NAME, ()) in tls_hosts
    held = TlsPlan(certs={"a.example.com": "c1/default/a", CATCH_ALL: "c1/default/gw"}, default=GENERATED_NAME)
    assert all(h.secret != GENERATED_NAME for h in held.chains()[0])
    no_default = TlsPlan(certs={"a.example.com": "c1/default/a"})
    assert no_default.chains()[0] == [TlsHost(("a.example.com",), "c1/default/a", ())]


# -- the engine equals compile, through changes of the default's Secret ------------------------------
def _service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"port": 80}]}}  # fmt: skip


def _tls_ing(name: str, host: str, secret: str | None, created: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"hosts": [host]}
    if secret:
        entry["secretName"] = secret
    return ingress(name, [rule(host, ("/", "Prefix", "web", 80))], tls=[entry], created=created)


def _agrees(e: Any, config: GatewayConfig) -> None:
    got, want = resources(e.cache), cold_build(store_objects(e.stores), config)
    assert got == want, diff(got, want)


def _https_chains(e: Any) -> list[tuple[str, tuple[str, ...]]]:
    lst = rt.decode(rt.LISTENER, e.cache.get(rt.LISTENER).resources["https"].any_bytes)
    out = []
    for chain in lst["filter_chains"]:
        names = tuple(chain.get("filter_chain_match", {}).get("server_names", ()))
        out.append((chain["name"].split(":")[1] if chain["name"].startswith("tls:") else chain["name"], names))
    return out


def test_engine_serves_the_default_and_follows_its_secret_like_compile() -> None:
    config = replace(CONFIG, default_certificate=("certs", "mine"), generated_certificate=GENERATED)
    with engine(config=config) as e:
        store, ctl = e.stores["c1"], e.controller
        ctl.flush()  # nothing yet: still an HTTPS listener with the generated certificate for any SNI
        assert set(e.cache.get(rt.SECRET).resources) == {GENERATED_NAME}
        assert _https_chains(e) == [(GENERATED_NAME, ())]
        _agrees(e, config)

        store.upsert(SERVICE, _service())
        store.upsert(INGRESS, _tls_ing("old", "a.example.com", "missing", "2020-01-01T00:00:00Z"))
        store.upsert(INGRESS, _tls_ing("new", "a.example.com", "a-tls", "2021-01-01T00:00:00Z"))
        store.upsert(INGRESS, _tls_ing("unnamed", "b.example.com", None, "2021-01-01T00:00:00Z"))
        ctl.flush()
        # b (no secretName) gets the default; a: the newer Ingress's Secret is missing too, so default.
        assert (GENERATED_NAME, ("a.example.com", "b.example.com")) in _https_chains(e)
        _agrees(e, config)

        # The oldest Ingress decides, as ingress-nginx's createServers: its missing Secret means the
        # default certificate, even once the newer Ingress's Secret exists.
        store.upsert(SECRET, tls_secret("a-tls", "default", MINE.cert, MINE.key))
        ctl.flush()
        assert (GENERATED_NAME, ("a.example.com", "b.example.com")) in _https_chains(e)
        _agrees(e, config)
        # Without the older Ingress, the newer one's certificate is served.
        store.delete(INGRESS, "default", "old")
        ctl.flush()
        assert ("c1/default/a-tls", ("a.example.com",)) in _https_chains(e)
        _agrees(e, config)
        store.upsert(INGRESS, _tls_ing("old", "a.example.com", "missing", "2020-01-01T00:00:00Z"))
        ctl.flush()
        assert (GENERATED_NAME, ("a.example.com", "b.example.com")) in _https_chains(e)
        _agrees(e, config)

        # The flag's Secret appears: it becomes the default (and the generated one is no longer served).
        store.upsert(SECRET, tls_secret("mine", "certs", MINE.cert, MINE.key))
        ctl.flush()
        assert set(e.cache.get(rt.SECRET).resources) == {FLAG_SDS}  # a-tls is bound to no host
        assert (FLAG_SDS, ("a.example.com", "b.example.com")) in _https_chains(e) and (FLAG_SDS, ()) in _https_chains(e)
        rep = next(r for r in ctl.ingress_reports() if r["name"] == "unnamed")
        assert any(f"served with the default certificate ({FLAG_SDS})" in w for w in rep["warnings"]), rep
        _agrees(e, config)

        store.delete(SECRET, "certs", "mine")  # gone: back to the generated one
        ctl.flush()
        assert set(e.cache.get(rt.SECRET).resources) == {GENERATED_NAME}
        _agrees(e, config)


def test_without_any_default_hosts_stay_plain_http_and_say_so() -> None:
    with engine() as e:
        store, ctl = e.stores["c1"], e.controller
        store.upsert(SERVICE, _service())
        store.upsert(INGRESS, _tls_ing("a", "a.example.com", "missing", "2020-01-01T00:00:00Z"))
        ctl.flush()
        assert "https" not in e.cache.get(rt.LISTENER).resources
        rep = next(r for r in ctl.ingress_reports() if r["name"] == "a")
        assert any("plain HTTP only" in w for w in rep["warnings"]), rep
        _agrees(e, CONFIG)



def test_hosts_a_tls_ingress_does_not_list_get_a_covering_certificate_else_the_default() -> None:
    """ingress-nginx's extractTLSSecretName: a `tls:` entry without hosts serves the rule hosts its
    certificate covers (here a wildcard); the Ingress's other hosts get the default certificate."""
    from controlplane.ingress.secrets import certificate_names, covers

    wild = issue_cert(CA, ["*.example.com"])
    assert covers(certificate_names(wild.cert), "a.example.com")
    assert not covers(certificate_names(wild.cert), "a.b.example.com") and not covers({"*.example.com"}, "example.com")
    config = replace(CONFIG, generated_certificate=GENERATED)
    with engine(config=config) as e:
        store, ctl = e.stores["c1"], e.controller
        store.upsert(SERVICE, _service())
        store.upsert(SECRET, tls_secret("wild", "default", wild.cert, wild.key))
        rules = [rule(h, ("/", "Prefix", "web", 80)) for h in ("a.example.com", "deep.a.example.com", "other.org")]
        store.upsert(INGRESS, ingress("w", rules, tls=[{"secretName": "wild"}]))
        ctl.flush()
        chains = _https_chains(e)
        assert ("c1/default/wild", ("a.example.com",)) in chains
        assert (GENERATED_NAME, ("deep.a.example.com", "other.org")) in chains
        _agrees(e, config)
