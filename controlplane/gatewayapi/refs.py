"""ReferenceGrant: may an object in one namespace refer to an object in another?"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.gatewayapi.kinds import as_list, meta, spec


@dataclass(frozen=True, slots=True)
class Grant:
    """One `from` x `to` pair of a ReferenceGrant in namespace `namespace` (the target namespace)."""

    namespace: str
    from_group: str
    from_kind: str
    from_namespace: str
    to_group: str
    to_kind: str
    to_name: str  # "" allows every name


class Grants:
    """The ReferenceGrants of one source cluster."""

    def __init__(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self.grants: list[Grant] = []
        for obj in objects:
            ns = str(meta(obj).get("namespace") or "")
            s = spec(obj)
            for f in as_list(s.get("from")):
                for t in as_list(s.get("to")):
                    if not isinstance(f, Mapping) or not isinstance(t, Mapping):
                        continue
                    self.grants.append(Grant(ns, str(f.get("group") or ""), str(f.get("kind") or ""),
                                             str(f.get("namespace") or ""), str(t.get("group") or ""),
                                             str(t.get("kind") or ""), str(t.get("name") or "")))  # fmt: skip

    def allows(self, from_group: str, from_kind: str, from_ns: str, to_group: str, to_kind: str, to_ns: str,
               to_name: str) -> bool:  # fmt: skip
        """Same namespace is always allowed; otherwise a grant in the target namespace must match."""
        if from_ns == to_ns:
            return True
        return any(
            g.namespace == to_ns and g.from_group == from_group and g.from_kind == from_kind
            and g.from_namespace == from_ns and g.to_group == to_group and g.to_kind == to_kind
            and g.to_name in ("", to_name)
            for g in self.grants
        )  # fmt: skip
