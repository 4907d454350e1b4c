"""Where a case's objects go and how "ready" is known: file mode or Kubernetes mode.

- `FileTarget`: manifests in the directory `meridian serve --cluster` reads. File mode writes no
  status, so readiness is what Knative's status prober checks: every host answers a probe
  (`K-Network-Probe`) on the listener of its visibility; then every Envoy has ACKed.
- `KubeTarget`: objects applied to a fake API server that `meridian serve --kubeconfig` watches; ready
  is upstream's CreateIngressReady: the KIngress status says Ready for its generation, and its load
  balancers are there (CreateDialContext needs the public one; the visibility tests dial the private
  one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.support.gateway import Gateway
from tests.support.kubegateway import PRIMARY, KubeGateway
from tests.support.wait import wait_until

CLASS_ANNOTATION = "networking.knative.dev/ingress.class"
INGRESS_CLASS = "meridian.ingress.networking.knative.dev"
READY_TIMEOUT = 15.0
PUBLIC_SERVICE = "meridian-system/meridian-gateway"  # --knative-public-service (kube mode)
PRIVATE_SERVICE = "meridian-system/meridian-east-west"  # --knative-private-service (kube mode)
PROBE_HASH = "meridian-conformance-ready"  # any value but "override" comes back as sent

Probe = Callable[[str, str], bool]  # (host, listener) -> answered


def is_meridians(obj: dict[str, Any]) -> bool:
    return obj.get("kind") == "Ingress" and (obj["metadata"].get("annotations") or {}).get(
        CLASS_ANNOTATION) == INGRESS_CLASS  # fmt: skip


def service_domain(service: str) -> str:
    ns, name = service.split("/")
    return f"{name}.{ns}.svc.cluster.local"


def hosts_and_listeners(ing: dict[str, Any], probed: Callable[[str], bool]) -> Iterator[tuple[str, str]]:
    """(host, listener) of every rule whose splits include a Service `probed` says answers probes."""
    spec = ing["spec"]
    tls_hosts = {h for t in spec.get("tls") or [] for h in t.get("hosts") or []}
    for rule in spec["rules"]:
        if not any(probed(s["serviceName"]) for p in rule["http"]["paths"] for s in p["splits"]):
            continue
        for host in rule["hosts"]:
            if rule.get("visibility") == "ClusterLocal":
                yield host, "private"
            elif spec.get("httpOption") == "Redirected" and host in tls_hosts:
                yield host, "https"
            else:
                yield host, "public"


class FileTarget:
    kube = False
    serve_args: tuple[str, ...] = ()

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def apply(self, filename: str, objs: list[dict[str, Any]]) -> None:
        self.gw.write(filename, objs)

    def remove(self, filename: str) -> None:
        self.gw.remove(filename)

    def wait_ready(self, kingresses: list[dict[str, Any]], probe: Probe, probed: Callable[[str], bool]) -> None:
        for ing in filter(is_meridians, kingresses):
            for host, listener in hosts_and_listeners(ing, probed):
                wait_until(lambda: probe(host, listener), timeout=READY_TIMEOUT,  # noqa: B023 - called at once
                           message=f"KIngress host {host} never ready on the {listener} listener")  # fmt: skip
        self.gw.wait_converged()


class KubeTarget:
    kube = True
    serve_args = ("--knative-public-service", PUBLIC_SERVICE, "--knative-private-service", PRIVATE_SERVICE)

    def __init__(self, gw: KubeGateway) -> None:
        self.gw = gw
        # KIngresses are created and updated with the real client, as upstream's CreateIngress and
        # UpdateIngress: the API server bumps metadata.generation and keeps the status on an update.
        api = k8s_config.new_client_from_config_dict(yaml.safe_load(gw.kubes[PRIMARY].kubeconfig()))
        self.custom = k8s.CustomObjectsApi(api)
        self.applied: dict[str, list[tuple[str, str, str]]] = {}  # filename -> (kind id, namespace, name)
        self.versions: dict[str, str] = {}  # KIngress name -> resourceVersion as created (TestIngressClass)

    @staticmethod
    def _kind(obj: dict[str, Any]) -> str:
        return "KIngress" if obj["apiVersion"].startswith("networking.internal.knative.dev/") else obj["kind"]

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        return self.gw.kubes[PRIMARY].get("KIngress", namespace, name) or {}

    def apply(self, filename: str, objs: list[dict[str, Any]]) -> None:
        fk = self.gw.kubes[PRIMARY]
        for obj in objs:
            kind, meta = self._kind(obj), obj["metadata"]
            if kind == "KIngress":
                self._kingress(obj)
            else:
                fk.apply(obj)
            key = (kind, meta["namespace"], meta["name"])
            if key not in self.applied.setdefault(filename, []):
                self.applied[filename].append(key)

    def _kingress(self, obj: dict[str, Any]) -> None:
        """CreateIngress, or UpdateIngress (Get, set the spec, Update) when it exists."""
        group, version = obj["apiVersion"].split("/")
        where = (group, version, obj["metadata"]["namespace"], "ingresses")
        stored = self.gw.kubes[PRIMARY].get("KIngress", obj["metadata"]["namespace"], obj["metadata"]["name"])
        if stored is None:
            created = self.custom.create_namespaced_custom_object(*where, obj)
            self.versions[obj["metadata"]["name"]] = created["metadata"]["resourceVersion"]
        else:
            updated = dict(stored, spec=obj["spec"])
            self.custom.replace_namespaced_custom_object(*where, obj["metadata"]["name"], updated)

    def remove(self, filename: str) -> None:
        for kind, namespace, name in self.applied.pop(filename, []):
            self.gw.kubes[PRIMARY].delete(kind, namespace, name)

    def wait_ready(self, kingresses: list[dict[str, Any]], probe: Probe, probed: Callable[[str], bool]) -> None:
        for ing in filter(is_meridians, kingresses):
            meta = ing["metadata"]
            name, namespace = meta["name"], meta["namespace"]
            wait_until(lambda: self.ready(name, namespace), timeout=READY_TIMEOUT,  # noqa: B023 - called at once
                       message=f"KIngress {name} never Ready: {self.get(name, namespace)}")  # fmt: skip
            self.check_load_balancers(ing)

    def ready(self, name: str, namespace: str) -> bool:
        obj = self.get(name, namespace)
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"].get("generation"):
            return False
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])

    def check_load_balancers(self, ing: dict[str, Any]) -> None:
        """What upstream dials: status.publicLoadBalancer (CreateDialContext), and for cluster-local
        rules status.privateLoadBalancer (the visibility tests' proxy). Both are the chart's Services,
        which this test's "DNS" maps to Envoy's listeners."""
        status = self.get(ing["metadata"]["name"], ing["metadata"]["namespace"]).get("status") or {}
        public = ((status.get("publicLoadBalancer") or {}).get("ingress") or [{}])[0]
        assert public.get("domainInternal") == service_domain(PUBLIC_SERVICE), f"publicLoadBalancer {public}"
        if any(r.get("visibility") == "ClusterLocal" for r in ing["spec"]["rules"]):
            private = ((status.get("privateLoadBalancer") or {}).get("ingress") or [{}])[0]
            assert private.get("domainInternal") == service_domain(PRIVATE_SERVICE), f"privateLoadBalancer {private}"

    def untouched(self, name: str, namespace: str) -> str | None:
        """TestIngressClass: why the KIngress is not as created (None: nobody wrote to it)."""
        obj = self.get(name, namespace)
        if obj.get("status"):
            return f"status written: {obj['status']}"
        if obj["metadata"]["resourceVersion"] != self.versions[name]:
            return f"resourceVersion {obj['metadata']['resourceVersion']}, created as {self.versions[name]}"
        return None
