"""Hooks the history service into a running Meridian: where it persists, who writes, the token."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from controlplane.history.backends import PREFIX, ConfigMapBackend, FileBackend
from controlplane.history.persist import Persister
from controlplane.history.secrets import SecretFinder

if TYPE_CHECKING:
    from controlplane.history.service import HistoryService
    from controlplane.store import ClusterRegistry

log = logging.getLogger("controlplane.history")
TOKEN_FILE = "admin-token"


def load_token(token_file: str | None, state_dir: str | None) -> str | None:
    """The admin token: from `--admin-token-file`, else `<state-dir>/admin-token` (created 0600 on first
    use, so the CLI on the same machine finds it). None: mutating endpoints stay disabled."""
    if token_file:
        return Path(token_file).read_text(encoding="utf-8").strip() or None
    if not state_dir:
        return None
    path = Path(state_dir) / TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)  # atomic and never replaces a token another process made first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text(encoding="utf-8").strip() or None


@dataclass(frozen=True)
class HistorySettings:
    """What the history needs of `meridian serve`'s options."""

    state_dir: Path  # file mode: history, pin and admin token (the local CA's directory too)
    admin_token_file: str | None
    kubeconfig: str | None
    in_cluster: bool
    namespace: str


async def start_history(
    svc: HistoryService,
    settings: HistorySettings,
    registry: ClusterRegistry,
    *,
    fleet: Callable[[], list[dict[str, Any]]],
    is_leader: Callable[[], bool],
) -> None:
    svc.fleet = fleet
    kube = bool(settings.kubeconfig or settings.in_cluster)
    try:  # a token is generated only in file mode; in Kubernetes mode it comes from a Secret
        svc.admin_token = load_token(settings.admin_token_file, None if kube else str(settings.state_dir))
    except OSError as exc:
        if settings.admin_token_file:
            raise
        log.warning("no admin token (%s): rollback and resume are disabled", exc)
    svc.find_secret = SecretFinder(registry).find
    if kube:
        from controlplane.leader import default_identity
        from controlplane.sources.kube import api_client_from_file, in_cluster_api_client

        api = api_client_from_file(settings.kubeconfig) if settings.kubeconfig else in_cluster_api_client()
        writer = f"{default_identity()}/{uuid.uuid4().hex[:6]}"
        backend = ConfigMapBackend(api, settings.namespace)
        persister = Persister(backend, writer=writer)
        svc.warn = _event_writer(api, settings.namespace)
        await svc.start(persister, is_leader)
        svc.follow(backend)
    else:
        persister = Persister(FileBackend(settings.state_dir / "history"), writer=f"pid-{os.getpid()}")
        await svc.start(persister)


def _event_writer(api: Any, namespace: str) -> Any:
    """A Warning Event on the pin ConfigMap, written in the background (a failed write is logged)."""
    from controlplane.sources.kube import RawApi

    raw = RawApi(api)  # not CoreV1Api: ~0.5 s of CPU to import, on the start-up path
    tasks: set[asyncio.Task[None]] = set()

    def create(reason: str, message: str) -> None:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{PREFIX}pin.{uuid.uuid4().hex[:12]}", "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "name": f"{PREFIX}pin", "namespace": namespace},
            "reason": reason,
            "message": message,
            "type": "Warning",
            "source": {"component": "meridian"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            raw.call("POST", f"/api/v1/namespaces/{quote(namespace, safe='')}/events", body=body)
        except Exception as exc:
            log.warning("could not write the %s Event: %s", reason, exc)

    def warn(reason: str, message: str) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(create, reason, message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return warn
