"""Check that a manifest is an object the Kubernetes API server would accept.

Two layers, because each catches what the other cannot:
- the API's OpenAPI schema for the kind and version (the `kubernetes-validate` package ships the
  schemas of every Kubernetes release); strict mode, so a misspelt or misplaced field fails
  instead of being silently dropped as the API server would;
- the API server's own validation rules that the schema does not carry: object, label, port and
  data-key name syntax, base64 Secret data, a Deployment selector that matches its pod template.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

# Kinds whose names the API server checks as a path segment only (RBAC objects may contain ':').
_PATH_SEGMENT_NAMED = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
# Kinds whose names must be DNS-1035 labels (they become DNS names).
_DNS1035_NAMED = {"Service"}
_POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class ManifestInvalid(AssertionError):
    """Raised with every problem found in one object, so a failing test shows them all."""


def validate_object(obj: dict[str, Any], kube_version: str) -> None:
    """Raise ManifestInvalid unless `obj` is valid for its kind in Kubernetes `kube_version`."""
    problems = validation_errors(obj, kube_version)
    if problems:
        ident = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        raise ManifestInvalid(
            f"{ident} is not valid for Kubernetes {kube_version}:\n- " + "\n- ".join(problems)
        )


def validation_errors(obj: dict[str, Any], kube_version: str) -> list[str]:
    """Every reason the API server of `kube_version` would reject `obj` (empty list: valid)."""
    for key in ("apiVersion", "kind", "metadata"):
        if key not in obj:
            return [f"missing {key}"]
    problems: list[str] = []
    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path) or "<root>"
        problems.append(f"schema: {path}: {exc.message}")
    except SchemaNotFoundError as exc:
        problems.append(f"schema: {exc.message}")
    problems += _metadata_errors(obj)
    problems += _kind_errors(obj)
    return problems


def _metadata_errors(obj: dict[str, Any]) -> list[str]:
    meta = obj["metadata"] or {}
    kind = obj["kind"]
    problems: list[str] = []
    name = meta.get("name")
    if not name:
        problems.append("metadata.name is empty")
    elif kind in _PATH_SEGMENT_NAMED:
        if name in (".", "..") or "/" in name or "%" in name:
            problems.append(f"metadata.name {name!r} is not a valid path segment")
    elif kind in _DNS1035_NAMED:
        if len(name) > 63 or not _DNS1035_LABEL.match(name):
            problems.append(f"metadata.name {name!r} is not a DNS-1035 label")
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    namespace = meta.get("namespace")
    if namespace is not None and (len(namespace) > 63 or not _DNS1123_LABEL.match(namespace)):
        problems.append(f"metadata.namespace {namespace!r} is not a DNS-1123 label")
    problems += _label_errors("metadata.labels", meta.get("labels") or {})
    for key in meta.get("annotations") or {}:
        problems += _qualified_key_errors("metadata.annotations", key)
    return problems


def _qualified_key_errors(where: str, key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    bad = len(name) > 63 or not _QUALIFIED_NAME.match(name)
    if prefix:
        bad = bad or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)
    return [f"{where}: key {key!r} is not a qualified name"] if bad else []


def _label_errors(where: str, labels: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for key, value in labels.items():
        problems += _qualified_key_errors(where, key)
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"{where}: value {value!r} of {key!r} is not a valid label value")
    return problems


def _kind_errors(obj: dict[str, Any]) -> list[str]:
    kind = obj["kind"]
    spec = obj.get("spec") or {}
    problems: list[str] = []
    if kind in _POD_TEMPLATE_KINDS:
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        problems += _label_errors("spec.template.metadata.labels", labels)
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        if kind != "Job" and not selector:
            problems.append("spec.selector.matchLabels is empty")
        if any(labels.get(k) != v for k, v in selector.items()):
            problems.append("spec.selector does not match spec.template.metadata.labels")
        problems += _pod_spec_errors(template.get("spec") or {})
    elif kind == "Service":
        names = [p.get("name") for p in spec.get("ports") or []]
        if len(names) > 1 and (None in names or len(set(names)) != len(names)):
            problems.append("Service ports need unique names when there are several")
        for name in filter(None, names):
            if len(name) > 63 or not _DNS1123_LABEL.match(name):
                problems.append(f"Service port name {name!r} is not a DNS-1123 label")
        problems += _label_errors("spec.selector", spec.get("selector") or {})
    elif kind in ("Secret", "ConfigMap"):
        for field in ("data", "binaryData", "stringData"):
            for key, value in (obj.get(field) or {}).items():
                if len(key) > 253 or not _CONFIG_KEY.match(key):
                    problems.append(f"{field}: key {key!r} is not a valid config key")
                if field == "data" and kind == "Secret":
                    try:
                        base64.b64decode(value, validate=True)
                    except (binascii.Error, TypeError):
                        problems.append(f"data[{key!r}] is not base64")
    elif kind == "PodDisruptionBudget":
        problems += _label_errors(
            "spec.selector.matchLabels", (spec.get("selector") or {}).get("matchLabels") or {}
        )
    return problems


def _pod_spec_errors(pod: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    containers = (pod.get("initContainers") or []) + (pod.get("containers") or [])
    if not pod.get("containers"):
        problems.append("pod spec has no containers")
    names = [c.get("name", "") for c in containers]
    if len(set(names)) != len(names):
        problems.append("container names are not unique")
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    for container in containers:
        cname = container.get("name", "")
        if len(cname) > 63 or not _DNS1123_LABEL.match(cname):
            problems.append(f"container name {cname!r} is not a DNS-1123 label")
        if not container.get("image"):
            problems.append(f"container {cname!r} has no image")
        port_names = [p["name"] for p in container.get("ports") or [] if "name" in p]
        if len(set(port_names)) != len(port_names):
            problems.append(f"container {cname!r} has duplicate port names")
        for pname in port_names:
            if len(pname) > 15 or not _IANA_SVC_NAME.match(pname) or "--" in pname or pname.isdigit():
                problems.append(f"container {cname!r} port name {pname!r} is not an IANA service name")
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") not in volumes:
                problems.append(f"container {cname!r} mounts unknown volume {mount.get('name')!r}")
    return problems
