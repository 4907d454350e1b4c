"""Which Ingresses a change touches: by host, default backend, Service, Secret and TLS use."""

from __future__ import annotations

from controlplane.ingress import registry
from controlplane.ingress.convert import IngressIR
from controlplane.ir import IngressRef
from controlplane.ir.policies import ServerAlias, WwwRedirect
from controlplane.services import ServiceKey

SecretKey = tuple[str, str, str]  # (cluster, namespace, name)


class DependencyIndex:
    """Reverse indexes over the current IngressIRs, updated Ingress by Ingress."""

    def __init__(self) -> None:
        self.by_host: dict[str, set[IngressRef]] = {}
        self.default_holders: set[IngressRef] = set()  # Ingresses with spec.defaultBackend
        self.by_service: dict[ServiceKey, set[IngressRef]] = {}
        self.by_secret: dict[SecretKey, set[IngressRef]] = {}
        self.tls_refs: set[IngressRef] = set()  # Ingresses with TLS bindings or ssl-passthrough
        self.alias_refs: set[IngressRef] = set()  # Ingresses with server-alias or from-to-www-redirect
        self.tls_dirty = True  # the TLS plan must be recomputed

    def add(self, ir: IngressIR) -> None:
        if ir.annotations.get(ServerAlias) is not None or ir.annotations.get(WwwRedirect) is not None:
            self.alias_refs.add(ir.ref)
        if ir.tls or registry.passes_tls_through(ir.annotations):
            self.tls_refs.add(ir.ref)
            self.tls_dirty = True
        for host in ir.hosts:
            self.by_host.setdefault(host, set()).add(ir.ref)
        if ir.default_backend is not None:
            self.default_holders.add(ir.ref)
        for key in ir.services:
            self.by_service.setdefault(key, set()).add(ir.ref)
        for skey in ir.secrets:
            self.by_secret.setdefault(skey, set()).add(ir.ref)

    def remove(self, ir: IngressIR) -> None:
        self.alias_refs.discard(ir.ref)
        if ir.ref in self.tls_refs:
            self.tls_refs.discard(ir.ref)
            self.tls_dirty = True
        for host in ir.hosts:
            refs = self.by_host.get(host)
            if refs is not None:
                refs.discard(ir.ref)
                if not refs:
                    del self.by_host[host]
        self.default_holders.discard(ir.ref)
        for key in ir.services:
            self.by_service.get(key, set()).discard(ir.ref)
        for skey in ir.secrets:
            self.by_secret.get(skey, set()).discard(ir.ref)

    def of_host(self, host: str) -> set[IngressRef]:
        """Ingresses that may contribute routes to `host` (the catch-all also gets default backends)."""
        refs = set(self.by_host.get(host, set()))
        if host == "":
            refs |= self.default_holders
        return refs

    def of_service(self, key: ServiceKey) -> set[IngressRef]:
        return self.by_service.get(key, set())

    def of_secret(self, key: SecretKey) -> set[IngressRef]:
        return self.by_secret.get(key, set())


def hosts_of(ir: IngressIR) -> set[str]:
    """The hosts an Ingress contributes to ("" is the catch-all its default backend serves)."""
    return ir.hosts | {""} if ir.default_backend is not None else set(ir.hosts)
