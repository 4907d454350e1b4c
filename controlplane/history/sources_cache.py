"""The controller's cache: what the sources say, whether or not it is served.

With history on, the controller writes here and the xDS server reads a second cache (the served
view). Each change is handed on with its effective delta and the store events behind it; the
history service then mirrors it to the served view, or, while a pin is set, only records it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from controlplane.xds.cache import DEFAULT_GROUP, Resource, SnapshotCache

Effective = dict[str, dict[str, Resource | None]]
OnChange = Callable[[Effective, Sequence[object], float | None], None]


class SourcesCache(SnapshotCache):
    def __init__(self, on_change: OnChange, on_ready: Callable[[bool], None]) -> None:
        self._on_change = on_change
        self._on_ready = on_ready
        self._ready = False
        super().__init__()

    @property  # type: ignore[override]
    def ready(self) -> bool:
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        changed = value != self._ready
        self._ready = value
        if changed:
            self._on_ready(value)

    def apply(
        self,
        changes: Mapping[str, Mapping[str, Resource | None]],
        *,
        group: str = DEFAULT_GROUP,
        seen_at: float | None = None,
        trigger: Sequence[object] = (),
    ) -> int:
        before = {t: self.get(t, group).resources for t in changes}
        old_version = self.version
        version = super().apply(changes, group=group, seen_at=seen_at)
        if version == old_version or group != DEFAULT_GROUP:
            return version
        effective: Effective = {}
        for type_url, entries in changes.items():
            old, new = before[type_url], self.get(type_url, group).resources
            for name in entries:
                was, now = old.get(name), new.get(name)
                if was is not now:
                    effective.setdefault(type_url, {})[name] = now
        self._on_change(effective, trigger, seen_at)
        return version
