"""Discovery documents of the fake API server (`/version`, `/api`, `/apis`, ...)."""

from __future__ import annotations

from typing import Any

from .resources import RESOURCES, ApiError


def discovery_document(parts: list[str], server_version: str) -> dict[str, Any] | None:
    """The answer to a discovery path (`/version`, `/api`, `/apis`, group and resource lists), or None."""
    if parts == ["version"]:
        major, minor = server_version.lstrip("v").split(".")[:2]
        return {"major": major, "minor": minor, "gitVersion": server_version, "gitCommit": "0" * 40,
                "gitTreeState": "clean", "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.22.0",
                "compiler": "gc", "platform": "linux/amd64"}
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if parts == ["apis"]:
        groups = sorted({(r.group, r.version) for r in RESOURCES if r.group})
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [_group(g, v) for g, v in groups],
        }
    if len(parts) == 2 and parts[0] == "apis":
        vs = sorted({r.version for r in RESOURCES if r.group == parts[1]})
        if not vs:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {"kind": "APIGroup", "apiVersion": "v1", **_group(parts[1], vs[0])}
    if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"):
        group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
        found = [r for r in RESOURCES if (r.group, r.version) == (group, version)]
        if not found:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources: list[dict[str, Any]] = []
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        for r in found:
            resources.append({"name": r.plural, "singularName": r.kind.lower(),
                              "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs})
            if r.status:
                resources.append({"name": f"{r.plural}/status", "singularName": "",
                                  "namespaced": r.namespaced, "kind": r.kind,
                                  "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}
    return None


def _group(group: str, version: str) -> dict[str, Any]:
    gv = {"groupVersion": f"{group}/{version}", "version": version}
    return {"name": group, "versions": [gv], "preferredVersion": gv}
