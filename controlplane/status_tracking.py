"""Which Ingresses a status pass must look at: those whose IR, stored object or host findings changed.

Store events (any thread) are noted cheaply; a pass then compares, per candidate Ingress, the
identity of its IR, of the host results holding its conflict findings and of the stored object
with what the last pass saw. Reverse indexes over what was seen find everyone a change can affect
(a new Ingress on a host changes the conflicts of every other Ingress on it).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controlplane.engine.view import IngressView
from controlplane.ir import IngressRef
from controlplane.store import INGRESS, INGRESS_CLASS, SECRET, SERVICE, ClusterRegistry, ObjectRef, StoreEvent

Address = tuple[tuple[str, str], ...]  # one status.loadBalancer.ingress entry, as sorted items
RELEVANT = frozenset((INGRESS, INGRESS_CLASS, SERVICE, SECRET))


def addresses_key(entries: Iterable[Mapping[str, str]]) -> frozenset[Address]:
    return frozenset(tuple(sorted(e.items())) for e in entries)


def _hosts(ir: Any) -> list[str]:
    return sorted(ir.hosts) + ([""] if ir.default_backend is not None else [])


class ChangeTracker:
    def __init__(self, view: IngressView, registry: ClusterRegistry, recheck_soon: Callable[[], None]) -> None:
        self.view = view
        self.registry = registry
        self.recheck_soon = recheck_soon  # ask for another pass shortly (the engine lags behind a change)
        self.seen: dict[IngressRef, tuple[Any, ...]] = {}
        # What changed since the last pass (filled from store events, in the watchers' threads):
        # events wait in `_heard` with the engine's queued count until the engine has built them.
        self._lock = threading.Lock()
        self._heard: deque[tuple[int, ObjectRef]] = deque()
        self._full = True  # compare every Ingress (start, new term, IngressClass or address change)
        self._touched: set[IngressRef] = set()
        self._services: set[tuple[str, str]] = set()
        self._secrets: set[tuple[str, str, str]] = set()
        self._addresses: frozenset[Address] | None = None
        # Reverse indexes over the IRs last compared, to find who a change can affect.
        self._by_host: dict[str, set[IngressRef]] = {}
        self._by_service: dict[tuple[str, str], set[IngressRef]] = {}
        self._by_secret: dict[tuple[str, str, str], set[IngressRef]] = {}

    def note(self, event: StoreEvent) -> None:
        """Record one relevant store event (any thread), heard after the engine queued it."""
        with self._lock:  # read inside the lock: `_heard` stays in the order of the engine's count
            self._heard.append((self.view.events_queued(), event.ref))

    def _take_built(self) -> bool:
        """Move the events the engine has built into the sets a pass looks at (under the lock);
        True if some are still waiting for the engine.

        A pass that looked at an Ingress before the engine rebuilt it would see nothing new and
        forget the change (a Secret made unusable would never become an Event).
        """
        built = self.view.events_built()
        heard = self._heard
        while heard and heard[0][0] <= built:
            ref = heard.popleft()[1]
            if ref.kind == INGRESS:
                self._touched.add(IngressRef(ref.cluster, ref.namespace, ref.name))
            elif ref.kind == SERVICE:
                self._services.add((ref.namespace, ref.name))
            elif ref.kind == SECRET:
                self._secrets.add((ref.cluster, ref.namespace, ref.name))
            else:
                self._full = True
        return bool(heard)

    def touch(self, ref: IngressRef) -> None:
        """Look at `ref` again in the next pass, whatever it was seen as."""
        self.seen.pop(ref, None)
        with self._lock:
            self._touched.add(ref)

    def forget_all(self) -> None:
        self.seen.clear()
        self._by_host.clear()
        self._by_service.clear()
        self._by_secret.clear()
        with self._lock:
            self._full = True

    def _token(self, ref: IngressRef, ir: Any) -> tuple[Any, ...]:
        store = self.registry.get(ref.cluster)
        obj = store.get(INGRESS, ref.namespace, ref.name) if store is not None else None
        results = self.view.host_results
        return (ir, obj, *(results.get(h) for h in _hosts(ir)))

    def _index(self, ref: IngressRef, ir: Any, add: bool) -> None:
        pairs: list[tuple[dict[Any, set[IngressRef]], Any]] = [(self._by_host, h) for h in _hosts(ir)]
        pairs += [(self._by_service, key) for key in ir.services]
        pairs += [(self._by_secret, key) for key in ir.secrets]
        for index, key in pairs:
            if add:
                index.setdefault(key, set()).add(ref)
            else:
                refs = index.get(key)
                if refs is not None:
                    refs.discard(ref)
                    if not refs:
                        del index[key]

    def _record(self, ref: IngressRef, token: tuple[Any, ...] | None) -> None:
        old = self.seen.pop(ref, None)
        if old is not None:
            self._index(ref, old[0], add=False)
        if token is not None:
            self.seen[ref] = token
            self._index(ref, token[0], add=True)

    def _candidates(self) -> set[IngressRef] | None:
        """Ingresses a change since the last pass can affect; None means all of them."""
        with self._lock:
            waiting = self._take_built()
            full, self._full = self._full, False
            touched, self._touched = self._touched, set()
            services, self._services = self._services, set()
            secrets, self._secrets = self._secrets, set()
        if waiting:  # the rest once the engine has built them
            self.recheck_soon()
        if full:
            return None
        out = set(touched)
        irs = self.view.irs
        for ref in touched:  # conflicts: everyone sharing a host with the old or the new version
            for version in (self.seen.get(ref, (None,))[0], irs.get(ref)):
                if version is not None:
                    for h in _hosts(version):
                        out |= self._by_host.get(h, set())
        for key in services:
            out |= self._by_service.get(key, set())
        for key in secrets:
            out |= self._by_secret.get(key, set())
        return out

    def dirty(self, addresses: frozenset[Address]) -> tuple[list[IngressRef], list[IngressRef]]:
        """(Ingresses whose IR, stored object or host findings changed since the last pass,
        Ingresses that are gone)."""
        candidates = self._candidates()
        if addresses != self._addresses:  # every served Ingress must say the new address
            self._addresses = addresses
            self.seen.clear()
            self._by_host.clear()
            self._by_service.clear()
            self._by_secret.clear()
            candidates = None
        irs = self.view.irs
        if candidates is None:
            candidates = set(irs) | set(self.seen)
        out: list[IngressRef] = []
        gone: list[IngressRef] = []
        for ref in candidates:
            ir = irs.get(ref)
            if ir is None:
                self._record(ref, None)
                gone.append(ref)
                continue
            token = self._token(ref, ir)
            old = self.seen.get(ref)
            if old is None or len(old) != len(token) or any(a is not b for a, b in zip(old, token, strict=True)):
                self._record(ref, token)
                out.append(ref)
        return out, gone
