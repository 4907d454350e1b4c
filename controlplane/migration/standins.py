"""The manifests as `--verify` serves them: every Service an Ingress names answers through an echo
backend that says which Service port it is, and every TLS secretName has a certificate.

The user's Services are kept (their ports decide how Ingress backends resolve); only their
EndpointSlices are replaced, because pod addresses are not reachable from here. A Service or a
TLS Secret the manifests name but lack is stood in for (and reported), so that the replay shows
where each request goes instead of comparing two "no such Service" answers. Both sides of the
comparison get exactly the same objects.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controlplane.ingress.convert import IngressIR
from controlplane.services import SERVICE_NAME_LABEL
from controlplane.store import ENDPOINT_SLICE, INGRESS, SECRET, SERVICE, KubeObject, object_name

DEFAULT_BACKEND = "nginx.ingress.kubernetes.io/default-backend"


@dataclass(frozen=True, order=True)
class BackendPort:
    """One Service port the Ingresses can reach; one echo backend answers for it."""

    namespace: str
    service: str
    port: int
    port_name: str

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port}"


@dataclass
class Completed:
    objects: dict[str, list[KubeObject]]  # kind -> objects, EndpointSlices of `backends` left out
    backends: list[BackendPort]
    notes: list[str] = field(default_factory=list)


def _port_refs(ingress: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """(service name, port reference) of every backend the Ingress spec names."""
    spec = ingress.get("spec") or {}
    backends = [spec.get("defaultBackend") or spec.get("backend")]
    for rule in spec.get("rules") or []:
        for path in ((rule or {}).get("http") or {}).get("paths") or []:
            backends.append((path or {}).get("backend"))
    for b in backends:
        if not isinstance(b, Mapping):
            continue
        if isinstance(b.get("service"), Mapping):
            svc = b["service"]
            yield str(svc.get("name") or ""), svc.get("port") or {}
        elif b.get("serviceName"):  # networking.k8s.io/v1beta1
            port = b.get("servicePort")
            yield str(b["serviceName"]), {"number": port} if isinstance(port, int) else {"name": port}


def _stand_in_service(namespace: str, name: str, refs: list[Mapping[str, Any]]) -> KubeObject:
    numbers = sorted({int(r["number"]) for r in refs if str(r.get("number") or "").isdigit()})
    names = sorted({str(r["name"]) for r in refs if r.get("name")})
    ports = [{"name": f"port-{n}", "port": n} for n in numbers]
    free = (p for p in range(80, 65536) if p not in numbers)
    ports += [{"name": n, "port": next(free)} for n in names]
    if not ports:
        ports = [{"name": "http", "port": 80}]
    return {"apiVersion": "v1", "kind": SERVICE, "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": ports}}  # fmt: skip


def complete(objects: Mapping[str, list[KubeObject]], irs: Mapping[Any, IngressIR]) -> Completed:
    """See the module docstring. `irs`: the Ingresses as compiled from `objects` (their services and
    TLS bindings)."""
    out = {kind: list(objs) for kind, objs in objects.items()}
    services = {object_name(s): s for s in out.get(SERVICE, [])}
    secrets = {object_name(s) for s in out.get(SECRET, [])}
    refs: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for ing in out.get(INGRESS, []):
        ns = object_name(ing)[0] or "default"
        for svc, port in _port_refs(ing):
            refs.setdefault((ns, svc), []).append(port)
        fallback = ((ing.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_BACKEND)
        if fallback:
            refs.setdefault((ns, str(fallback)), [])
    for ir in irs.values():
        for key in ir.services:
            refs.setdefault(key, [])
    notes: list[str] = []
    for (ns, name), port_refs in sorted(refs.items()):
        if name and (ns, name) not in services:
            services[(ns, name)] = _stand_in_service(ns, name, port_refs)
            out.setdefault(SERVICE, []).append(services[(ns, name)])
            notes.append(f"Service {ns}/{name} is not in the manifests: an echo backend stands in for it")
    backends: list[BackendPort] = []
    for key in sorted(k for k in refs if k in services):
        svc = services[key]
        if (svc.get("spec") or {}).get("type") == "ExternalName":
            continue
        for p in (svc.get("spec") or {}).get("ports") or []:
            if str(p.get("port") or "").isdigit():
                backends.append(BackendPort(key[0], key[1], int(p["port"]), str(p.get("name") or "")))
    replaced = {(b.namespace, b.service) for b in backends}
    out[ENDPOINT_SLICE] = [s for s in out.get(ENDPOINT_SLICE, [])
                           if (object_name(s)[0], _owner(s)) not in replaced]  # fmt: skip
    wanted: dict[tuple[str, str], set[str]] = {}
    for ir in irs.values():
        for binding in ir.tls:
            _cluster, ns, name = binding.secret_ref
            if name and binding.hosts and (ns, name) not in secrets:
                wanted.setdefault((ns, name), set()).update(binding.hosts)
    for (ns, name), hosts in sorted(wanted.items()):
        out.setdefault(SECRET, []).append(throwaway_tls_secret(ns, name, sorted(hosts)))
        notes.append(f"Secret {ns}/{name} is not in the manifests: a throwaway certificate stands in for it")
    return Completed(out, backends, notes)


def _owner(slice_obj: Mapping[str, Any]) -> str:
    return str(((slice_obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) or "")


def endpoint_slices(ports: Mapping[BackendPort, int]) -> list[KubeObject]:
    """One EndpointSlice per Service port: 127.0.0.1 at its echo backend's port."""
    out = []
    for i, (b, echo_port) in enumerate(sorted(ports.items())):
        out.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": ENDPOINT_SLICE,
            "metadata": {"name": f"{b.service}-verify-{i}", "namespace": b.namespace,
                         "labels": {SERVICE_NAME_LABEL: b.service}},
            "addressType": "IPv4",
            "ports": [{"name": b.port_name, "port": echo_port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        })  # fmt: skip
    return out


def throwaway_tls_secret(namespace: str, name: str, hosts: list[str]) -> KubeObject:
    """A kubernetes.io/tls Secret with a fresh self-signed certificate for `hosts` (valid one day)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (hosts[0] if hosts else name)[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    data = {"tls.crt": cert.public_bytes(serialization.Encoding.PEM), "tls.key": key_pem}
    return {"apiVersion": "v1", "kind": SECRET, "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}  # fmt: skip
