"""Manifest files are validated by no API server: fields of the wrong type are refused where they are
read, with the field named, and never reach the build (where one object would fail every snapshot)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controlplane.offline import snapshot_dict, translate_paths
from controlplane.sources.files import parse_manifests


def _service(spec: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "d"}, "spec": spec}


def _slice(**fields: object) -> dict[str, object]:
    meta = {"name": "s-1", "namespace": "d", "labels": {"kubernetes.io/service-name": "s"}}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta, "addressType": "IPv4",
            **fields}  # fmt: skip


def _ingress(spec: object) -> dict[str, object]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i", "namespace": "d"},
            "spec": spec}  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (_service({"ports": "80"}), "spec.ports: expected a list, got a string"),
        (_service({"ports": ["http"]}), "spec.ports[0]: expected a mapping, got a string"),
        (_service({"ports": [{"port": [80]}]}), "spec.ports[0].port: expected a number or a string, got a list"),
        (_service("ClusterIP"), "spec: expected a mapping, got a string"),
        (_slice(endpoints={"addresses": ["10.0.0.1"]}), "endpoints: expected a list, got a mapping"),
        (_slice(endpoints=[{"addresses": "10.0.0.1"}]), "endpoints[0].addresses: expected a list, got a string"),
        (_slice(ports=[{"port": True}]), "ports[0].port: expected a number or a string, got bool"),
        (_slice(ports=[{"port": -1}]), "ports[0].port: port -1 is not in 1..65535"),
        (_slice(ports=[{"port": 70000}]), "ports[0].port: port 70000 is not in 1..65535"),
        (_service({"ports": [{"port": "65536"}]}), "spec.ports[0].port: port 65536 is not in 1..65535"),
        ({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t", "namespace": "d"}, "data": "x"},
         "data: expected a mapping, got a string"),
        ({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
          "metadata": {"name": "i", "namespace": "d", "annotations": ["a"]}, "spec": {}},
         "metadata.annotations: expected a mapping, got a list"),
        (_ingress({"rules": "notalist"}), "spec.rules: expected a list, got a string"),
        (_ingress({"rules": [{"host": "a.example", "http": "x"}]}),
         "spec.rules[0].http: expected a mapping, got a string"),
        (_ingress({"tls": [{"hosts": "c.example", "secretName": "c"}]}),
         "spec.tls[0].hosts: expected a list, got a string"),
    ],
)
def test_wrong_field_types_are_refused_with_the_field_named(doc: dict[str, object], problem: str) -> None:
    objects, problems = parse_manifests(yaml.safe_dump(doc))
    assert objects == []
    assert len(problems) == 1 and problems[0].endswith(problem), problems


def test_well_typed_objects_pass() -> None:
    docs = [_service({"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
            _slice(ports=[{"name": "http", "port": 8080}],
                   endpoints=[{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}])]  # fmt: skip
    objects, problems = parse_manifests(yaml.safe_dump_all(docs))
    assert problems == [] and [kind for kind, _ in objects] == ["Service", "EndpointSlice"]


def test_a_bad_service_leaves_the_others_translated(tmp_path: Path) -> None:
    good = _service({"ports": [{"name": "http", "port": 80}]})
    good["metadata"] = {"name": "web", "namespace": "d"}
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(good))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(_service({"ports": "80"})))
    doc = snapshot_dict(translate_paths([tmp_path]).resources)  # raised AttributeError before
    assert [c["name"] for c in doc["CDS"]] == ["d/web:80"]
