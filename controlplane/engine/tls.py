"""Certificates and the TLS plan, recomputed only when a Secret or a TLS-bearing Ingress changed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controlplane.certificates import CertificateBook
from controlplane.config import GatewayConfig
from controlplane.ingress.convert import IngressIR
from controlplane.ingress.tls import TlsPlan, plan_tls
from controlplane.ir import CertificateSecret
from controlplane.ir.names import secret_name
from controlplane.translate.resources import certificate_secret
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, make_resource

log = logging.getLogger("controlplane.controller")

SecretKey = tuple[str, str, str]


class TlsState:
    """The TLS plan of the current Ingresses; the certificates (`CertificateBook`, kept across full
    rebuilds: a last good certificate is history) are handed in."""

    def __init__(
        self,
        get_secret: Callable[[str, str, str], Mapping[str, Any] | None],
        book: CertificateBook,
        config: GatewayConfig,
        primary: Callable[[], str | None],
    ) -> None:
        self.get_secret = get_secret
        self.certificates = book
        self.config = config  # the default certificate: the flag's Secret, else the generated one
        self.primary = primary
        self.plan = TlsPlan()  # certificates, TLS policies and passthrough per host
        self.built = False  # the first build plans TLS even without Secrets: the default certificate

    def _certificate(self, name: str) -> CertificateSecret:
        generated = self.config.generated_certificate
        if name not in self.certificates and generated is not None and name == generated.name:
            return generated
        return self.certificates[name]

    def rebuild(
        self,
        changes: dict[str, dict[str, Resource | None]],
        dirty_secrets: Mapping[SecretKey, bool],
        ordered: list[IngressIR],
        published: Iterable[str],
        extra: Callable[[dict[str, str]], None] | None = None,
        extra_names: Iterable[str] = (),
    ) -> set[str]:
        """Host -> certificate map and SDS secrets; a deleted Secret is no longer served, a broken one
        keeps its last good certificate (see certificates.py).

        `dirty_secrets`: Secret -> whether a delete of it was seen in the batch; `ordered`: served
        Ingresses with TLS or passthrough, in conflict order; `published`: the SDS names the cache
        holds; `extra` adds other frontends' host -> SDS name bindings (Gateway API listeners);
        `extra_names`: SDS names other listeners use (Gateway API listeners on ports of their own).
        Returns the hosts whose certificate changed.
        """
        for skey, deleted in dirty_secrets.items():
            self.certificates.update(secret_name(*skey), self.get_secret(*skey), deleted=deleted)
        self.built = True
        default = self.config.default_certificate_name(self.primary(), self.certificates)
        plan = plan_tls(ordered, self.certificates, default, lambda name: self._certificate(name).cert_chain)
        if extra is not None:
            bound = dict(plan.certs)
            extra(bound)
            plan.certs.update({h: n for h, n in bound.items() if n in self.certificates})
        used = set(plan.certs.values()) | {n for n in extra_names if n in self.certificates}
        if default is not None:
            used.add(default)
        sds = changes[rt.SECRET]
        for name in used:
            sds[name] = make_resource(name, rt.SECRET, certificate_secret(self._certificate(name)))
        for name in set(published) - used:
            sds[name] = None
        old = self.plan.certs
        self.plan = plan
        return {h for h in set(plan.certs) | set(old) if plan.certs.get(h) != old.get(h)}
