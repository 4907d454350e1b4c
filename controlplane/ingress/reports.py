"""Per-Ingress reports (status, /debug, `meridian translate --report`) and the Ingress states."""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Any

from controlplane.ingress.annotations.base import ParsedAnnotations
from controlplane.ingress.convert import IngressIR, creation_time
from controlplane.ingress.hosts import HostResult
from controlplane.ingress.tls import TlsPlan, tls_findings
from controlplane.ir import Finding, IngressRef


def ingress_report(
    ir: IngressIR,
    host_results: Mapping[str, HostResult],
    host_errors: Mapping[str, str],
    address: str,
    tls: TlsPlan,
    usable: Container[str],
) -> dict[str, Any]:
    """What happened to one Ingress: its own findings, what its missing or broken TLS Secrets mean
    now (`tls`: the current plan, `usable`: certificates that can be served), and the findings of
    the hosts it takes part in."""
    findings: list[Finding] = list(ir.findings)
    findings.extend(tls_findings(ir, tls, usable))
    for host in ir.hosts | ({""} if ir.default_backend else set()):
        result = host_results.get(host)
        if result:
            findings.extend(f for ref, f in result.findings if ref == ir.ref)
        if host in host_errors:
            findings.append(Finding("warning", host or "*", host_errors[host] + "; previous routes kept"))
    reasons = []
    if not ir.class_accepted:
        reasons.append("ingress class is not served by Meridian")
    reasons.extend(f"{f.key}: {f.message}" for f in findings if f.level == "rejected")
    return {
        "cluster": ir.ref.cluster,
        "namespace": ir.ref.namespace,
        "name": ir.ref.name,
        "accepted": ir.served,
        "reasons": reasons,
        "warnings": [f"{f.key}: {f.message}" for f in findings if f.level in ("warning", "conflict")],
        "findings": [f.as_dict() for f in findings],
        "address": address if ir.served else None,
        "hosts": sorted(h or "*" for h in ir.hosts),
    }


def failed_ingress(obj: Mapping[str, Any], ref: IngressRef, exc: Exception) -> IngressIR:
    """An Ingress whose translation crashed: rejected, with the reason in its report."""
    meta = obj.get("metadata") or {}
    return IngressIR(
        ref=ref,
        created=creation_time(meta.get("creationTimestamp"))[0],
        class_accepted=True,
        rules=(),
        default_backend=None,
        tls=(),
        annotations=ParsedAnnotations(),
        findings=(Finding("rejected", "spec", f"internal error translating this Ingress: {exc}"),),
        rejected=True,
    )


def ingress_state(ir: IngressIR) -> str:
    """accepted | rejected | ignored (another controller's class), for the Ingress gauge."""
    if ir.served:
        return "accepted"
    return "rejected" if ir.class_accepted and ir.rejected else "ignored"
