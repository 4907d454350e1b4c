"""Clusters and endpoint assignments, per Service, as incremental deltas.

A Service change (or a change of who uses its cluster variants) re-emits that Service's clusters;
an EndpointSlice change re-emits its assignments. What was emitted is remembered per Service so a
port or variant that went away is deleted.
"""

from __future__ import annotations

from typing import Any

from controlplane.ingress.variants import ClusterVariants
from controlplane.ir.policies import endpoint_labels
from controlplane.services import ServiceIndex, ServiceKey
from controlplane.translate.resources import load_assignment, service_cluster
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, make_resource

Changes = dict[str, dict[str, Resource | None]]


class ServiceBackends:
    def __init__(self, services: ServiceIndex, variants: ClusterVariants) -> None:
        self.services = services
        self.variants = variants
        self.clusters: dict[ServiceKey, set[str]] = {}  # clusters emitted per Service
        self.assignments: dict[ServiceKey, set[str]] = {}  # ClusterLoadAssignments emitted per Service
        self._extra_names: set[str] = set()

    def rebuild_clusters(self, changes: Changes, keys: set[ServiceKey]) -> None:
        """Clusters of `keys` (changed Services, and Services whose variants changed)."""
        cds = changes[rt.CLUSTER]
        for key in keys:
            want = self.variants.service_clusters(key, self.services)
            for name in self.clusters.get(key, set()) - want.keys():
                cds[name] = None
            for name, sc in want.items():
                cds[name] = make_resource(name, rt.CLUSTER, service_cluster(sc))
            if want:
                self.clusters[key] = set(want)
            else:
                self.clusters.pop(key, None)

    def rebuild_endpoints(self, changes: Changes, dirty: set[ServiceKey], primary: str | None) -> None:
        eds = changes[rt.ENDPOINT]
        for key in dirty:
            ports = {p.port: p for p in self.services.ports(key)}
            # One assignment per EDS cluster of the Service (the base per port, plus its variants).
            clusters = self.variants.service_clusters(key, self.services).values()
            want = {sc.eds_name: sc for sc in clusters if sc.static_address is None}
            for name in self.assignments.get(key, set()) - want.keys():
                eds[name] = None
            localities = {n: self.services.localities(key, p, primary) for n, p in ports.items()}
            for name, sc in want.items():
                cla = load_assignment(name, localities[sc.port], endpoint_labels(sc.policies))
                eds[name] = make_resource(name, rt.ENDPOINT, cla)
            if want:
                self.assignments[key] = set(want)
            else:
                self.assignments.pop(key, None)

    def set_extra_clusters(self, changes: Changes, wanted: dict[str, Any]) -> None:
        """Extra clusters (auth services, mirror targets) follow the routes that need them."""
        cds = changes[rt.CLUSTER]
        for name in self._extra_names - set(wanted):
            cds[name] = None
        for name, pb in wanted.items():
            cds[name] = make_resource(name, rt.CLUSTER, pb)
        self._extra_names = set(wanted)
