"""The read-only view of what the engine serves, for status writing, admin and reports.

Readers get the IRs, the merged hosts' results and the reports, never the engine's indexes or the
app: what they may depend on is exactly this.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from controlplane.engine.batcher import Batcher
from controlplane.gatewayapi.build import GatewayApiResult
from controlplane.ingress.convert import IngressIR
from controlplane.ingress.hosts import HostResult
from controlplane.ingress.reports import ingress_report
from controlplane.ingress.tls import TlsPlan
from controlplane.ir import IngressRef
from controlplane.knative.build import KnativeResult


class ViewSource(Protocol):
    """What the engine exposes to build the view from (read through at every call)."""

    @property
    def irs(self) -> dict[IngressRef, IngressIR]: ...

    @property
    def ingress_objs(self) -> dict[IngressRef, Mapping[str, Any]]: ...

    @property
    def host_results(self) -> dict[str, HostResult]: ...

    @property
    def host_errors(self) -> dict[str, str]: ...

    @property
    def publish_address(self) -> str: ...

    @property
    def tls(self) -> TlsPlan: ...

    @property
    def certificates(self) -> Container[str]: ...

    def built_once(self) -> bool: ...

    @property
    def gateway_api_result(self) -> GatewayApiResult: ...

    @property
    def knative_result(self) -> KnativeResult: ...

    def add_built_listener(self, listener: Callable[[], None]) -> None: ...


class IngressView:
    """Live and read-only: it always shows the state after the engine's last batch."""

    def __init__(self, source: ViewSource, intake: Batcher) -> None:
        self._source = source
        self._intake = intake

    @property
    def irs(self) -> Mapping[IngressRef, IngressIR]:
        return MappingProxyType(self._source.irs)

    @property
    def host_results(self) -> Mapping[str, HostResult]:
        return MappingProxyType(self._source.host_results)

    def on_built(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the event loop) after every batch the engine builds."""
        self._source.add_built_listener(listener)

    def gateway_api(self) -> GatewayApiResult:
        """The Gateway API frontend's last result (routes per host, statuses to write)."""
        return self._source.gateway_api_result

    def knative(self) -> KnativeResult:
        """The Knative frontend's last result (routes per host, what each KIngress's status says)."""
        return self._source.knative_result

    def host_findings(self) -> list[tuple[IngressRef, Any]]:
        """Every finding of every merged host (conflicts between Ingresses and HTTPRoutes among them)."""
        return [f for r in self._source.host_results.values() for f in r.findings]

    def built_once(self) -> bool:
        """The engine has built the primary cluster's first full list (what is served is real)."""
        return self._source.built_once()

    def events_queued(self) -> int:
        """How many store events the engine has queued so far (any thread)."""
        return self._intake.queued_count

    def events_built(self) -> int:
        """How many of the store events queued so far are in what is served.

        A reader that hears of the same store events after the engine (the registry calls the
        engine's listener first) knows its events are built once this reaches the
        `events_queued()` it read when it heard of them.
        """
        return self._intake.built_count

    def built_from(self, ref: IngressRef) -> Mapping[str, Any] | None:
        """The Ingress object the current IR of `ref` was built from (None: not built, or deleted)."""
        return self._source.ingress_objs.get(ref)

    def report(self, ir: IngressIR) -> dict[str, Any]:
        s = self._source
        return ingress_report(ir, s.host_results, s.host_errors, s.publish_address, s.tls, s.certificates)

    def reports(self) -> list[dict[str, Any]]:
        irs = self._source.irs
        return [self.report(irs[r]) for r in sorted(irs)]
