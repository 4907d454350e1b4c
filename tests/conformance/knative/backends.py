"""The backends of one transcribed case: image servers, grpc-ping servers, and their Services.

Upstream's CreateRuntimeService (and friends) makes a Pod and a ClusterIP Service whose port
(random in 50-99) targets the container port; here the pod is a server on 127.0.0.1 with a port
chosen at run time, the Service keeps the case's port and names, and an EndpointSlice lists the
server, as the endpoints controller would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.support.grpc_ping import GrpcPing
from tests.support.knative_images import ImageFleet, ImageServer

NAMESPACE = "serving-tests"  # test.ServingNamespace


def service_objects(backend: dict[str, Any], target_port: int) -> list[dict[str, Any]]:
    """The Service and EndpointSlice of one backend of a case (`port`, `portName`, `appProtocol`); an
    `external-name` backend is an ExternalName Service (`externalName`, no endpoints)."""
    name, port_name = backend["name"], backend.get("portName", "http")
    svc_port: dict[str, Any] = {"name": port_name, "port": backend["port"], "targetPort": target_port}
    slice_port: dict[str, Any] = {"name": port_name, "port": target_port, "protocol": "TCP"}
    if backend.get("appProtocol"):
        svc_port["appProtocol"] = slice_port["appProtocol"] = backend["appProtocol"]
    meta = {"name": name, "namespace": NAMESPACE, "labels": {"test-pod": name}}
    if backend.get("kind") == "external-name":
        spec = {"type": "ExternalName", "externalName": backend["externalName"], "ports": [svc_port]}
        return [{"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}]
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"type": "ClusterIP", "ports": [svc_port], "selector": {"test-pod": name}}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{name}-pod", "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4", "ports": [slice_port],
         "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]},
    ]  # fmt: skip


@dataclass
class CaseBackends:
    """Started backends by Service name; `private_gateway_port` is the private load balancer's port (Envoy's
    east-west listener), where `httpproxy` backends send and `external-name` Services lead."""

    fleet: ImageFleet
    private_gateway_port: int
    images: dict[str, ImageServer] = field(default_factory=dict)
    grpc: dict[str, GrpcPing] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def start(self, backend: dict[str, Any]) -> list[dict[str, Any]]:
        """Start one backend's pod; return its Service objects."""
        name, kind = backend["name"], backend.get("kind", "runtime")
        if kind == "grpc":
            self.grpc[name] = GrpcPing(backend.get("suffix", ""))
            port = self.grpc[name].port
        elif kind == "external-name":  # upstream: an ExternalName Service to the private load balancer
            port = self.private_gateway_port
        elif kind == "httpproxy":  # to the private load balancer, with Host = the cluster-local name
            gateway = f"127.0.0.1:{self.private_gateway_port}"
            self.images[name] = self.fleet.add(name, kind, target_host=backend["target"], gateway=gateway)
            port = self.images[name].port
        else:
            self.images[name] = self.fleet.add(name, kind, backend.get("suffix", ""))
            port = self.images[name].port
        self.ports[name] = port
        return service_objects(backend, port)

    def stop(self, name: str) -> None:
        if name in self.images:
            self.fleet.remove(self.images.pop(name))
        if name in self.grpc:
            self.grpc.pop(name).stop()
        self.ports.pop(name, None)

    def stop_all(self) -> None:
        for name in list(self.ports):
            self.stop(name)
