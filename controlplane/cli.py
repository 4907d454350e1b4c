"""The `meridian` command: serve, bootstrap, translate, create-remote-secret."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from controlplane import cli_checks as check
from controlplane.history import cli as history_cli

if TYPE_CHECKING:
    from controlplane.app import ServeOptions
    from controlplane.bootstrap import XdsClientTls


def _cluster_arg(value: str) -> tuple[str, str]:
    cluster_id, sep, directory = value.partition("=")
    if not sep or not cluster_id or not directory:
        raise argparse.ArgumentTypeError("expected ID=DIR")
    return cluster_id, directory


HISTORY_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meridian", description="Multi-cluster Ingress control plane for Envoy")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the control plane")
    s.add_argument(
        "--cluster",
        action="append",
        type=_cluster_arg,
        default=[],
        metavar="ID=DIR",
        help="a directory of manifests acting as one cluster (repeatable)",
    )
    s.add_argument("--kubeconfig", help="primary Kubernetes cluster (default: in-cluster config when no --cluster)")
    s.add_argument("--cluster-id", default="primary", help="id of the primary Kubernetes cluster")
    s.add_argument("--namespace", default="meridian-system", help="Meridian's namespace (remote cluster Secrets)")
    s.add_argument("--xds-address", type=_server_address, default="127.0.0.1:18000", metavar="HOST:PORT")
    s.add_argument("--admin-address", type=_server_address, default="127.0.0.1:19000", metavar="HOST:PORT")
    s.add_argument("--listen-address", type=check.listen_address, default="0.0.0.0",
                   help="IP address of the gateway listeners")  # fmt: skip
    s.add_argument("--http-port", type=check.listener_port, default=8080)
    s.add_argument("--https-port", type=check.listener_port, default=8443)
    s.add_argument("--public-https-port", type=check.port, default=443,
                   help="HTTPS port clients use, named in ssl-redirect Locations (omitted when 443)")  # fmt: skip
    s.add_argument("--east-west-port", type=check.listener_port, default=15080)
    s.add_argument("--default-ssl-certificate", type=_secret_ref, default=None, metavar="NAMESPACE/NAME",
                   help="TLS Secret (primary cluster) served to hosts without a usable certificate of their own and "
                   "to unknown SNI, as ingress-nginx's flag (default: a generated self-signed certificate, kept in "
                   "--state-dir in file mode; in Kubernetes mode the Secret meridian-default-certificate in "
                   "--namespace, which the leader creates if absent)")  # fmt: skip
    s.add_argument(
        "--ingress-class",
        action="append",
        default=None,
        metavar="NAME",
        help="accepted ingress class name (repeatable; default: meridian)",
    )
    s.add_argument("--watch-ingress-without-class", action="store_true")
    s.add_argument("--log-level", dest="serve_log_level", choices=["debug", "info", "warning", "error"],
                   help="same as the global --log-level")  # fmt: skip
    s.add_argument("--publish-address", help="address written to Ingress status")
    s.add_argument("--publish-service", metavar="NS/NAME", help="Service whose address goes to Ingress status")
    s.add_argument("--knative-public-service", metavar="NS/NAME|DNS",
                   help="the north-south gateway Service (NS/NAME, or its DNS name), written to KIngress "
                        "status.publicLoadBalancer")  # fmt: skip
    s.add_argument("--knative-private-service", metavar="NS/NAME|DNS",
                   help="the Service in front of the east-west listener (NS/NAME, or its DNS name), written "
                        "to KIngress status.privateLoadBalancer")  # fmt: skip
    s.add_argument(
        "--route-partitions",
        type=_partitions,
        default=None,
        metavar="auto|N",
        help="split each listener's route table into N host-hash partitions so one change costs Envoy "
        "about 1/N of the table (default auto: one table below 1,000 hosts, then ~25 hosts each)",
    )
    s.add_argument("--lease-duration", type=check.positive_float, default=15.0,
                   help="leader election lease duration (seconds)")  # fmt: skip
    s.add_argument("--lease-renew-interval", type=check.positive_float, default=5.0,
                   help="leader lease renew interval (seconds)")  # fmt: skip
    _xds_security_args(s)
    history_cli.add_serve_flags(s)

    b = sub.add_parser("bootstrap", help="print an Envoy bootstrap (ADS over gRPC)")
    b.add_argument("--xds-address", action="append", type=_xds_endpoint, default=None, metavar="HOST:PORT",
                   help="control plane xDS address (repeatable: one endpoint per control plane replica; "
                   "default 127.0.0.1:18000)")  # fmt: skip
    b.add_argument("--node-id", type=check.non_empty, required=True)
    b.add_argument("--node-cluster", type=check.non_empty, default="meridian-gateway")
    b.add_argument("--admin-port", type=check.listener_port, default=9901)
    api = b.add_mutually_exclusive_group()
    api.add_argument(
        "--sotw",
        action="store_true",
        help="State-of-the-World ADS instead of Delta (the default): changes re-send whole types",
    )
    api.add_argument("--delta", action="store_true", help="Delta ADS (the default; kept for old scripts)")
    b.add_argument(
        "--envoy-stats",
        choices=["gateway", "full"],
        default="gateway",
        help="gateway (default): only the stats dashboards use, so 10,000 Services cost Envoy far less memory; "
        "full: every stat Envoy has",
    )
    b.add_argument(
        "--clusters",
        choices=["all", "on-demand"],
        default="all",
        help="all (default): every Service's cluster up front; on-demand: only those needed before any "
        "request, a Service's cluster fetched on its first request (less Envoy memory at thousands of "
        "Services, a few ms more on each Service's first request; needs Delta)",
    )
    b.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    b.add_argument("--xds-ca", metavar="FILE", help="CA that signed Meridian's server certificate (default: state dir)")
    b.add_argument("--xds-cert", metavar="FILE", help="client certificate (default: issued from the state dir's CA)")
    b.add_argument("--xds-key", metavar="FILE", help="client certificate's private key")
    b.add_argument("--xds-token-file", metavar="FILE",
                   help="authenticate with this service-account token (sent as gRPC metadata) instead of a "
                   "client certificate; Envoy reads it once, at start")  # fmt: skip
    b.add_argument("--xds-server-name", metavar="NAME", help="SNI and expected server SAN (default: the xDS host)")
    b.add_argument("--state-dir", default=None, metavar="DIR",
                   help="Meridian's local CA (default: $XDG_CACHE_HOME/meridian or ~/.cache/meridian)")  # fmt: skip
    b.add_argument("--xds-insecure", action="store_true", help="plaintext, for a server run with --xds-insecure")

    t = sub.add_parser("translate", help="print the Envoy resources for manifests, offline")
    t.add_argument("-f", "--filename", action="extend", nargs="+", type=_existing_path, required=True,
                   metavar="PATH", help="a manifest file or a directory of them (repeatable: -f A -f B or -f A B)")
    t.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    t.add_argument("--report", action="store_true", help="print what was converted, warned, rejected")
    t.add_argument("--default-ssl-certificate", type=_secret_ref, default=None, metavar="NAMESPACE/NAME",
                   help="a TLS Secret of the manifests served as the default certificate (as `serve`; without it "
                   "the output has no default certificate)")  # fmt: skip
    t.add_argument("--to", choices=["envoy", "gateway-api"], default="envoy",
                   help="envoy: the Envoy resources (default); gateway-api: Gateway API objects for the Ingresses")
    t.add_argument("--verify", action="store_true",
                   help="with --to gateway-api: serve the Ingresses and the exported objects side by side through "
                        "two real Envoys, replay requests derived from every rule against both and print a verdict "
                        "per Ingress (with --report: every difference); exit 1 when any Ingress answers differently")
    t.add_argument("--gateway-namespace", default="default", metavar="NS",
                   help="namespace of the Gateway --to gateway-api writes (default: default)")  # fmt: skip
    t.add_argument(
        "--ingress-class",
        action="append",
        default=None,
        metavar="NAME",
        help="translate only Ingresses of these classes (default: all)",
    )

    r = sub.add_parser("create-remote-secret", help="print a Secret that registers a remote cluster")
    r.add_argument("--kubeconfig", required=True)
    r.add_argument("--cluster-id", required=True)
    r.add_argument("--namespace", default="meridian-system")
    r.add_argument("--context")
    HISTORY_COMMANDS.update(history_cli.add_commands(sub))
    return p


def _xds_security_args(s: argparse.ArgumentParser) -> None:
    from controlplane.xds.identity import allow_rule
    from controlplane.xds.tokenreview import DEFAULT_AUDIENCE

    s.add_argument("--xds-cert", metavar="FILE", help="xDS server certificate (default: from the state dir's local CA)")
    s.add_argument("--xds-key", metavar="FILE", help="xDS server private key")
    s.add_argument("--xds-ca", metavar="FILE", help="CA bundle client certificates must chain to")
    s.add_argument("--state-dir", default=None, metavar="DIR",
                   help="where the local CA lives when --xds-cert is not given, and in file mode the history, "
                   "pin and admin token (default: $XDG_CACHE_HOME/meridian or ~/.cache/meridian)")  # fmt: skip
    s.add_argument("--xds-server-name", action="append", default=[], metavar="NAME",
                   help="extra DNS name or IP for the local CA's server certificate (repeatable)")  # fmt: skip
    s.add_argument("--xds-allow", action="append", type=allow_rule, default=[], metavar="GROUP=IDENTITY",
                   help="let IDENTITY (system:serviceaccount:NS:NAME, or a client certificate's SAN URI or DNS "
                   "name) claim gateway group GROUP (repeatable)")  # fmt: skip
    s.add_argument("--xds-token-audience", default=DEFAULT_AUDIENCE,
                   help="audience service-account tokens must be minted for (TokenReview)")  # fmt: skip
    s.add_argument("--xds-insecure", action="store_true",
                   help="plaintext xDS, clients need no credentials (a loopback demo only; private keys are "
                   "still never sent to unauthenticated clients)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(args, "serve_log_level", None) or args.log_level
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.command == "serve":
        problem = _check_xds_flags(args) or check.serve_problem(args)
        if problem:
            build_parser().error(problem)
    command = {
        "serve": cmd_serve,
        "bootstrap": cmd_bootstrap,
        "translate": cmd_translate,
        "create-remote-secret": cmd_create_remote_secret,
        **HISTORY_COMMANDS,
    }[args.command]
    try:
        code = command(args)
        sys.stdout.flush()  # here, not at exit, where a closed pipe would be an "Exception ignored"
        return code
    except BrokenPipeError:  # `meridian history show 42 | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when exiting
        return 0


def _existing_path(text: str) -> str:
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return text


def _server_address(text: str) -> str:
    return check.host_port(text, allow_port_zero=True)  # 0: the server picks a free port and logs it


def _xds_endpoint(text: str) -> str:
    return check.host_port(text, allow_port_zero=False)


def _partitions(text: str) -> int | None:
    from controlplane.translate.partitions import MAX_PARTITIONS

    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {text!r}") from None
    if not 1 <= n <= MAX_PARTITIONS:
        raise argparse.ArgumentTypeError(f"route partitions must be 1..{MAX_PARTITIONS}")
    return n


def _secret_ref(text: str) -> tuple[str, str]:
    from controlplane.default_certificate import parse_secret_ref

    try:
        return parse_secret_ref(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_xds_flags(args: argparse.Namespace) -> str | None:
    given = [f for f in ("xds_cert", "xds_key", "xds_ca") if getattr(args, f)]
    if args.xds_insecure and given:
        return "--xds-insecure cannot be combined with --xds-cert/--xds-key/--xds-ca"
    if given and len(given) != 3:
        return "--xds-cert, --xds-key and --xds-ca go together"
    return None


def serve_options(args: argparse.Namespace) -> ServeOptions:
    """`meridian serve` flags -> ServeOptions (also used by tests that run the app in-process)."""
    from controlplane.app import ServeOptions

    return ServeOptions(
        clusters=list(args.cluster),
        kubeconfig=args.kubeconfig,
        in_cluster=not args.cluster and not args.kubeconfig,
        cluster_id=args.cluster_id,
        namespace=args.namespace,
        xds_address=args.xds_address,
        admin_address=args.admin_address,
        listen_address=args.listen_address,
        http_port=args.http_port,
        https_port=args.https_port,
        public_https_port=args.public_https_port,
        default_ssl_certificate=args.default_ssl_certificate,
        east_west_port=args.east_west_port,
        ingress_classes=args.ingress_class or ["meridian"],
        watch_ingress_without_class=args.watch_ingress_without_class,
        publish_address=args.publish_address,
        publish_service=args.publish_service,
        knative_public_service=args.knative_public_service,
        knative_private_service=args.knative_private_service,
        lease_duration=args.lease_duration,
        lease_renew_interval=args.lease_renew_interval,
        route_partitions=args.route_partitions,
        xds_insecure=args.xds_insecure,
        xds_cert=args.xds_cert,
        xds_key=args.xds_key,
        xds_ca=args.xds_ca,
        state_dir=args.state_dir,
        xds_server_names=list(args.xds_server_name),
        xds_allow=list(args.xds_allow),
        xds_token_audience=args.xds_token_audience,
        history_size=args.history_size,
        admin_token_file=args.admin_token_file,
        rollback_max_age=args.rollback_max_age * 3600,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from controlplane.app import StartupError, serve

    try:
        asyncio.run(serve(serve_options(args)))
    except KeyboardInterrupt:
        pass
    except StartupError as exc:
        sys.stderr.write(f"meridian serve: {exc}\n")
        return 1
    return 0


def _client_tls(args: argparse.Namespace) -> XdsClientTls | None:
    """--xds-* flags of `bootstrap` -> how Envoy authenticates (state dir CA unless told otherwise)."""
    from controlplane.bootstrap import XdsClientTls
    from controlplane.xds.localca import LocalCA, default_state_dir

    if args.xds_insecure:
        return None
    if bool(args.xds_cert) != bool(args.xds_key):
        raise SystemExit("meridian bootstrap: --xds-cert and --xds-key go together")
    cert, key, ca = args.xds_cert, args.xds_key, args.xds_ca
    if ca and not cert and not args.xds_token_file:
        raise SystemExit("meridian bootstrap: with --xds-ca, give --xds-cert/--xds-key or --xds-token-file "
                         "(without them Envoy has nothing to authenticate with)")  # fmt: skip
    local = LocalCA(args.state_dir or default_state_dir())
    if not ca and not local.ca_cert_path.exists():  # made here; serve then uses it, if it shares the directory
        sys.stderr.write(f"meridian bootstrap: no xDS CA in {local.dir} yet: made one there; `meridian serve` "
                         "must use the same --state-dir, or Envoy's TLS handshake fails\n")  # fmt: skip
    if not cert and not args.xds_token_file:
        issued = local.client(args.node_cluster)  # a certificate for this gateway group
        cert, key = str(issued.cert), str(issued.key)
    if not ca:
        ca = str(local.ca())
    absolute = [os.path.abspath(p) if p else None for p in (ca, cert, key)]
    return XdsClientTls(ca=absolute[0] or "", cert=absolute[1], key=absolute[2], server_name=args.xds_server_name)


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from controlplane.bootstrap import render_bootstrap

    if args.clusters == "on-demand" and args.sotw:
        raise SystemExit("meridian bootstrap: --clusters on-demand needs Delta xDS (Envoy asks for each "
                         "cluster by name over it): drop --sotw, or use --clusters all")  # fmt: skip
    token = None
    if args.xds_token_file:
        token = check.readable_file("--xds-token-file", args.xds_token_file).strip()
    doc = render_bootstrap(
        xds_address=args.xds_address or ["127.0.0.1:18000"],
        node_id=args.node_id,
        node_cluster=args.node_cluster,
        admin_port=args.admin_port,
        delta=not args.sotw,
        tls=_client_tls(args),
        token=token,
        envoy_stats=args.envoy_stats,
        clusters=args.clusters,
    )
    sys.stdout.write(
        json.dumps(doc, indent=2) + "\n" if args.output == "json" else yaml.safe_dump(doc, sort_keys=False)
    )
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from controlplane.compile import compile as compile_objects
    from controlplane.compile import objects_of
    from controlplane.config import GatewayConfig
    from controlplane.ingress.classes import ClassPolicy
    from controlplane.offline import load_paths, snapshot_dict
    from controlplane.report import format_report

    # Offline, every Ingress is translated unless classes are named.
    classes = ClassPolicy(
        frozenset(args.ingress_class or ()),
        watch_without_class=not args.ingress_class,
        accept_all=not args.ingress_class,
    )
    if args.to == "gateway-api":
        return _to_gateway_api(GatewayConfig(classes=classes), args)
    config = GatewayConfig(classes=classes, default_certificate=args.default_ssl_certificate)
    store = load_paths(args.filename)
    compiled = compile_objects(objects_of([store]), config)
    if args.report:
        sys.stdout.write(format_report(compiled.reports))
    else:
        doc = snapshot_dict(compiled.resources)
        if args.output == "json":
            sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        else:
            sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    return _file_problems(store.status.errors)


def _file_problems(errors: dict[str, str]) -> int:
    """A manifest (or document) that could not be read is left out of the output: say which, and exit
    1, so a script or CI job does not take a partial translation for the whole one."""
    for path, message in sorted(errors.items()):
        sys.stderr.write(f"meridian translate: {path}: {message} (left out)\n")
    return 1 if errors else 0


def _to_gateway_api(config: Any, args: argparse.Namespace) -> int:
    from controlplane.offline import export_gateway_api_paths
    from controlplane.report import format_report

    if args.verify:  # the exported objects answer like the Ingresses? (per Ingress, exit 1 if not)
        return _verify_gateway_api(config, args)
    compiled, out, _exported = export_gateway_api_paths(args.filename, config, namespace=args.gateway_namespace)
    if args.report:  # the same levels as --report, for what the conversion kept and lost
        reports = []
        for r in compiled.reports:
            ref = next(x for x in compiled.irs if (x.cluster, x.namespace, x.name) == (r["cluster"], r["namespace"],
                                                                                        r["name"]))  # fmt: skip
            reports.append({**r, "findings": [f.as_dict() for f in out.findings.get(ref, [])]})
        sys.stdout.write(format_report(reports))
        return 0
    sys.stdout.write(yaml.safe_dump_all(out.objects, sort_keys=False))
    return 0


def _verify_gateway_api(config: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from controlplane.migration.stage import EnvoyMissing, Rejected, quiet_logs
    from controlplane.migration.verify import ManifestSet, format_results, verify_sets

    quiet_logs()
    mset = ManifestSet("manifests", tuple(Path(p) for p in args.filename))
    try:
        results = verify_sets([mset], config, namespace=args.gateway_namespace, classes=args.ingress_class)
    except (EnvoyMissing, Rejected, TimeoutError) as exc:
        sys.stderr.write(f"meridian translate --verify: {exc}\n")
        return 2
    sys.stdout.write(format_results(results, every_difference=args.report))
    return 0 if all(v.state != "differs" for r in results for v in r.verdicts.values()) else 1


def cmd_create_remote_secret(args: argparse.Namespace) -> int:
    from controlplane.remote_secret import create_remote_secret

    text = check.readable_file("--kubeconfig", args.kubeconfig)
    base = os.path.dirname(os.path.abspath(args.kubeconfig))
    sys.stdout.write(create_remote_secret(text, args.cluster_id, args.namespace, args.context, base_dir=base))
    return 0
