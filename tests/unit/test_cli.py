"""The `meridian` command as users run it: a subprocess, real Envoy validation, a real fake API server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from controlplane.sources.kube import api_client_from_kubeconfig
from controlplane.sources.remote import CLUSTER_LABEL
from tests.fakekube import FakeKube
from tests.support.gateway import ingress, rule
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
ENVOY = REPO / ".venv" / "bin" / "envoy"


def meridian(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "controlplane", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    if check:
        assert proc.returncode == 0, f"meridian {' '.join(args)} failed: {proc.stderr}"
    return proc


@pytest.mark.parametrize(
    ("output", "flags", "delta"),
    [
        ("yaml", [], True),
        ("json", [], True),
        ("yaml", ["--sotw"], False),
        ("yaml", ["--delta"], True),
        ("yaml", ["--envoy-stats", "full"], True),
        ("yaml", ["--clusters", "on-demand"], True),
    ],
    ids=["yaml", "json", "sotw", "delta-alias", "full-stats", "on-demand"],
)
def test_bootstrap_is_accepted_by_envoy(tmp_path: Path, output: str, flags: list[str], delta: bool) -> None:
    """Delta ADS unless --sotw; --delta is still accepted (it was the opt-in before Delta was the default).
    Envoy's stats are the gateway set unless --envoy-stats full."""
    args = ["bootstrap", "--xds-address", "127.0.0.1:18000", "--node-id", "gw-7", "--node-cluster", "edge"]
    args += ["--admin-port", "0", "-o", output, *flags]
    text = meridian(*args).stdout
    doc = json.loads(text) if output == "json" else yaml.safe_load(text)
    assert doc["node"] == {"id": "gw-7", "cluster": "edge"} or (
        doc["node"]["id"] == "gw-7" and doc["node"]["cluster"] == "edge"
    )
    ads = doc["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == ("DELTA_GRPC" if delta else "GRPC")
    full = "full" in flags
    assert ("stats_config" in doc, "deferred_stat_options" in doc) == (not full, not full)
    on_demand = "on-demand" in flags
    assert doc["node"].get("metadata") == ({"meridian.clusters": "on-demand"} if on_demand else None)
    path = tmp_path / f"bootstrap.{output}"
    path.write_text(text)
    proc = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"envoy rejected the bootstrap: {proc.stdout}{proc.stderr}"
    assert "OK" in proc.stdout


def test_bootstrap_refuses_on_demand_clusters_with_sotw() -> None:
    """Envoy asks for an on-demand cluster by name, which only Delta carries: a clear error, no bootstrap."""
    proc = meridian("bootstrap", "--node-id", "gw", "--sotw", "--clusters", "on-demand", check=False)
    assert proc.returncode != 0
    assert not proc.stdout
    assert "--clusters on-demand needs Delta" in proc.stderr


@pytest.mark.parametrize(
    ("addresses", "kind"),
    [
        (["127.0.0.1:18000", "127.0.0.2:18001"], "STATIC"),
        (["meridian-xds.meridian-system.svc.cluster.local:18000", "127.0.0.1:18001"], "STRICT_DNS"),
    ],
    ids=["ips", "dns"],
)
def test_bootstrap_repeated_xds_address_gives_one_endpoint_each(
    tmp_path: Path, addresses: list[str], kind: str
) -> None:
    """Control plane replicas: each --xds-address is an endpoint of the one xDS cluster, in order."""
    args = ["bootstrap", "--node-id", "gw-7", "--admin-port", "0"]
    for address in addresses:
        args += ["--xds-address", address]
    text = meridian(*args).stdout
    (xds,) = yaml.safe_load(text)["static_resources"]["clusters"]
    assert xds["type"] == kind
    (locality,) = xds["load_assignment"]["endpoints"]
    got = [e["endpoint"]["address"]["socket_address"] for e in locality["lb_endpoints"]]
    want = [{"address": a.rsplit(":", 1)[0], "port_value": int(a.rsplit(":", 1)[1])} for a in addresses]
    assert got == want
    path = tmp_path / "bootstrap.yaml"
    path.write_text(text)
    proc = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, f"envoy rejected the bootstrap: {proc.stdout}{proc.stderr}"


def test_bootstrap_sotw_and_delta_are_exclusive() -> None:
    proc = meridian("bootstrap", "--node-id", "x", "--sotw", "--delta", check=False)
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_bootstrap_garbage_address_fails_validation(tmp_path: Path) -> None:
    """The validation above can fail: a bootstrap pointing at a non-address is rejected by Envoy."""
    doc = yaml.safe_load(meridian("bootstrap", "--node-id", "x").stdout)
    doc["static_resources"] = {"clusters": [{"name": "broken", "connect_timeout": "-1s"}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path)], capture_output=True, timeout=60)
    assert proc.returncode != 0


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    d.mkdir()
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": True}}],
    }
    ing = ingress(
        "store",
        [rule("shop.example.com", ("/cart", "Prefix", "web", 80))],
        namespace="shop",
        ingress_class="nginx",
        annotations={
            "nginx.ingress.kubernetes.io/rewrite-target": "/",
            "nginx.ingress.kubernetes.io/proxy-buffer-size": "16k",
            "nginx.ingress.kubernetes.io/server-snippet": "return 200;",
            "nginx.ingress.kubernetes.io/hsts": "true",
            "nginx.ingress.kubernetes.io/ssl-redirect": "maybe",
        },
    )
    (d / "app.yaml").write_text(yaml.safe_dump_all([svc, slice_, ing]))
    return d


def _names(doc: dict[str, list[dict[str, object]]], short: str) -> set[str]:
    return {str(r.get("name") or r.get("cluster_name")) for r in doc[short]}


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_translate_outputs_parse_and_name_the_resources(manifests: Path, output: str) -> None:
    text = meridian("translate", "-f", str(manifests), "-o", output).stdout
    doc = json.loads(text) if output == "json" else yaml.safe_load(text)
    assert set(doc) == {"CDS", "EDS", "LDS", "SRDS", "RDS", "SDS"}
    assert "shop/web:80" in _names(doc, "CDS")
    assert "shop/web:80" in _names(doc, "EDS")
    eds = next(r for r in doc["EDS"] if r["cluster_name"] == "shop/web:80")
    addr = eds["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (addr["address"], addr["port_value"]) == ("10.0.0.7", 8080)
    domains = {d for rc in doc["RDS"] for vh in rc.get("virtual_hosts", []) for d in vh.get("domains", [])}
    assert "shop.example.com" in domains
    assert len(doc["LDS"]) >= 1


def test_translate_file_argument_and_class_filter(manifests: Path) -> None:
    one = meridian("translate", "-f", str(manifests / "app.yaml"), "-o", "json").stdout
    assert "shop/web:80" in _names(json.loads(one), "CDS")
    # Only class "other" is translated: the "nginx" Ingress produces no virtual host.
    filtered = json.loads(meridian("translate", "-f", str(manifests), "-o", "json", "--ingress-class", "other").stdout)
    domains = {d for rc in filtered["RDS"] for vh in rc.get("virtual_hosts", []) for d in vh.get("domains", [])}
    assert "shop.example.com" not in domains
    # Naming classes also drops Ingresses that name none (as `serve` does without
    # --watch-ingress-without-class).
    text = (manifests / "app.yaml").read_text()
    assert "  ingressClassName: nginx\n" in text
    (manifests / "app.yaml").write_text(text.replace("  ingressClassName: nginx\n", ""))
    out = meridian("translate", "-f", str(manifests), "-o", "json", "--ingress-class", "nginx").stdout
    only_nginx = json.loads(out)
    domains = {d for rc in only_nginx["RDS"] for vh in rc.get("virtual_hosts", []) for d in vh.get("domains", [])}
    assert "shop.example.com" not in domains
    everything = json.loads(meridian("translate", "-f", str(manifests), "-o", "json").stdout)
    domains = {d for rc in everything["RDS"] for vh in rc.get("virtual_hosts", []) for d in vh.get("domains", [])}
    assert "shop.example.com" in domains


def test_translate_says_which_manifest_it_left_out_and_exits_1(manifests: Path) -> None:
    """A file that does not parse (or a document with fields of the wrong type) is left out of the output:
    the rest is still printed, the file is named on stderr, and the exit status is 1, so a script does not
    take a partial translation for the whole one."""
    (manifests / "broken.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a\n")
    for extra in (["-o", "json"], ["--report"]):
        proc = meridian("translate", "-f", str(manifests), *extra, check=False)
        assert proc.returncode == 1, proc.stderr
        assert f"meridian translate: {manifests / 'broken.yaml'}: invalid YAML" in proc.stderr
        assert "shop.example.com" in proc.stdout  # the readable manifests are still translated
    (manifests / "broken.yaml").unlink()
    assert meridian("translate", "-f", str(manifests), "--report", check=False).returncode == 0


def test_translate_report_lists_every_annotation(manifests: Path) -> None:
    out = meridian("translate", "-f", str(manifests), "--report").stdout
    lines = out.splitlines()
    assert lines[0].startswith("local/shop/store") and "[served]" in lines[0] and "shop.example.com" in lines[0]

    def level_of(key: str) -> str:
        found = [line.split()[0] for line in lines[1:] if len(line.split()) > 1 and line.split()[1] == key]
        assert found, f"{key} missing from the report:\n{out}"
        return found[0]

    assert level_of("rewrite-target") == "converted"
    assert level_of("proxy-buffer-size") == "not-applicable"
    assert level_of("server-snippet") == "unsupported"
    assert level_of("hsts") == "unknown"
    assert level_of("ssl-redirect") == "warning"
    assert "maybe" in next(line for line in lines if "ssl-redirect" in line)


def test_translate_missing_path_fails(tmp_path: Path) -> None:
    """A mistyped path is an error (exit 2, the path named), not an empty configuration."""
    proc = meridian("translate", "-f", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"{tmp_path / 'nope'}: no such file or directory" in proc.stderr


def test_translate_takes_several_paths_after_one_flag(manifests: Path) -> None:
    """`-f PATH...` (the design's form) and repeated `-f` read the same manifests."""
    docs = list(yaml.safe_load_all((manifests / "app.yaml").read_text()))
    files = []
    for i, doc in enumerate(docs):  # the Service, its EndpointSlice and the Ingress: one file each
        files.append(str(manifests.parent / f"part-{i}.yaml"))
        Path(files[-1]).write_text(yaml.safe_dump(doc))
    whole = meridian("translate", "-f", str(manifests)).stdout
    assert meridian("translate", "-f", *files).stdout == whole
    assert meridian("translate", *[a for f in files for a in ("-f", f)]).stdout == whole
    assert "shop/web:80" in whole


def test_create_remote_secret_works_against_a_fake_api_server(tmp_path: Path) -> None:
    with FakeKube() as kube:
        kube.apply(ingress("seen", [rule("r.example.com", ("/", "Prefix", "web", 80))], namespace="team"))
        path = tmp_path / "remote.kubeconfig"
        kube.kubeconfig(str(path), context="east-ctx")
        out = meridian("create-remote-secret", "--kubeconfig", str(path), "--cluster-id", "east").stdout
        secret = yaml.safe_load(out)
        assert secret["kind"] == "Secret" and secret["apiVersion"] == "v1"
        assert secret["metadata"]["namespace"] == "meridian-system"
        assert secret["metadata"]["labels"][CLUSTER_LABEL] == "true"
        kubeconfig = secret["stringData"]["east"]
        api = k8s.NetworkingV1Api(api_client_from_kubeconfig(kubeconfig))
        names = [i.metadata.name for i in api.list_ingress_for_all_namespaces().items]
        assert names == ["seen"]
        # A wrong token is refused: the kubeconfig's credentials are what made the call work.
        bad = yaml.safe_load(kubeconfig)
        bad["users"][0]["user"]["token"] = "wrong"
        with pytest.raises(k8s.ApiException) as exc:
            k8s.NetworkingV1Api(api_client_from_kubeconfig(yaml.safe_dump(bad))).list_ingress_for_all_namespaces()
        assert exc.value.status == 401


def test_create_remote_secret_namespace_and_invalid_id(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    out = yaml.safe_load(
        meridian("create-remote-secret", "--kubeconfig", str(path), "--cluster-id", "west", "--namespace", "gw").stdout
    )
    assert out["metadata"]["namespace"] == "gw"
    assert "west" in out["stringData"]
    bad = meridian("create-remote-secret", "--kubeconfig", str(path), "--cluster-id", "not/valid!", check=False)
    assert bad.returncode != 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "e={examples}/east", "--cluster", "e={examples}/west"], "cluster id 'e' is given twice"),
        (["--cluster", "e={examples}/east/shop.yaml"], "is not a directory"),
        ([], "nothing to watch: give --cluster"),
        (["--cluster", "e={examples}/east", "--http-port", "70000"], "port must be 0..65535"),
        (["--cluster", "e={examples}/east", "--east-west-port", "-1"], "port must be 0..65535"),
        (["--cluster", "e={examples}/east", "--xds-address", "127.0.0.1:99999"], "expected HOST:PORT"),
        (["--cluster", "e={examples}/east", "--listen-address", "gateway.local"], "expected an IP address"),
        (["--cluster", "e={examples}/east", "--history-size", "0"], "must be at least 1"),
        (["--cluster", "e={examples}/east", "--lease-duration", "0"], "must be more than 0"),
        (["--cluster", "e={examples}/east", "--lease-renew-interval", "30"], "must be shorter than --lease-duration"),
        (["--cluster", "e={examples}/east", "--rollback-max-age", "-1"], "must be 0 or more"),
        (["--cluster", "e={examples}/east", "--kubeconfig", "{tmp}/missing"], "--kubeconfig {tmp}/missing: no such"),
        (["--cluster", "e={examples}/east", "--admin-token-file", "{tmp}/no/token"], "--admin-token-file"),
    ],
    ids=["same-id", "file-not-dir", "no-source", "port-high", "port-negative", "address-port",
         "listen-name", "history-size", "lease", "renew", "max-age", "kubeconfig", "token-file"],
)
def test_serve_refuses_bad_flags_with_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    """Each bad value is refused before anything starts: exit 2, the flag named, no traceback."""
    filled = [a.format(examples=REPO / "examples" / "clusters", tmp=tmp_path) for a in args]
    own = ["--state-dir", str(tmp_path / "state"), "--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"]
    proc = meridian("serve", *own, *filled, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message.format(tmp=tmp_path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_names_the_flag_whose_port_is_taken(tmp_path: Path) -> None:
    """A port already in use ends the process with one line naming the flag, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = meridian("serve", "--cluster", f"e={REPO / 'examples' / 'clusters' / 'east'}",
                        "--state-dir", str(tmp_path / "state"), "--xds-address", "127.0.0.1:0",
                        "--admin-address", f"127.0.0.1:{port}", check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"meridian serve: cannot listen on --admin-address 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bootstrap", "--node-id", "gw", "--admin-port", "70000"], "port must be 0..65535"),
        (["bootstrap", "--node-id", "gw", "--xds-address", "127.0.0.1:0"], "expected HOST:PORT with a port 1..65535"),
        (["bootstrap", "--node-id", ""], "--node-id: must not be empty"),
        (["bootstrap", "--node-id", "gw", "--xds-insecure", "--xds-token-file", "{tmp}/none"], "--xds-token-file"),
        (["create-remote-secret", "--kubeconfig", "{tmp}/none", "--cluster-id", "w"], "--kubeconfig {tmp}/none"),
        (["history", "--server", "http://127.0.0.1:{port}"], "cannot reach Meridian's admin API"),
        (["rollback", "3", "--server", "http://127.0.0.1:{port}", "--admin-token-file", "{token}"],
         "cannot reach Meridian's admin API"),
    ],
    ids=["admin-port", "xds-port", "node-id", "token-file", "kubeconfig", "history-down", "rollback-down"],
)
def test_client_commands_refuse_bad_input_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    token = tmp_path / "token"
    token.write_text("t\n")
    filled = [a.format(tmp=tmp_path, port=port, token=token) for a in args]
    proc = meridian(*filled, check=False)
    assert proc.returncode in (1, 2), proc.stderr
    assert message.format(tmp=tmp_path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_says_when_a_cluster_directory_does_not_exist_yet(tmp_path: Path) -> None:
    """A missing directory is not refused (it is read once it exists) but said at start, not silently."""
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane", "serve", "--cluster", f"later={tmp_path / 'later'}",
             "--state-dir", str(tmp_path / "state"), "--xds-address", "127.0.0.1:0",
             "--admin-address", "127.0.0.1:0"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: "admin on port" in log.read_text(), timeout=30, message="serve never started")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"cluster later: {tmp_path / 'later'} is not a directory (yet)" in log.read_text()


def test_server_addresses_accepted_as_before() -> None:
    """The checks refuse only what never worked: ':PORT' (every interface), a bare host, [v6]:0 still parse."""
    from controlplane.cli import build_parser

    for address in (":19000", "localhost", "[::1]:0", "0.0.0.0:19000"):
        args = build_parser().parse_args(["serve", "--cluster", "e=.", "--admin-address", address])
        assert args.admin_address == address


def test_bootstrap_says_when_it_makes_the_ca_itself(tmp_path: Path) -> None:
    """A mistyped --state-dir (or bootstrap before serve) makes a CA there: said on stderr, once."""
    first = meridian("bootstrap", "--node-id", "gw", "--state-dir", str(tmp_path / "typo"))
    assert f"no xDS CA in {tmp_path / 'typo'} yet: made one there" in first.stderr
    assert yaml.safe_load(first.stdout)["node"]["id"] == "gw"
    again = meridian("bootstrap", "--node-id", "gw", "--state-dir", str(tmp_path / "typo"))
    assert "no xDS CA" not in again.stderr


def test_serve_says_which_api_server_it_cannot_reach(tmp_path: Path) -> None:
    """Kubernetes mode with the API server down at start: one last line naming the kubeconfig and the
    failure (exit 1), not only a traceback."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t0ken-never-logged"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    proc = meridian("serve", "--kubeconfig", str(kubeconfig), "--state-dir", str(tmp_path / "state"),
                    "--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"meridian serve: cannot read the history and rollback pin from the Kubernetes API "
                           f"server of {kubeconfig}"), last  # fmt: skip
    assert "Connection refused" in last and "t0ken-never-logged" not in proc.stderr


def test_output_cut_short_by_the_reader_is_not_a_traceback(
    manifests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meridian translate -f DIR | head`: a reader that closed the pipe ends the command quietly (exit 0)."""
    from controlplane.cli import main

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: every write fails with EPIPE
    closed = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert main(["translate", "-f", str(manifests)]) == 0
        closed.flush()  # stdout now points at /dev/null: nothing left to fail at exit
    finally:
        closed.close()
