"""Which Ingresses are Meridian's: spec.ingressClassName, the legacy annotation, or the default class."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CONTROLLER_NAME = "meridian.io/ingress-controller"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"


@dataclass(frozen=True)
class ClassPolicy:
    accepted_names: frozenset[str] = frozenset({"meridian"})
    watch_without_class: bool = False
    accept_all: bool = False  # offline translation: every Ingress, whatever its class


@dataclass(frozen=True)
class ClassView:
    """The IngressClasses of one cluster that name Meridian's controller."""

    ours: frozenset[str]
    default_is_ours: bool

    @classmethod
    def from_objects(cls, classes: Iterable[Mapping[str, Any]]) -> ClassView:
        ours: set[str] = set()
        default = False
        for c in classes:
            if (c.get("spec") or {}).get("controller") != CONTROLLER_NAME:
                continue
            meta = c.get("metadata") or {}
            ours.add(str(meta.get("name")))
            if str((meta.get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true":
                default = True
        return cls(frozenset(ours), default)


def ingress_class_of(obj: Mapping[str, Any]) -> str | None:
    """The legacy annotation wins over spec.ingressClassName, as in ingress-nginx."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if annotations.get(CLASS_ANNOTATION):
        return str(annotations[CLASS_ANNOTATION])
    name = (obj.get("spec") or {}).get("ingressClassName")
    return str(name) if name else None


def is_accepted(obj: Mapping[str, Any], view: ClassView, policy: ClassPolicy) -> bool:
    if policy.accept_all:
        return True
    name = ingress_class_of(obj)
    if name is None:
        return policy.watch_without_class or view.default_is_ours
    return name in view.ours or name in policy.accepted_names
