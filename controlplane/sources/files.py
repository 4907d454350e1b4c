"""A directory of YAML manifests acting as one cluster, watched for changes.

Each file's objects are remembered so that editing or deleting the file
removes exactly what it used to define. A file that fails to parse is reported
and its last good content stays served. Objects are read as written: no
creationTimestamp is made up (a file's mtime changes on every edit, and an age
that changes would change which Ingress wins a conflict).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from controlplane.knative.kinds import is_kingress
from controlplane.sources.shapes import shape_problem
from controlplane.sources.watch import Watcher, WatchfilesWatcher, open_watcher
from controlplane.store import GATEWAY_API_KINDS, KINDS, KINGRESS, ClusterStore, KubeObject

log = logging.getLogger("controlplane.sources.files")

SUFFIXES = (".yaml", ".yml", ".json")
CLUSTER_SCOPED = frozenset({"IngressClass", "GatewayClass", "Namespace"})
GATEWAY_APIS = frozenset({"gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"})
INGRESS_APIS = frozenset({"networking.k8s.io/v1", "networking.k8s.io/v1beta1", "extensions/v1beta1"})


class ManifestError(ValueError):
    pass


def _yaml_loader() -> type[yaml.SafeLoader]:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_manifests(text: str) -> tuple[list[tuple[str, KubeObject]], list[str]]:
    """(kind, object) pairs of the kinds Meridian reads, and per-object problems.

    Raises ManifestError when the YAML itself cannot be parsed (the whole file is then kept at its
    last good content); an individual bad object is skipped and listed in the problems.
    """
    try:
        docs = list(yaml.load_all(text, Loader=_yaml_loader()))
    except yaml.YAMLError as exc:
        raise ManifestError(f"invalid YAML: {exc}") from None
    out: list[tuple[str, KubeObject]] = []
    problems: list[str] = []
    for i, doc in enumerate(_flatten(docs)):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            problems.append(f"document {i}: not a mapping")
            continue
        kind = KINGRESS if is_kingress(doc) else doc.get("kind")
        if kind not in KINDS or (kind == KINGRESS and doc.get("kind") != "Ingress"):
            continue
        meta = doc.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            problems.append(f"document {i} ({kind}): metadata.name is missing")
            continue
        if kind == "Ingress" and doc.get("apiVersion") not in INGRESS_APIS:
            problems.append(f"document {i} (Ingress {meta.get('name')}): unknown apiVersion {doc.get('apiVersion')!r}")
            continue
        if kind in GATEWAY_API_KINDS and kind != "Namespace" and doc.get("apiVersion") not in GATEWAY_APIS:
            problems.append(f"document {i} ({kind} {meta.get('name')}): unknown apiVersion {doc.get('apiVersion')!r}")
            continue
        shape = shape_problem(kind, doc)
        if shape:
            problems.append(f"document {i} ({kind} {meta.get('name')}): {shape}")
            continue
        if kind not in CLUSTER_SCOPED:
            meta.setdefault("namespace", "default")
        out.append((kind, doc))
    return out, problems


def _flatten(docs: Iterable[Any]) -> Iterable[Any]:
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            yield from doc["items"]
        else:
            yield doc


def _key(kind: str, obj: KubeObject) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (kind, str(meta.get("namespace") or ""), str(meta["name"]))


class FileSource:
    """Loads `directory` into `store` and keeps it in sync with the files."""

    def __init__(self, directory: str | Path, store: ClusterStore) -> None:
        self.directory = Path(directory)
        self.store = store
        self._by_file: dict[Path, dict[tuple[str, str, str], KubeObject]] = {}
        self._files_of: dict[tuple[str, str, str], set[Path]] = {}  # object -> the files defining it
        self._digests: dict[Path, bytes] = {}  # the content last parsed: an unchanged file is not parsed again
        self.watcher: Watcher | None = None

    def load_all(self) -> None:
        if not self.directory.is_dir():
            log.warning("cluster %s: %s is not a directory (yet): nothing is read from it until it is",
                        self.store.cluster_id, self.directory)  # fmt: skip
            self.store.status.state = "error"
            self.store.status.errors[str(self.directory)] = "not a directory"
            self.store.status_changed()
            return
        for path in _files_under(self.directory):
            self.load_file(path)
        self.store.mark_synced()

    def apply_changes(self, paths: Iterable[Path]) -> None:
        """Bring the objects in line with `paths` as they are now: files (present or gone) and
        directories, whose subtree is compared whole (files on disk and files known)."""
        files: set[Path] = set()
        root_back = False  # the directory was missing (at start, or removed) and is there again
        for path in paths:
            if path.suffix in SUFFIXES and not path.is_dir():
                files.add(path)
                continue
            files |= {f for f in self._by_file if f == path or path in f.parents}
            if path.is_dir():
                files |= set(_files_under(path))
                root_back |= path == self.directory and str(path) in self.store.status.errors
        for path in sorted(files):
            self.load_file(path)
        if root_back:
            self.store.status.errors.pop(str(self.directory), None)
            self.store.mark_synced()

    def load_file(self, path: Path) -> None:
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self.remove_file(path)
            return
        except (OSError, UnicodeDecodeError) as exc:
            self._digests.pop(path, None)
            self._error(path, f"cannot read: {exc}")
            return
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if self._digests.get(path) == digest:
            return  # the same bytes again (several events for one save, a rescan): same objects, same problems
        self._digests[path] = digest
        try:
            objects, problems = parse_manifests(text)
        except ManifestError as exc:
            self._error(path, str(exc))
            return
        fresh = {_key(kind, obj): obj for kind, obj in objects}
        if problems:
            self._error(path, "; ".join(problems))
        else:
            self.store.status.errors.pop(str(path), None)
        old = self._by_file.get(path, {})
        self._by_file[path] = fresh
        for key in old.keys() - fresh.keys():
            self._files_of[key].discard(path)
        for key in fresh:
            self._files_of.setdefault(key, set()).add(path)
        for key in old.keys() | fresh.keys():
            self._publish(key)

    def remove_file(self, path: Path) -> None:
        self._digests.pop(path, None)
        old = self._by_file.pop(path, {})
        self.store.status.errors.pop(str(path), None)
        for key in old:
            self._files_of[key].discard(path)
            self._publish(key)

    def _publish(self, key: tuple[str, str, str]) -> None:
        """Store the object as the files define it now. Defined in several files, the last file in
        path order wins, not the last one edited: a restart reads the same."""
        files = self._files_of.get(key)
        if not files:
            self._files_of.pop(key, None)
            self.store.delete(*key)
            return
        winner = max(files)
        if len(files) > 1:
            log.warning("cluster %s: %s %s/%s is defined in %d files; %s is used", self.store.cluster_id,
                        key[0], key[1], key[2], len(files), winner)  # fmt: skip
        self.store.upsert(key[0], self._by_file[winner][key])

    def _error(self, path: Path, message: str) -> None:
        log.warning("cluster %s: %s: %s", self.store.cluster_id, path, message)
        self.store.status.errors[str(path)] = message

    async def start(self) -> None:
        """Watch first, then read: a change made while the directory is read is reported again."""
        self.watcher = open_watcher(self.directory, self.apply_changes, SUFFIXES, on_failed=self._watch_by_polling)
        self.load_all()

    def _watch_by_polling(self) -> None:
        self.watcher = WatchfilesWatcher(self.directory, self.apply_changes, SUFFIXES)
        self.watcher.start()
        self.apply_changes({self.directory})  # whatever changed since inotify stopped covering the tree

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()


def _files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in SUFFIXES and p.is_file())
