"""The IR's own checks: impossible combinations are named, sound values pass."""

from __future__ import annotations

import pytest

from controlplane.ir import (
    CertificateSecret,
    DirectResponse,
    Forward,
    HeaderMatch,
    IngressRef,
    Passthrough,
    PathMatch,
    Redirect,
    Route,
    ServiceCluster,
    TlsHost,
    VirtualHost,
    WeightedCluster,
)
from controlplane.ir.gateway import ClusterEndpoints, GatewayIR, Listener, RouteTableIR
from controlplane.ir.policies import IdleTimeout

REF = IngressRef("c", "ns", "ing")
CLUSTER = "ns/svc:80"


def route(name: str = "r", **kw: object) -> Route:
    args: dict[str, object] = {"match": PathMatch("prefix", "/"), "action": Forward((WeightedCluster(CLUSTER, 100),))}
    args.update(kw)
    return Route(name=name, source=REF, **args)  # type: ignore[arg-type]


def gateway(*routes: Route, tls: tuple[TlsHost, ...] = (), passthrough: tuple[Passthrough, ...] = ()) -> GatewayIR:
    vh = VirtualHost("a.example", ("a.example",), routes)
    listeners = [Listener("http", "0.0.0.0", 8080, "http")]
    if tls or passthrough:
        listeners.append(Listener("https", "0.0.0.0", 8443, "https", tls=True))
    return GatewayIR(
        listeners=tuple(listeners),
        route_tables=(RouteTableIR("http", ((vh,),)), RouteTableIR("https", ((vh,),))),
        tls_hosts=tls,
        passthrough=passthrough,
        clusters=(ServiceCluster(CLUSTER, CLUSTER, "ns", "svc", 80),),
        endpoints=(ClusterEndpoints(CLUSTER, ()),),
        secrets=(CertificateSecret("c/ns/cert", b"x", b"y"),),
    )


def test_a_sound_gateway_passes() -> None:
    gw = gateway(route(), route("r2", match=PathMatch("exact", "/x"), action=Redirect(308, scheme="https")),
                 tls=(TlsHost(("a.example",), "c/ns/cert"),))  # fmt: skip
    assert gw.problems() == []
    gw.validate()


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (route(action=Forward(())), "forward to no cluster"),
        (route(action=Forward((WeightedCluster(CLUSTER, 30), WeightedCluster(CLUSTER, 30)))), "add up to 100"),
        (route(match=PathMatch("prefix", "no-slash")), "does not start with '/'"),
        (route(action=Redirect(304)), "Envoy cannot send"),
        (route(action=Redirect(301, url="https://x/", path="/y")), "full URL"),
        (route(action=DirectResponse(42)), "out of range"),
        (route(headers=(HeaderMatch("h", exact="a", regex="b"),)), "both an exact value and a regex"),
        (route(policies=(IdleTimeout(1), IdleTimeout(2))), "two policies of one type"),
        (route(action=Forward((WeightedCluster("ns/missing:80", 100),))), "unknown cluster"),
    ],
)
def test_impossible_routes_are_named(bad: Route, words: str) -> None:
    problems = gateway(bad).problems()
    assert any(words in p for p in problems), problems
    with pytest.raises(ValueError, match="invalid gateway IR"):
        gateway(bad).validate()


def test_impossible_tls_is_named() -> None:
    both = gateway(route(), tls=(TlsHost(("a.example",), "c/ns/cert"),),
                   passthrough=(Passthrough(("a.example",), CLUSTER),))  # fmt: skip
    assert any("both terminated and passed through" in p for p in both.problems())
    unknown = gateway(route(), tls=(TlsHost(("a.example",), "c/ns/nope"),))
    assert any("unknown secret" in p for p in unknown.problems())
    no_listener = GatewayIR(**{**gateway(route()).__dict__, "tls_hosts": (TlsHost(("a",), "c/ns/cert"),)})
    assert any("no TLS listener" in p for p in no_listener.problems())


def test_cluster_names_and_variants_are_stable() -> None:
    """Cluster names on the wire never change: the variant digest is made of the same text as always
    (the repr of the policies' tuple), now spelled out by each policy's variant_key()."""
    from controlplane.ir.names import ClusterName
    from controlplane.ir.policies import (
        ConnectTimeout,
        LoadBalancer,
        ServiceUpstream,
        UpstreamProtocol,
        cluster_variant,
    )

    samples = [
        (
            UpstreamProtocol(
                "GRPCS",
                "api.example",
                False,
                True,
                b"ca",
                b"c",
                b"k",
                "abc",
                2,
                "TLSv1_2",
                "TLSv1_3",
                ("ECDHE-RSA-AES128-GCM-SHA256",),
            ),
        ),
        (ServiceUpstream(),),
        (ConnectTimeout(2.5), LoadBalancer("RANDOM")),
        (UpstreamProtocol("HTTP2"), ServiceUpstream(), ConnectTimeout(1.0), LoadBalancer("LEAST_REQUEST")),
    ]
    import hashlib

    for upstream in samples:
        for p in upstream:
            assert p.variant_key() == repr(p)
        assert cluster_variant(upstream) == hashlib.blake2b(repr(upstream).encode(), digest_size=4).hexdigest()
    assert cluster_variant(()) == ""
    assert cluster_variant((ServiceUpstream(),)) == "6e44d4bd"  # a name Envoys already hold
    name = ClusterName("ns", "svc", 8080, cluster_variant(samples[1]))
    assert str(name) == f"ns/svc:8080~{name.variant}" and str(name.base) == "ns/svc:8080"
    assert name.service_key == ("ns", "svc") and name.base.base == name.base and not name.base.variant
