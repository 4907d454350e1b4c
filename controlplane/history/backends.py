"""Where the history and the pin are kept: named documents of bytes.

File mode keeps them as files under `--state-dir`/history; Kubernetes mode as ConfigMaps
`meridian-history-<name>` in Meridian's namespace (binaryData, each kept under the 1 MiB object
limit by the caller). Calls block: run them in a thread.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import orjson

log = logging.getLogger("controlplane.history")

PREFIX = "meridian-history-"
LABEL = "meridian.io/history"
MAX_DOCUMENT = 1048576 - 64 * 1024  # bytes of one document: under the apiserver's 1 MiB, with room for keys


class Backend(Protocol):
    def read(self, name: str) -> bytes | None: ...
    def write(self, name: str, data: bytes) -> None: ...
    def delete(self, name: str) -> None: ...
    def names(self) -> set[str]: ...


class FileBackend:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.dir / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        """Atomic: a reader (or a crash) sees the old or the new document, never half of one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.dir / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / name).unlink()

    def names(self) -> set[str]:
        if not self.dir.is_dir():
            return set()
        return {p.name for p in self.dir.iterdir() if p.is_file() and not p.name.startswith(".")}


class ConfigMapBackend:
    """One ConfigMap per document; only get/list/create/update/delete are used."""

    def __init__(self, api: Any, namespace: str) -> None:
        # Raw JSON requests: the generated CoreV1Api costs ~0.5 s of CPU to import, on the start-up path.
        from controlplane.sources.kube import RawApi

        self.api = RawApi(api)
        self.namespace = namespace
        self.path = f"/api/v1/namespaces/{quote(namespace, safe='')}/configmaps"

    def _of(self, name: str) -> str:
        return f"{self.path}/{quote(PREFIX + name, safe='')}"

    def read(self, name: str) -> bytes | None:
        from kubernetes.client.exceptions import ApiException

        try:
            body = self.api.call("GET", self._of(name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj = orjson.loads(body)
        data = (obj.get("binaryData") or {}).get("data")
        return base64.b64decode(data) if data is not None else b""

    def write(self, name: str, data: bytes) -> None:
        from kubernetes.client.exceptions import ApiException

        if len(data) > MAX_DOCUMENT:
            raise ValueError(f"history document {name} is {len(data)} bytes, over {MAX_DOCUMENT}")
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": PREFIX + name,
                "namespace": self.namespace,
                "labels": {LABEL: "true", "app.kubernetes.io/name": "meridian"},
            },
            "binaryData": {"data": base64.b64encode(data).decode()},
        }
        try:
            self.api.call("PUT", self._of(name), body=body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.api.call("POST", self.path, body=body)

    def delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.call("DELETE", self._of(name))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def watch(self, name: str, on_change: Any, stop: threading.Event) -> None:
        """Blocking: calls `on_change()` whenever the ConfigMap for `name` may have changed (and on each
        (re)connect), until `stop` is set. Lets every replica follow a pin within a round trip."""
        while not stop.is_set():
            resp = None
            try:
                query = [("fieldSelector", f"metadata.name={PREFIX}{name}"), ("watch", True),
                         ("timeoutSeconds", 30)]  # fmt: skip
                resp = self.api.request("GET", self.path, query=query, timeout=(5, 45))
                self._watching = resp
                on_change()
                for chunk in resp.stream(None, decode_content=False):
                    if stop.is_set():
                        return
                    if chunk.strip():
                        on_change()
            except Exception as exc:  # reconnect after a pause; polling still covers the gap
                if not stop.is_set():
                    log.debug("watch of %s%s failed: %s", PREFIX, name, exc)
                    stop.wait(1.0)
            finally:
                self._watching = None
                if resp is not None:
                    with contextlib.suppress(Exception):
                        resp.release_conn()

    def stop_watch(self) -> None:
        resp = getattr(self, "_watching", None)
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()

    def names(self) -> set[str]:
        data = self.api.call("GET", self.path, query=[("labelSelector", f"{LABEL}=true")])
        items = orjson.loads(data).get("items") or []
        return {i["metadata"]["name"][len(PREFIX) :] for i in items if i["metadata"]["name"].startswith(PREFIX)}
