"""GatewayClass, Gateway and HTTPRoute status, written by the elected leader only (as Ingress status,
controlplane/status.py, whose leader election it shares).

What it writes follows the spec (gateway-api v1.6.1): a GatewayClass of ours is Accepted; a Gateway
of ours is Accepted, and Programmed when at least one listener is served, with `addresses` from
--publish-address/--publish-service and per listener `attachedRoutes`, `supportedKinds` and the
Accepted/ResolvedRefs/Programmed/Conflicted conditions; an HTTPRoute gets one `parents` entry per
parentRef naming a Gateway of ours, with Accepted and ResolvedRefs (NotAllowedByListeners,
NoMatchingListenerHostname, NoMatchingParent, BackendNotFound, RefNotPermitted, InvalidKind ...).
Parents written by other controllers are kept. A route whose every path lost to an Ingress is
Accepted=False (Conflicted); one that lost some is PartiallyInvalid=True (Conflicted).
Programmed means the gateways connected to this replica have ACKed the current listeners and
routes (Pending until then; with none connected here, that the configuration is served).

A pass runs after store changes (debounced) and writes only statuses that differ from the stored
ones, ignoring lastTransitionTime (kept while a condition's status and reason stay the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from kubernetes import client as k8s

from controlplane.gatewayapi.build import GatewayApiResult
from controlplane.gatewayapi.kinds import CONTROLLER_NAME, GATEWAY, GATEWAY_CLASS, GROUP, GRPC_ROUTE, HTTP_ROUTE, meta
from controlplane.gatewayapi.listeners import Condition, GatewayInfo
from controlplane.ir import Finding, IngressRef
from controlplane.store import GATEWAY_API_KINDS, ClusterRegistry, StoreEvent

log = logging.getLogger(__name__)

_PLURAL = {GATEWAY_CLASS: "gatewayclasses", GATEWAY: "gateways", HTTP_ROUTE: "httproutes", GRPC_ROUTE: "grpcroutes"}
Findings = Callable[[], list[tuple[IngressRef, Finding]]]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(wanted: list[Condition], generation: int, old: list[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Kubernetes conditions; a condition keeps its lastTransitionTime while status and reason stay."""
    before = {c.get("type"): c for c in old or [] if isinstance(c, Mapping)}
    out = []
    for ctype, status, reason, message in wanted:
        prev = before.get(ctype) or {}
        same = prev.get("status") == status and prev.get("reason") == reason
        out.append({"type": ctype, "status": status, "reason": reason, "message": message,
                    "observedGeneration": generation,
                    "lastTransitionTime": prev.get("lastTransitionTime") if same else _now()})  # fmt: skip
    return out


def _strip_times(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def gateway_addresses(addresses: list[dict[str, str]]) -> list[dict[str, str]]:
    """Ingress-style load balancer entries -> Gateway `status.addresses`."""
    out = []
    for a in addresses:
        if a.get("ip"):
            out.append({"type": "IPAddress", "value": a["ip"]})
        elif a.get("hostname"):
            out.append({"type": "Hostname", "value": a["hostname"]})
    return out


def gateway_programmed(fleet: tuple[int, bool]) -> Condition:
    """`Programmed` of a served Gateway: the gateways connected to this replica have ACKed the
    current listeners and routes (with none connected here, being in the served snapshot counts)."""
    connected, settled = fleet
    if connected and not settled:
        return ("Programmed", "False", "Pending", f"waiting for {connected} gateway(s) to acknowledge")
    if connected:
        return ("Programmed", "True", "Programmed", f"acknowledged by {connected} gateway(s)")
    return ("Programmed", "True", "Programmed", "in the served configuration (no gateway connected here)")


def gateway_status(info: GatewayInfo, result: GatewayApiResult, addresses: list[dict[str, str]],
                   old: Mapping[str, Any], fleet: tuple[int, bool] = (0, True)) -> dict[str, Any]:  # fmt: skip
    """The whole `status` of one of our Gateways."""
    old_listeners = {x.get("name"): x for x in old.get("listeners") or [] if isinstance(x, Mapping)}
    listeners = []
    for lst in info.listeners:
        accepted = next((c for c in lst.conditions if c[0] == "Accepted"), ("Accepted", "True", "Accepted", ""))
        refs = next((c for c in lst.conditions if c[0] == "ResolvedRefs"),
                    ("ResolvedRefs", "True", "ResolvedRefs", ""))  # fmt: skip
        conflicted = next((c for c in lst.conditions if c[0] == "Conflicted"),
                          ("Conflicted", "False", "NoConflicts", ""))  # fmt: skip
        where = "the fleet's shared listener" if lst.shared else f"its own Envoy listener on port {lst.port}"
        programmed = (("Programmed", "True", "Programmed", f"served on {where}") if lst.table
                      else ("Programmed", "False", "Invalid", "not served"))  # fmt: skip
        prev = old_listeners.get(lst.name) or {}
        listeners.append({
            "name": lst.name,
            "supportedKinds": [{"group": GROUP, "kind": k} for k in lst.kinds],
            "attachedRoutes": result.attached.get((info.ref, lst.name), 0),
            "conditions": conditions([accepted, programmed, refs, conflicted], info.generation, prev.get("conditions")),
        })  # fmt: skip
    served = any(lst.table for lst in info.listeners)
    wanted = [("Accepted", "True", "Accepted", "accepted by " + CONTROLLER_NAME),
              gateway_programmed(fleet) if served else ("Programmed", "False", "Invalid", "no listener can be served")]
    return {"addresses": gateway_addresses(addresses),
            "conditions": conditions(wanted, info.generation, old.get("conditions")),
            "listeners": listeners}  # fmt: skip


def route_status(ref: IngressRef, result: GatewayApiResult, findings: list[tuple[IngressRef, Finding]],
                 old: Mapping[str, Any]) -> dict[str, Any] | None:  # fmt: skip
    """The `status` of one HTTPRoute: our parents (re)computed, other controllers' parents kept."""
    rs = result.routes.get(ref)
    if rs is None:
        return None
    lost = {f.key for r, f in findings if r == ref and f.level == "conflict"}
    mine = {e.route.name.partition("#")[2] for h in result.hosts.values() for e in h.http + h.https
            if e.route.source == ref}  # fmt: skip
    others = [p for p in old.get("parents") or []
              if isinstance(p, Mapping) and p.get("controllerName") != CONTROLLER_NAME]  # fmt: skip
    old_mine = {_parent_key(p.get("parentRef") or {}, ref.namespace): p for p in old.get("parents") or []
                if isinstance(p, Mapping) and p.get("controllerName") == CONTROLLER_NAME}  # fmt: skip
    parents = []
    for p in rs.parents:
        wanted = list(p.conditions)
        if lost and wanted[0][1] == "True":
            message = "paths served by an older Ingress: " + ", ".join(sorted(lost))
            if mine and mine <= lost:
                wanted[0] = ("Accepted", "False", "Conflicted", message)
            else:
                wanted.append(("PartiallyInvalid", "True", "Conflicted", message))
        prev = old_mine.get(_parent_key(p.parent_ref, ref.namespace)) or {}
        parents.append({"parentRef": dict(p.parent_ref), "controllerName": CONTROLLER_NAME,
                        "conditions": conditions(wanted, rs.generation, prev.get("conditions"))})  # fmt: skip
    return {"parents": others + parents}


def _parent_key(ref: Mapping[str, Any], namespace: str) -> tuple[str, str, str, Any]:
    return (str(ref.get("namespace") or namespace), str(ref.get("name") or ""), str(ref.get("sectionName") or ""),
            ref.get("port"))  # fmt: skip


class GatewayApiStatusWriter:
    """Writes the statuses above when this replica leads; reads the engine's result through callables."""

    def __init__(
        self,
        registry: ClusterRegistry,
        result: Callable[[], GatewayApiResult],
        findings: Findings,
        addresses: Callable[[], list[dict[str, str]]],
        is_leader: Callable[[], bool],
        client_for: Callable[[str], k8s.ApiClient | None],
        *,
        fleet: Callable[[], tuple[int, bool]] = lambda: (0, True),
        debounce: float = 0.05,
        retry_delay: float = 1.0,
    ) -> None:
        self.fleet = fleet
        self.registry = registry
        self.result = result
        self.findings = findings
        self.addresses = addresses
        self.is_leader = is_leader
        self.client_for = client_for
        self.debounce = debounce
        self.retry_delay = retry_delay
        self.writes = 0
        self._kick = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.registry.subscribe(self._on_event)
        self._task = asyncio.create_task(self._run(), name="gatewayapi-status")

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
        if event.ref.kind in GATEWAY_API_KINDS or event.ref.kind in ("Service", "Secret", "Ingress"):
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
                log.exception("writing Gateway API status failed; retrying")
                assert self._loop is not None
                self._loop.call_later(self.retry_delay, self._kick.set)

    def plan(self) -> list[tuple[str, str, str, str, dict[str, Any]]]:
        """(cluster, kind, namespace, name, status) of every object whose status should change."""
        result, fleet = self.result(), self.fleet()
        if fleet[0] and not fleet[1] and result.gateways and self._loop is not None:
            self._loop.call_later(0.5, self._kick.set)  # look again once the gateways have ACKed
        out = wanted_statuses(self.registry, result, self.findings(), self.addresses(), fleet)
        return [(c, k, ns, n, want) for c, k, ns, n, want, old in out if _strip_times(want) != _strip_times(old)]

    async def run_pass(self) -> int:
        writes = self.plan()
        for cluster, kind, ns, name, status in writes:
            api = self.client_for(cluster)
            if api is None:
                continue
            try:
                await asyncio.to_thread(_patch_status, api, kind, ns, name, status)
                self.writes += 1
            except k8s.ApiException as exc:
                if exc.status == 404:
                    continue
                log.warning("writing %s %s/%s status failed: HTTP %s", kind, ns, name, exc.status)
                assert self._loop is not None
                self._loop.call_later(self.retry_delay, self._kick.set)
        return len(writes)


def wanted_statuses(registry: ClusterRegistry, result: GatewayApiResult, findings: list[tuple[IngressRef, Finding]],
                    addresses: list[dict[str, str]], fleet: tuple[int, bool],
                    ) -> list[tuple[str, str, str, str, dict[str, Any], Mapping[str, Any]]]:  # fmt: skip
    """(cluster, kind, namespace, name, wanted status, stored status) of every object of ours."""
    out: list[tuple[str, str, str, str, dict[str, Any], Mapping[str, Any]]] = []
    for store in registry.stores():
        cid = store.cluster_id
        for obj in store.list(GATEWAY_CLASS):
            name = str(meta(obj).get("name") or "")
            ours, generation = result.classes.get((cid, name), (False, 0))
            if ours:
                old = obj.get("status") or {}
                accepted: Condition = ("Accepted", "True", "Accepted", "handled by " + CONTROLLER_NAME)
                want = {"conditions": conditions([accepted], generation, old.get("conditions"))}
                out.append((cid, GATEWAY_CLASS, "", name, want, old))
        for ref, info in result.gateways.items():
            if ref.cluster == cid:
                old = (store.get(GATEWAY, ref.namespace, ref.name) or {}).get("status") or {}
                out.append((cid, GATEWAY, ref.namespace, ref.name, gateway_status(info, result, addresses, old, fleet),
                            old))  # fmt: skip
        for ref in result.routes:
            if ref.cluster == cid:
                old = (store.get(ref.kind, ref.namespace, ref.name) or {}).get("status") or {}
                want = route_status(ref, result, findings, old)
                if want is not None:
                    out.append((cid, ref.kind, ref.namespace, ref.name, want, old))
    return out


def status_report(registry: ClusterRegistry, result: GatewayApiResult, findings: list[tuple[IngressRef, Finding]],
                  addresses: list[dict[str, str]], fleet: tuple[int, bool]) -> list[dict[str, Any]]:  # fmt: skip
    """`/debug/gateways`: every status above as the leader would write it now; file mode writes none,
    so this is where a GatewayClass, Gateway or route of a manifest directory shows why it is (not) served."""
    return [{"cluster": c, "kind": k, "namespace": ns, "name": n, "status": want}
            for c, k, ns, n, want, _old in wanted_statuses(registry, result, findings, addresses, fleet)]  # fmt: skip


def _patch_status(api: k8s.ApiClient, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    path = f"/apis/{GROUP}/v1/" + (f"namespaces/{namespace}/" if namespace else "") + f"{_PLURAL[kind]}/{name}/status"
    request = api.param_serialize(method="PATCH", resource_path=path, body={"status": status},
                                  header_params={"Content-Type": "application/merge-patch+json",
                                                 "Accept": "application/json"},
                                  auth_settings=["BearerToken"])  # fmt: skip
    resp = api.call_api(*request, _request_timeout=(5.0, 10.0))
    body = resp.read()
    if not 200 <= resp.status <= 299:
        raise k8s.ApiException(status=resp.status, reason=orjson.loads(body or b"{}").get("message", ""))
