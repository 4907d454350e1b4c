"""`meridian create-remote-secret`: a kubeconfig Secret that registers a remote cluster.

Like `istioctl create-remote-secret`: take one context of a kubeconfig, embed
every referenced file (CA, client certificate and key, token file) so the
result works from inside the primary cluster, and wrap it in a Secret labelled
for Meridian's remote-cluster watch.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any

import yaml

from controlplane.sources.remote import CLUSTER_LABEL

CLUSTER_ID_ANNOTATION = "meridian.io/cluster-id"
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# kubeconfig fields that name a file -> the field that carries its contents inline
_CLUSTER_FILES = {"certificate-authority": "certificate-authority-data"}
_USER_FILES = {"client-certificate": "client-certificate-data", "client-key": "client-key-data"}


def _named(entries: Any, name: str, what: str) -> dict[str, Any]:
    for entry in entries or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            return dict(entry.get(what) or {})
    raise ValueError(f"kubeconfig has no {what} named {name!r}")


def _resolve(path: str, base_dir: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(base_dir, path)


def _embed(section: dict[str, Any], files: dict[str, str], base_dir: str) -> dict[str, Any]:
    out = dict(section)
    for file_key, data_key in files.items():
        path = out.pop(file_key, None)
        if path and not out.get(data_key):
            with open(_resolve(str(path), base_dir), "rb") as fh:
                out[data_key] = base64.b64encode(fh.read()).decode()
    return out


def secret_name(cluster_id: str) -> str:
    """A valid DNS-1123 Secret name derived from the cluster ID."""
    slug = re.sub(r"[^a-z0-9-]+", "-", cluster_id.lower()).strip("-") or "cluster"
    return f"meridian-remote-secret-{slug}"[:253].rstrip("-")


def minimal_kubeconfig(
    kubeconfig_text: str, cluster_id: str, context: str | None = None, base_dir: str = "."
) -> dict[str, Any]:
    """One context of a kubeconfig, self-contained (files embedded), named after the cluster ID."""
    config = yaml.safe_load(kubeconfig_text)
    if not isinstance(config, dict):
        raise ValueError("not a kubeconfig")
    ctx_name = context or config.get("current-context")
    if not ctx_name:
        raise ValueError("kubeconfig has no current-context; pass a context")
    ctx = _named(config.get("contexts"), ctx_name, "context")
    cluster = _embed(_named(config.get("clusters"), ctx.get("cluster"), "cluster"), _CLUSTER_FILES, base_dir)
    user = _embed(_named(config.get("users"), ctx.get("user"), "user"), _USER_FILES, base_dir)
    token_file = user.pop("tokenFile", None)
    if token_file and not user.get("token"):
        with open(_resolve(str(token_file), base_dir), encoding="utf-8") as fh:
            user["token"] = fh.read().strip()
    if not cluster.get("server"):
        raise ValueError("the selected cluster has no server address")
    new_ctx: dict[str, Any] = {"cluster": cluster_id, "user": cluster_id}
    if ctx.get("namespace"):
        new_ctx["namespace"] = ctx["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_id, "cluster": cluster}],
        "users": [{"name": cluster_id, "user": user}],
        "contexts": [{"name": cluster_id, "context": new_ctx}],
        "current-context": cluster_id,
        "preferences": {},
    }


def create_remote_secret(
    kubeconfig_text: str,
    cluster_id: str,
    namespace: str = "meridian-system",
    context: str | None = None,
    *,
    base_dir: str = ".",
) -> str:
    """Secret YAML registering `cluster_id` with Meridian; `kubectl apply` it in the primary cluster.

    `base_dir` resolves relative file paths in the kubeconfig (the kubeconfig's own directory).
    """
    if not _DATA_KEY.match(cluster_id):
        raise ValueError(f"cluster ID {cluster_id!r} must match {_DATA_KEY.pattern} (it is a Secret data key)")
    kubeconfig = minimal_kubeconfig(kubeconfig_text, cluster_id, context, base_dir)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(cluster_id),
            "namespace": namespace,
            "labels": {CLUSTER_LABEL: "true"},
            "annotations": {CLUSTER_ID_ANNOTATION: cluster_id},
        },
        "type": "Opaque",
        "stringData": {cluster_id: yaml.safe_dump(kubeconfig, sort_keys=False)},
    }
    return yaml.safe_dump(secret, sort_keys=False)
