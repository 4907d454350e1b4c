"""default-backend + custom-http-errors: another Service for a location without a backend, and for
upstream error codes.

default-backend (as ingress-nginx's getBackendServers): while the path's own Service has no ready
endpoint, or does not exist, its requests go to the annotation's Service (its first port).

custom-http-errors: the request is redirected internally (Envoy custom_response filter) to a route of the same
host that only the gateway uses; that route sends `/` to the error Service with the headers
ingress-nginx sends (X-Code, X-Original-URI, X-Namespace, ...). The error Service's answer,
status included, goes back to the client, as with nginx `error_page code = @custom`.
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext, ParsedAnnotations
from controlplane.ir import Forward, IngressRef, PathMatch, Route, WeightedCluster
from controlplane.ir.policies import CustomErrors, DefaultBackendService, ErrorRoute

_SERVICE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def error_page_routes(policy: CustomErrors, host: str, source: IngressRef) -> list[Route]:
    """The internal route of each host of the Ingress that sends error pages to the error Service."""
    return [
        Route(
            name=f"{source}#custom-errors",
            match=PathMatch("exact", policy.error_path),
            action=Forward((WeightedCluster(policy.cluster, 100),)),
            source=source,
            policies=(ErrorRoute(policy.service),),
        )
    ]


def parse_codes(raw: str) -> tuple[tuple[int, ...], list[str]]:
    codes: set[int] = set()
    bad: list[str] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit() and 400 <= int(item) <= 599:
            codes.add(int(item))
        else:
            bad.append(item)
    return tuple(sorted(codes)), bad


class ErrorsFamily(Family):
    name = "custom-errors"
    fields = (
        Key(
            ("default-backend",),
            (
                "Service (same namespace, its first port) that serves every path of the Ingress whose own Service "
                "has no ready endpoint or does not exist (an Envoy aggregate cluster: the path's cluster first, "
                "this one while the first has no healthy endpoint), with nginx's headers `X-Code: 503`, "
                "`X-Format` (the request's `Accept`, when it has one), `X-Namespace`, `X-Ingress-Name`, "
                "`X-Service-Name`, `X-Service-Port` (set by the aggregate cluster's upstream header mutation from "
                "the serving endpoint's metadata, X-Format with a `%CEL%` formatter); and answers the listed error "
                "codes. A default-backend Service that does not exist: warning, ignored (the path answers 503), "
                "as nginx"
            ),
        ),
        Key(
            ("custom-http-errors",),
            (
                "upstream responses with these codes (400-599) are redirected internally (Envoy `custom_response` "
                "filter) to the error Service with `X-Code`, `X-Original-URI`, `X-Namespace`… headers; its answer "
                "and status go back to the client"
            ),
            difference="ignored without `default-backend` (no global error service)",
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        raw_codes = ann.get("custom-http-errors")
        service = ann.get("default-backend")
        codes: tuple[int, ...] = ()
        if raw_codes is not None:
            codes, bad = parse_codes(raw_codes)
            if bad:
                ctx.warn("custom-http-errors", f"invalid codes ignored (need 400-599): {', '.join(bad)}")
        if service is None:
            if raw_codes is not None:
                ctx.warn("custom-http-errors", "ignored without default-backend (no per-Ingress error service)")
            return []
        if not _SERVICE.match(service):
            ctx.warn("default-backend", f"invalid service name {service!r}; ignored")
            return []
        ns = ctx.ingress.namespace
        port, problem = ctx.resolve_service_port(ns, service, {})
        if port is None:
            ctx.warn("default-backend", f"{problem}; ignored")
            return []
        fallback = DefaultBackendService(ns, service, port)
        if not codes:
            ctx.converted(
                "default-backend", f"serves the paths whose Service has no ready endpoint: {ns}/{service}:{port}"
            )
            return [fallback]
        ctx.converted("default-backend", f"serves the paths whose Service has no ready endpoint, and errors: "
                      f"{ns}/{service}:{port}")  # fmt: skip
        if raw_codes is not None and not any(f.key == "custom-http-errors" for f in ctx.findings):
            ctx.converted("custom-http-errors", ", ".join(map(str, codes)))
        return [fallback, CustomErrors(service, ns, port, codes, ctx.ingress.name)]

    def extra_routes(self, parsed: ParsedAnnotations, host: str, source: IngressRef) -> list[Route]:
        errors = parsed.get(CustomErrors)
        return error_page_routes(errors, host, source) if errors is not None else []
