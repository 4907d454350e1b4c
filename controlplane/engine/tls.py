"""Certificates and the TLS plan, recomputed only when a Secret or a TLS-bearing Ingress changed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controlplane.ingress.convert import IngressIR
from controlplane.ingress.secrets import decode_tls_secret
from controlplane.ingress.tls import TlsPlan, plan_tls
from controlplane.ir import CertificateSecret
from controlplane.ir.names import secret_name
from controlplane.translate.resources import certificate_secret
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, make_resource

log = logging.getLogger("controlplane.controller")

SecretKey = tuple[str, str, str]


class TlsState:
    def __init__(self, get_secret: Callable[[str, str, str], Mapping[str, Any] | None]) -> None:
        self.get_secret = get_secret
        self.good_certs: dict[str, CertificateSecret] = {}
        self.plan = TlsPlan()  # certificates, TLS policies and passthrough per host

    def rebuild(
        self,
        changes: dict[str, dict[str, Resource | None]],
        dirty_secrets: Iterable[SecretKey],
        ordered: list[IngressIR],
        published: Iterable[str],
    ) -> set[str]:
        """Host -> certificate map and SDS secrets; a broken Secret keeps its last good certificate.

        `ordered`: served Ingresses with TLS or passthrough, oldest first; `published`: the SDS names
        the cache holds. Returns the hosts whose certificate changed.
        """
        for skey in dirty_secrets:
            name = secret_name(*skey)
            obj = self.get_secret(*skey)
            if obj is None:
                continue
            try:
                cert, key = decode_tls_secret(obj)
            except ValueError as exc:
                if name in self.good_certs:
                    log.warning("secret %s is unusable (%s); keeping its previous certificate", name, exc)
                continue
            self.good_certs[name] = CertificateSecret(name, cert, key)
        plan = plan_tls(ordered, self.good_certs)
        used = set(plan.certs.values())
        sds = changes[rt.SECRET]
        for name in used:
            sds[name] = make_resource(name, rt.SECRET, certificate_secret(self.good_certs[name]))
        for name in set(published) - used:
            sds[name] = None
        old = self.plan.certs
        self.plan = plan
        return {h for h in set(plan.certs) | set(old) if plan.certs.get(h) != old.get(h)}
