"""A whole gateway in Kubernetes mode: fake API servers + `meridian serve --kubeconfig` + a real Envoy.

Like `tests/support/gateway.py`, but the sources are FakeKube servers speaking the real
list/watch protocol: one primary (the `--kubeconfig` cluster) and any number of remotes,
registered and unregistered at run time by applying/deleting their kubeconfig Secret in the
primary's namespace (made by `meridian create-remote-secret`'s own code). Echo backends
report `cluster` = the fake cluster's ID, so tests can see which cluster served a request.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from controlplane.devtools.echo import EchoServer
from controlplane.remote_secret import create_remote_secret, secret_name
from tests.fakekube import FakeKube
from tests.support.gateway import Gateway, _InProcess, service_manifests
from tests.support.wait import wait_until

NAMESPACE = "meridian-system"
PRIMARY = "primary"


class KubeGateway(Gateway):
    """Control plane (subprocess or in-process) watching FakeKube clusters, plus Envoy and echo pods."""

    def __init__(
        self,
        root: Path,
        remotes: Iterable[str] = (),
        *,
        in_process: bool = False,
        delta: bool = False,
        serve_args: Iterable[str] = ("--watch-ingress-without-class",),
        envoy: bool = True,
        bookmark_interval: float = 0.2,
        identity: str | None = None,
    ) -> None:
        super().__init__(root, clusters=(), in_process=in_process, delta=delta, serve_args=serve_args, envoy=envoy)
        self.root.mkdir(parents=True, exist_ok=True)
        self.kubes: dict[str, FakeKube] = {PRIMARY: FakeKube(bookmark_interval=bookmark_interval)}
        for cid in remotes:
            self.kubes[cid] = FakeKube(bookmark_interval=bookmark_interval)
        self.kubeconfig_path = self.root / "primary.kubeconfig"
        # Pod name (leader election identity) and API server user of this control plane; None: admin.
        self.identity = identity

    # -- lifecycle -------------------------------------------------------------
    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "controlplane", "serve",
                "--kubeconfig", str(self.kubeconfig_path), "--cluster-id", PRIMARY, "--namespace", NAMESPACE]
        args += super().argv()[4:]
        return args

    def start_control_plane(self) -> None:
        if self.in_process:
            from controlplane.app import ServeOptions

            opts = ServeOptions(
                kubeconfig=str(self.kubeconfig_path), cluster_id=PRIMARY, namespace=NAMESPACE,
                xds_address=f"127.0.0.1:{self.xds_port}", admin_address=f"127.0.0.1:{self.admin_port}",
                listen_address="127.0.0.1", http_port=self.http_port, https_port=self.https_port,
                east_west_port=self.east_west_port, watch_ingress_without_class=True, publish_address="127.0.0.1",
                state_dir=str(self.state_dir),
            )  # fmt: skip
            self.inproc = _InProcess(opts)
            wait_until(lambda: self.admin_status("/readyz") == 200, timeout=30, message="control plane not ready")
        else:
            super().start_control_plane()

    def start(self) -> KubeGateway:
        for fk in self.kubes.values():
            if not fk.running:
                fk.start()
        self._write_kubeconfig()
        super().start()
        return self

    def _write_kubeconfig(self) -> None:
        primary = self.kubes[PRIMARY]
        token = None
        if self.identity is not None:
            token = primary.add_user(self.identity)  # FakeKube logs its writes under this name
            self.env["POD_NAME"] = self.identity  # as the downward API sets it in the chart
        primary.kubeconfig(str(self.kubeconfig_path), token=token)

    def replica(self, name: str) -> KubeGateway:
        """Another `meridian serve` replica on the same fake clusters: pod and API user `name`."""
        other = super().replica(name)
        assert isinstance(other, KubeGateway)
        other.identity = name
        other.kubeconfig_path = self.root / f"{name}.kubeconfig"
        return other

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.owns_shared:
                for fk in self.kubes.values():
                    fk.close()

    def add_cluster(self, cluster_id: str) -> FakeKube:
        """A new fake cluster (not registered yet; see `register`)."""
        fk = FakeKube(bookmark_interval=self.kubes[PRIMARY].bookmark_interval).start()
        self.kubes[cluster_id] = fk
        return fk

    # -- remote clusters -------------------------------------------------------------
    def register(self, cluster_id: str, *, wait: bool = True) -> dict[str, Any]:
        """Apply the Secret `meridian create-remote-secret` makes for this cluster into the primary."""
        text = create_remote_secret(self.kubes[cluster_id].kubeconfig(), cluster_id, NAMESPACE)
        obj = self.kubes[PRIMARY].apply(yaml.safe_load(text))
        if wait:
            self.wait_cluster_state(cluster_id, "synced")
        return obj

    def unregister(self, cluster_id: str, *, wait: bool = True) -> None:
        assert self.kubes[PRIMARY].delete("Secret", NAMESPACE, secret_name(cluster_id)), "no such Secret"
        if wait:
            wait_until(lambda: cluster_id not in self.cluster_states(), timeout=15,
                       message=f"cluster {cluster_id} never went away")  # fmt: skip

    def cluster_states(self) -> dict[str, str]:
        return {c["cluster"]: c["state"] for c in self.admin("/debug/clusters") if "objects" in c}

    def wait_cluster_state(self, cluster_id: str, state: str, timeout: float = 20) -> None:
        wait_until(lambda: self.cluster_states().get(cluster_id) == state, timeout=timeout,
                   message=f"cluster {cluster_id} never became {state}")  # fmt: skip

    # -- objects -------------------------------------------------------------------
    def apply(self, objs: Iterable[Mapping[str, Any]] | Mapping[str, Any], cluster: str = PRIMARY) -> None:
        for obj in [objs] if isinstance(objs, Mapping) else objs:
            self.kubes[cluster].apply(obj)

    def delete(self, kind: str, name: str, *, namespace: str = "default", cluster: str = PRIMARY) -> bool:
        return self.kubes[cluster].delete(kind, namespace, name)

    def write(self, filename: str, objs: Iterable[Mapping[str, Any]] | str, cluster: str = PRIMARY) -> Path:
        """File-mode compatibility: `objs` are applied to the cluster (the file name is ignored)."""
        items = yaml.safe_load_all(objs) if isinstance(objs, str) else objs
        self.apply([o for o in items if o], cluster)
        return self.root / filename

    def backend(
        self,
        service: str,
        *,
        namespace: str = "default",
        cluster: str = PRIMARY,
        replicas: int = 1,
        port: int = 80,
        port_name: str = "http",
        annotations: Mapping[str, str] | None = None,
        ready: Iterable[bool] | None = None,
        **knobs: Any,
    ) -> list[EchoServer]:
        """Start echo pods (their `cluster` is the fake cluster ID) and publish Service + slices there."""
        servers = [
            self.fleet.add(service=service, pod=f"{service}-{cluster}-{i}", namespace=namespace, cluster=cluster,
                           **knobs)
            for i in range(replicas)
        ]
        self.publish(service, servers, namespace=namespace, cluster=cluster, port=port, port_name=port_name,
                     ready=ready, annotations=annotations)  # fmt: skip
        return servers

    def publish(
        self,
        service: str,
        servers: Iterable[EchoServer],
        *,
        namespace: str = "default",
        cluster: str = PRIMARY,
        port: int = 80,
        port_name: str = "http",
        ready: Iterable[bool] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Service + one EndpointSlice per echo pod; slices beyond the new count are deleted."""
        servers = list(servers)
        objs = service_manifests(service, servers, namespace=namespace, port=port, port_name=port_name,
                                 ready=ready, annotations=annotations)  # fmt: skip
        fk = self.kubes[cluster]
        fk.apply(objs[0])
        names = set()
        for s in objs[1:]:
            names.add(s["metadata"]["name"])
            fk.apply(s)
        for old in fk.objects("EndpointSlice"):
            meta = old["metadata"]
            if (meta.get("namespace") == namespace and meta["name"] not in names
                    and (meta.get("labels") or {}).get("kubernetes.io/service-name") == service):
                fk.delete("EndpointSlice", namespace, meta["name"])

    def unpublish(self, service: str, *, namespace: str = "default", cluster: str = PRIMARY) -> None:
        fk = self.kubes[cluster]
        fk.delete("Service", namespace, service)
        for old in fk.objects("EndpointSlice"):
            meta = old["metadata"]
            if meta.get("namespace") == namespace and (meta.get("labels") or {}).get(
                "kubernetes.io/service-name"
            ) == service:
                fk.delete("EndpointSlice", namespace, meta["name"])

    # -- traffic -------------------------------------------------------------------
    def clusters_served(self, host: str, n: int, path: str = "/") -> dict[str, int]:
        """Send `n` requests; count the answering echo pods' clusters (non-200 counted as 'status:<code>')."""
        counts: dict[str, int] = {}
        for _ in range(n):
            r = self.get(host, path)
            key = str(r.json().get("cluster")) if r.status == 200 else f"status:{r.status}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def wait_clusters_served(self, host: str, want: set[str], n: int = 30, timeout: float = 20) -> dict[str, int]:
        """Until `n` requests are answered by exactly the clusters in `want` (all 200)."""
        return wait_until(lambda: (c := self.clusters_served(host, n)) and set(c) == want and c, timeout=timeout,
                          message=f"{host} never served by exactly {sorted(want)}")  # fmt: skip

    def nacks(self) -> list[Any]:
        return [t["last_nack"] for s in self.admin("/debug/syncz") for t in s["types"].values() if t["last_nack"]]
