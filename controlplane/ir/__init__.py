"""One frontend-neutral IR: what the gateway should do, free of Kubernetes and Envoy types.

- model: matches, actions, routes, virtual hosts, TLS bindings, clusters, endpoints, findings;
- policies: every policy a frontend can attach (route, upstream, TLS, source);
- names: the stable names of Envoy resources;
- gateway: the whole gateway as one value (listeners, route tables, clusters, endpoints, secrets).

Frontends (controlplane/ingress) produce it; controlplane/translate consumes only it.
"""

from controlplane.ir.model import (
    CertificateSecret,
    DirectResponse,
    Endpoint,
    Finding,
    FindingLevel,
    Forward,
    HeaderMatch,
    IngressRef,
    LocalityEndpoints,
    Passthrough,
    PathMatch,
    Redirect,
    Route,
    RouteAction,
    ServiceCluster,
    ServicePort,
    TlsHost,
    VirtualHost,
    WeightedCluster,
    find_policy,
)

__all__ = [
    "CertificateSecret",
    "DirectResponse",
    "Endpoint",
    "Finding",
    "FindingLevel",
    "Forward",
    "HeaderMatch",
    "IngressRef",
    "LocalityEndpoints",
    "Passthrough",
    "PathMatch",
    "Redirect",
    "Route",
    "RouteAction",
    "ServiceCluster",
    "ServicePort",
    "TlsHost",
    "VirtualHost",
    "WeightedCluster",
    "find_policy",
]
