"""KIngress status, written by the elected leader only (as Ingress and Gateway API status, whose leader
election it shares), to the cluster each KIngress came from.

What Knative's KIngress reconciler waits for (knative.dev/networking, IngressStatus):

- `NetworkConfigured`: the KIngress is translated (False, reason `Invalid`, with what cannot be
  served: a split's Service or port that does not exist, an unusable TLS Secret ...);
- `LoadBalancerReady`: every gateway Envoy connected to this replica (the leader) has ACKed a
  snapshot version built from this generation of the KIngress (Unknown, reason `Pending`, until
  then). Unlike net-kourier, nothing is probed: the ACKs say it. A gateway that is not connected
  does not hold a KIngress back; one that is connected and silent does. While a rollback pin holds
  the served configuration, a generation first built during it waits (it is not served);
- `Ready`: both are True;
- `observedGeneration`: the generation the conditions are about (written only once the engine has
  built that generation); `publicLoadBalancer` / `privateLoadBalancer`: the Services Knative sends
  external and cluster-local traffic to (`--knative-public-service`, `--knative-private-service`).

A pass runs after store changes and engine builds (debounced) and writes only statuses that differ
from the stored ones, ignoring lastTransitionTime (kept while a condition's status stays the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from kubernetes import client as k8s

from controlplane.ir import IngressRef
from controlplane.knative.build import KIngressInfo, KnativeResult, ref_of
from controlplane.knative.kinds import GROUP, PLURAL, VERSION, is_ours
from controlplane.store import KINGRESS, SECRET, SERVICE, ClusterRegistry, StoreEvent

log = logging.getLogger(__name__)

Condition = tuple[str, str, str, str]  # (type, status, reason, message)
PENDING_RECHECK = 0.2  # seconds between looks at the gateways' ACKs while some KIngress waits for them


class FleetAcks(Protocol):
    """What the xDS server tells about the gateways connected to it (controlplane/xds/server.py)."""

    def served_versions(self) -> dict[str, int]: ...

    def fleet_acked(self, required: Mapping[str, int]) -> tuple[int, int]: ...


@dataclass(frozen=True)
class KnativeStatusSettings:
    public_service: str | None = None  # "namespace/name" (or a DNS name) of the north-south gateway Service
    private_service: str | None = None  # the same for the east-west (cluster-local) gateway Service
    cluster_domain: str = "cluster.local"

    def domain(self, service: str | None) -> str | None:
        if not service:
            return None
        if "/" not in service:
            return service
        ns, name = service.split("/", 1)
        return f"{name}.{ns}.svc.{self.cluster_domain}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def knative_conditions(wanted: list[Condition], old: list[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Knative (duck v1) conditions sorted by type; a condition keeps its lastTransitionTime while
    its status stays the same."""
    before = {c.get("type"): c for c in old or [] if isinstance(c, Mapping)}
    out = []
    for ctype, status, reason, message in sorted(wanted):
        prev = before.get(ctype) or {}
        cond: dict[str, Any] = {"type": ctype, "status": status,
                                "lastTransitionTime": prev.get("lastTransitionTime") if prev.get("status") == status
                                else _now()}  # fmt: skip
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        out.append(cond)
    return out


def wanted_conditions(info: KIngressInfo, fleet: tuple[int, int] | None) -> list[Condition]:
    """The three conditions of one KIngress; `fleet`: (gateways connected, how many ACKed it), None
    while a rollback pin holds the served configuration (this generation is not served)."""
    if info.problems:
        why = "; ".join(info.problems)
        return [("NetworkConfigured", "False", "Invalid", why), ("LoadBalancerReady", "Unknown", "NotConfigured", ""),
                ("Ready", "False", "Invalid", why)]  # fmt: skip
    network: Condition = ("NetworkConfigured", "True", "", "")
    if fleet is None:
        message = f"a rollback pin holds the served configuration; generation {info.generation} waits for resume"
        return [network, ("LoadBalancerReady", "Unknown", "Pending", message), ("Ready", "Unknown", "Pending", message)]
    connected, acked = fleet
    if connected and acked < connected:
        message = f"{acked} of {connected} connected gateway(s) acknowledged generation {info.generation}"
        return [network, ("LoadBalancerReady", "Unknown", "Pending", message), ("Ready", "Unknown", "Pending", message)]
    message = f"acknowledged by {connected} gateway(s)" if connected else "served (no gateway connected here)"
    return [network, ("LoadBalancerReady", "True", "", message), ("Ready", "True", "", "")]


def _strip_times(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


class KnativeStatusWriter:
    """Writes the statuses above when this replica leads; reads the engine's result through callables."""

    def __init__(
        self,
        registry: ClusterRegistry,
        result: Callable[[], KnativeResult],
        settings: KnativeStatusSettings,
        is_leader: Callable[[], bool],
        client_for: Callable[[str], k8s.ApiClient | None],
        *,
        acks: Callable[[], FleetAcks | None] = lambda: None,
        pinned: Callable[[], bool] = lambda: False,
        debounce: float = 0.05,
        retry_delay: float = 1.0,
    ) -> None:
        self.registry = registry
        self.result = result
        self.settings = settings
        self.is_leader = is_leader
        self.client_for = client_for
        self.acks = acks
        self.pinned = pinned  # a rollback pin holds the served configuration (controlplane/history)
        self.debounce = debounce
        self.retry_delay = retry_delay
        self.writes = 0
        # (KIngress, generation) -> the served versions that hold it: recorded the first time a pass
        # sees that generation built (any later version holds it too).
        self.required: dict[tuple[IngressRef, int], dict[str, int]] = {}
        self._kick = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.registry.subscribe(self._on_event)
        self._task = asyncio.create_task(self._run(), name="knative-status")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def kick(self) -> None:
        """Run a pass soon (leadership gained, the engine built a batch)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._kick.set)

    def _on_event(self, event: StoreEvent) -> None:
        if event.ref.kind in (KINGRESS, SERVICE, SECRET):
            self.kick()

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            await asyncio.sleep(self.debounce)  # the engine builds the same batch first
            self._kick.clear()
            if not self.is_leader():
                continue
            try:
                await self.run_pass()
            except Exception:
                log.exception("writing KIngress status failed; retrying")
                assert self._loop is not None
                self._loop.call_later(self.retry_delay, self._kick.set)

    def _fleet(self, ref: IngressRef, generation: int) -> tuple[int, int] | None:
        acks = self.acks()
        if acks is None:
            return (0, 0)
        required = self.required.get((ref, generation))
        if required is None:
            if self.pinned():  # the served versions are the pin's: they do not hold this generation
                return None
            required = self.required[(ref, generation)] = acks.served_versions()
        return acks.fleet_acked(required)

    def plan(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(cluster, namespace, name, status) of every KIngress of ours whose status should change."""
        result = self.result()
        public = self.settings.domain(self.settings.public_service)
        private = self.settings.domain(self.settings.private_service)
        out = []
        live: set[tuple[IngressRef, int]] = set()
        pending = False
        for store in self.registry.stores():
            for obj in store.list(KINGRESS):
                meta = obj.get("metadata") or {}
                ref = ref_of(store.cluster_id, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
                info = result.ingresses.get(ref)
                if not is_ours(obj) or info is None or meta.get("generation", 0) != info.generation:
                    continue  # not ours, or the engine has not built this generation yet (it kicks us when it has)
                live.add((ref, info.generation))
                wanted = wanted_conditions(info, self._fleet(ref, info.generation))
                pending |= any(c[2] == "Pending" for c in wanted)
                old = obj.get("status") or {}
                want: dict[str, Any] = {"observedGeneration": info.generation,
                                        "conditions": knative_conditions(wanted, old.get("conditions"))}  # fmt: skip
                if public:
                    want["publicLoadBalancer"] = {"ingress": [{"domainInternal": public}]}
                if private:
                    want["privateLoadBalancer"] = {"ingress": [{"domainInternal": private}]}
                if _strip_times(want) != _strip_times({k: old.get(k) for k in want}):
                    out.append((store.cluster_id, ref.namespace, ref.name, want))
        for key in [k for k in self.required if k not in live]:
            del self.required[key]
        if pending and self._loop is not None:
            self._loop.call_later(PENDING_RECHECK, self._kick.set)  # look again once the gateways have ACKed
        return out

    async def run_pass(self) -> int:
        writes = self.plan()
        for cluster, ns, name, status in writes:
            api = self.client_for(cluster)
            if api is None:
                continue
            try:
                await asyncio.to_thread(_patch_status, api, ns, name, status)
                self.writes += 1
            except k8s.ApiException as exc:
                if exc.status == 404:
                    continue
                log.warning("writing KIngress %s/%s status failed: HTTP %s", ns, name, exc.status)
                assert self._loop is not None
                self._loop.call_later(self.retry_delay, self._kick.set)
        return len(writes)


def _patch_status(api: k8s.ApiClient, namespace: str, name: str, status: dict[str, Any]) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
    request = api.param_serialize(method="PATCH", resource_path=path, body={"status": status},
                                  header_params={"Content-Type": "application/merge-patch+json",
                                                 "Accept": "application/json"},
                                  auth_settings=["BearerToken"])  # fmt: skip
    resp = api.call_api(*request, _request_timeout=(5.0, 10.0))
    body = resp.read()
    if not 200 <= resp.status <= 299:
        raise k8s.ApiException(status=resp.status, reason=orjson.loads(body or b"{}").get("message", ""))
