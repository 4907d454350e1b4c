"""Services and EndpointSlices merged across source clusters.

A Service namespace/name present in several clusters is one logical Service:
its ports are the union of the clusters' ports, and each cluster's ready
endpoints become one locality. The index is updated object by object so an
EndpointSlice change costs one Service's worth of work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlplane.ir import Endpoint, LocalityEndpoints, ServicePort

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
FAILOVER_ANNOTATION = "meridian.io/failover"

ServiceKey = tuple[str, str]  # (namespace, name)


class ServiceIndex:
    def __init__(self) -> None:
        self.services: dict[ServiceKey, dict[str, Mapping[str, Any]]] = {}
        self.slices: dict[ServiceKey, dict[tuple[str, str], Mapping[str, Any]]] = {}
        self.slice_owner: dict[tuple[str, str, str], ServiceKey] = {}  # (cluster, ns, slice) -> service
        # Merged ports per Service: asked for by every cluster, assignment and east-west host of it.
        self._ports: dict[ServiceKey, tuple[ServicePort, ...]] = {}

    # -- updates (return the Service key whose view changed) ------------------
    def set_service(self, cluster: str, namespace: str, name: str, obj: Mapping[str, Any] | None) -> ServiceKey:
        key = (namespace, name)
        self._ports.pop(key, None)
        per = self.services.setdefault(key, {})
        if obj is None:
            per.pop(cluster, None)
            if not per:
                del self.services[key]
        else:
            per[cluster] = obj
        return key

    def set_slice(self, cluster: str, namespace: str, name: str, obj: Mapping[str, Any] | None) -> set[ServiceKey]:
        changed: set[ServiceKey] = set()
        old_owner = self.slice_owner.pop((cluster, namespace, name), None)
        if old_owner is not None:
            per = self.slices.get(old_owner, {})
            per.pop((cluster, name), None)
            if not per:
                self.slices.pop(old_owner, None)
            changed.add(old_owner)
        if obj is not None:
            svc = ((obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
            if svc:
                owner = (namespace, str(svc))
                self.slices.setdefault(owner, {})[(cluster, name)] = obj
                self.slice_owner[(cluster, namespace, name)] = owner
                changed.add(owner)
        return changed

    # -- queries -----------------------------------------------------------------
    def exists(self, key: ServiceKey) -> bool:
        return key in self.services

    def external_name(self, key: ServiceKey) -> str | None:
        """The DNS name of an ExternalName Service (the first cluster's, by id, that has one)."""
        for cluster in sorted(self.services.get(key, {})):
            spec = self.services[key][cluster].get("spec") or {}
            if spec.get("type") == "ExternalName" and spec.get("externalName"):
                return str(spec["externalName"])
        return None

    def clusters_of(self, key: ServiceKey) -> list[str]:
        return sorted(self.services.get(key, {}))

    def ports(self, key: ServiceKey) -> tuple[ServicePort, ...]:
        """Union of the Service's ports across clusters, by port number (first definition wins)."""
        cached = self._ports.get(key)
        if cached is None:
            cached = self._merged_ports(key)
            if key in self.services:
                self._ports[key] = cached
        return cached

    def _merged_ports(self, key: ServiceKey) -> tuple[ServicePort, ...]:
        by_number: dict[int, ServicePort] = {}
        for cluster in sorted(self.services.get(key, {})):
            for p in (self.services[key][cluster].get("spec") or {}).get("ports") or []:
                try:
                    number = int(p.get("port"))
                except (TypeError, ValueError):
                    continue
                by_number.setdefault(
                    number,
                    ServicePort(
                        name=str(p.get("name") or ""),
                        port=number,
                        protocol=str(p.get("protocol") or "TCP"),
                        app_protocol=p.get("appProtocol"),
                    ),
                )
        return tuple(by_number[n] for n in sorted(by_number))

    def resolve_port(
        self, namespace: str, service: str, port_ref: Mapping[str, Any], prefer_cluster: str
    ) -> tuple[int | None, str]:
        """Ingress backend port (number or name) -> Service port number, or (None, why)."""
        key = (namespace, service)
        if key not in self.services:
            return None, f"service {namespace}/{service} not found"
        ports = self.ports(key)
        if port_ref.get("number") is not None:
            try:
                number = int(port_ref["number"])
            except (TypeError, ValueError):
                return None, f"invalid service port {port_ref.get('number')!r}"
            if any(p.port == number for p in ports):
                return number, ""
            return None, f"service {namespace}/{service} has no port {number}"
        name = port_ref.get("name")
        if name:
            # Prefer the Ingress's own cluster's definition when clusters disagree.
            own = self.services[key].get(prefer_cluster)
            if own is not None:
                for p in (own.get("spec") or {}).get("ports") or []:
                    if p.get("name") == name:
                        return int(p["port"]), ""
            for p in ports:
                if p.name == name:
                    return p.port, ""
            return None, f"service {namespace}/{service} has no port named {name!r}"
        if len(ports) == 1:
            return ports[0].port, "backend names no port; using the Service's only port"
        return None, f"backend of service {namespace}/{service} names no port"

    def failover(self, key: ServiceKey) -> bool:
        for obj in self.services.get(key, {}).values():
            ann = (obj.get("metadata") or {}).get("annotations") or {}
            if str(ann.get(FAILOVER_ANNOTATION, "")).lower() == "true":
                return True
        return False

    def cluster_ip(self, key: ServiceKey, prefer_cluster: str | None = None) -> str | None:
        per = self.services.get(key, {})
        for cluster in ([prefer_cluster] if prefer_cluster in per else []) + sorted(per):
            ip = (per[cluster].get("spec") or {}).get("clusterIP")
            if ip and ip != "None":
                return str(ip)
        return None

    def localities(self, key: ServiceKey, port: ServicePort, primary: str | None) -> tuple[LocalityEndpoints, ...]:
        """One locality per source cluster that has endpoints for this Service port."""
        failover = self.failover(key)
        by_cluster: dict[str, dict[tuple[str, int], Endpoint]] = {}
        for (cluster, _slice), obj in sorted(self.slices.get(key, {}).items()):
            if obj.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
                continue
            target = _slice_port(obj, port)
            if target is None:
                continue
            eps = by_cluster.setdefault(cluster, {})
            for ep in obj.get("endpoints") or []:
                cond = ep.get("conditions")
                if cond:
                    ready = cond.get("ready") is not False
                    serving = cond.get("serving", ready) is not False
                    terminating = bool(cond.get("terminating", False))
                else:
                    ready, serving, terminating = True, True, False
                for addr in ep.get("addresses") or ():
                    address = str(addr)
                    eps[(address, target)] = Endpoint(address, target, ready, serving, terminating)
        out = []
        for cluster in sorted(by_cluster):
            endpoints = tuple(by_cluster[cluster][k] for k in sorted(by_cluster[cluster]))
            priority = 1 if failover and primary is not None and cluster != primary else 0
            out.append(LocalityEndpoints(cluster, endpoints, priority))
        return tuple(out)


def _slice_port(obj: Mapping[str, Any], port: ServicePort) -> int | None:
    """The target port in a slice for a Service port: matched by name (unnamed matches unnamed)."""
    for p in obj.get("ports") or []:
        if str(p.get("name") or "") == port.name and p.get("port") is not None:
            try:
                return int(p["port"])
            except (TypeError, ValueError):
                return None
    return None
