"""The annotation framework: reading keys under both prefixes, reporting, and the family contract.

A family owns a set of keys. `parse` turns those keys into typed policies (the frozen
dataclasses of controlplane/ir/policies.py, whose class attribute `scope` says where they apply) and records a
finding for every key it read: converted, warning (invalid value, default used),
rejected (the Ingress is not served), unsupported or not-applicable. Parsing
never raises on user input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from controlplane.ir import Finding, FindingLevel, Forward, IngressRef, Route
from controlplane.ir.policies import Policy, RoutePolicy, SourcePolicy, TlsPolicy, UpstreamPolicy

P = TypeVar("P")

NGINX_PREFIX = "nginx.ingress.kubernetes.io/"
MERIDIAN_PREFIX = "meridian.io/"
LEGACY_PREFIX = "ingress.kubernetes.io/"


def valid_re2(pattern: str) -> bool:
    """Whether Envoy's RE2 accepts `pattern`: Python re syntax minus lookarounds and backreferences."""
    if re.search(r"\(\?[=!<]|\\[1-9]", pattern):
        return False
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


class Annotations:
    """Annotation values by short key; `meridian.io/` wins over `nginx.ingress.kubernetes.io/`."""

    def __init__(self, raw: Mapping[str, Any] | None) -> None:
        self.values: dict[str, str] = {}
        self.full_keys: dict[str, str] = {}
        self.legacy: dict[str, str] = {}
        self.other: dict[str, str] = {}
        for key, value in (raw or {}).items():
            text = "" if value is None else str(value)
            if key.startswith(NGINX_PREFIX):
                short = key[len(NGINX_PREFIX) :].strip()
                if short not in self.full_keys or not self.full_keys[short].startswith(MERIDIAN_PREFIX):
                    self.values[short], self.full_keys[short] = text, key
            elif key.startswith(MERIDIAN_PREFIX):
                short = key[len(MERIDIAN_PREFIX) :].strip()
                self.values[short], self.full_keys[short] = text, key
            elif key.startswith(LEGACY_PREFIX):
                self.legacy[key[len(LEGACY_PREFIX) :].strip()] = text
            else:
                self.other[key] = text

    def get(self, key: str) -> str | None:
        value = self.values.get(key)
        return None if value is None else value.strip()

    def has(self, key: str) -> bool:
        return key in self.values


@dataclass
class ParseContext:
    """What a family may look at besides annotations, and where it reports."""

    ingress: IngressRef
    obj: Mapping[str, Any]
    lookup_secret: Callable[[str, str], Mapping[str, Any] | None] = lambda ns, name: None
    # (namespace, service, port ref {"number": n} | {"name": s} | {}) -> (port number | None, problem)
    resolve_service_port: Callable[[str, str, Mapping[str, Any]], tuple[int | None, str]] = lambda ns, name, ref: (
        None,
        "service lookups are not available",
    )
    findings: list[Finding] = field(default_factory=list)
    rejected: bool = False

    def report(self, level: FindingLevel, key: str, message: str = "") -> None:
        self.findings.append(Finding(level, key, message))
        if level == "rejected":
            self.rejected = True

    def converted(self, key: str, message: str = "") -> None:
        self.report("converted", key, message)

    def warn(self, key: str, message: str) -> None:
        self.report("warning", key, message)

    def reject(self, key: str, message: str) -> None:
        self.report("rejected", key, message)

    # -- typed readers: invalid values warn and fall back to the default --
    def boolean(self, ann: Annotations, key: str, default: bool) -> bool:
        raw = ann.get(key)
        if raw is None:
            return default
        low = raw.lower()
        if low in ("true", "false"):
            return low == "true"
        self.warn(key, f"invalid boolean {raw!r}; using default {str(default).lower()}")
        return default

    def integer(
        self, ann: Annotations, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        raw = ann.get(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.warn(key, f"invalid integer {raw!r}; using default {default}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.warn(key, f"{value} is out of range [{minimum}, {maximum}]; using default {default}")
            return default
        return value

    def seconds(self, ann: Annotations, key: str, default: float) -> float:
        """nginx time values: plain seconds, or with s/m/h/ms suffix."""
        raw = ann.get(key)
        if raw is None:
            return default
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", raw)
        if not m:
            self.warn(key, f"invalid duration {raw!r}; using default {default:g}s")
            return default
        scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]
        return float(m.group(1)) * scale


@dataclass(frozen=True)
class Validator:
    """What a key accepts (ingress-nginx's parser validators): `accepts` decides, `valid`/`invalid` are
    examples a test feeds the family to check its parser agrees with the declaration."""

    description: str
    accepts: Callable[[str], bool]
    valid: tuple[str, ...]
    invalid: tuple[str, ...]


def _is_int(value: str, low: int | None, high: int | None) -> bool:
    try:
        n = int(value)
    except ValueError:
        return False
    return (low is None or n >= low) and (high is None or n <= high)


def integer(low: int | None = None, high: int | None = None) -> Validator:
    """An integer, within [low, high] when given (outside: a warning and the default)."""
    span = f" {low if low is not None else ''}..{high if high is not None else ''}" if low or high else ""
    valid = str(low if low is not None else 0 if high is None or high >= 0 else high)
    invalid = ("x", *((str(low - 1),) if low is not None else ()), *((str(high + 1),) if high is not None else ()))
    return Validator(f"integer{span}", lambda v: _is_int(v, low, high), (valid,), invalid)


BOOLEAN = Validator("true|false", lambda v: v.lower() in ("true", "false"), ("true", "false"), ("yes", "1"))
DURATION = Validator(
    "seconds, or with ms/s/m/h",
    lambda v: re.fullmatch(r"\d+(\.\d+)?(ms|s|m|h)?", v) is not None,
    ("5", "1m"),
    ("soon",),
)


@dataclass(frozen=True)
class Key:
    """The declaration of one annotation key (or of keys that share one row), in the way of
    ingress-nginx's parser.AnnotationFields: what Envoy gets, the default, and what differs from
    ingress-nginx ("none" when nothing does). docs/annotations.md's key tables are generated from
    these (controlplane/ingress/annotation_docs.py; tests/unit/test_annotation_docs.py checks it)."""

    names: tuple[str, ...]
    envoy: str
    default: str = "none"
    difference: str = "none"
    label: str | None = None  # the table's key cell when it says more than the names (`auth-type: basic`)
    validator: Validator | None = None  # checked against the family's parser by tests/unit/test_annotation_docs.py

    def cell(self) -> str:
        return self.label or ", ".join(f"`{n}`" for n in self.names)


class Family:
    """An annotation family: the keys it owns (declared once, in `fields`), how it parses them, and
    hooks for policies that change how the frontend merges hosts. Every hook's default has no
    effect; a family overrides only what it needs (the registry calls a hook only on the families
    that override it).
    """

    name: ClassVar[str] = ""
    fields: ClassVar[tuple[Key, ...]] = ()
    keys: ClassVar[tuple[str, ...]] = ()  # derived from `fields`, in their order

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "fields" in cls.__dict__:
            cls.keys = tuple(n for key in cls.fields for n in key.names)

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Policy]:
        raise NotImplementedError

    # -- hooks --------------------------------------------------------------------------------
    def extra_routes(self, parsed: ParsedAnnotations, host: str, source: IngressRef) -> list[Route]:
        """Routes of its own this Ingress adds to each of its hosts (app-root, error pages)."""
        return []

    def redirect_to_https(self, parsed: ParsedAnnotations, host_has_tls: bool) -> bool | None:
        """Whether plain-HTTP requests for the Ingress's routes on this host go to HTTPS
        (None: no opinion)."""
        return None

    def alternative(self, parsed: ParsedAnnotations) -> Policy | None:
        """A policy saying this Ingress is an alternative backend of the primary Ingress with the
        same host and path (canary), or None."""
        return None

    def alternative_routes(self, primary: Route, alternative: Forward, policy: Policy) -> list[Route]:
        """The ordered routes that replace `primary` when `alternative` (from `policy`) attaches to it."""
        return [primary]

    def passes_tls_through(self, parsed: ParsedAnnotations) -> bool:
        """TLS for the Ingress's hosts is not terminated but passed to the backend by SNI."""
        return False

    def uses_service_address(self, upstream: tuple[UpstreamPolicy, ...]) -> bool:
        """A cluster with these upstream policies has the Service's ClusterIP as its only endpoint."""
        return False


@dataclass(frozen=True)
class ParsedAnnotations:
    """Policies by scope, plus every finding."""

    route: tuple[RoutePolicy, ...] = ()
    upstream: tuple[UpstreamPolicy, ...] = ()
    tls: tuple[TlsPolicy, ...] = ()
    ingress: tuple[SourcePolicy, ...] = ()
    findings: tuple[Finding, ...] = ()
    rejected: bool = False

    def get(self, kind: type[P]) -> P | None:
        """The policy of `kind` (a family attaches at most one of each type), in any scope."""
        for group in (self.ingress, self.route, self.upstream, self.tls):
            for p in group:
                if isinstance(p, kind):
                    return p
        return None
