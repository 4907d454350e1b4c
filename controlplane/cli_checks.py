"""Checks of `meridian` flag values, so a bad value is one clear line at start, not a traceback or a
configuration Envoy rejects later."""

from __future__ import annotations

import argparse
import os

from controlplane.addresses import is_ip, split_host_port


def port(text: str, lowest: int = 1) -> int:
    """A TCP port Envoy can listen on or connect to (1-65535)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not lowest <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be {lowest}..65535, got {value}")
    return value


def listener_port(text: str) -> int:
    """A port Envoy listens on (a gateway listener, Envoy's admin): 0 lets Envoy pick a free one."""
    return port(text, lowest=0)


def host_port(text: str, *, allow_port_zero: bool) -> str:
    """HOST:PORT, [V6]:PORT or HOST (the default port). For a server (allow_port_zero): port 0 picks a
    free port, and ":PORT" listens on every address, as before these checks."""
    try:
        host, number = split_host_port(text, 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None
    lowest = 0 if allow_port_zero else 1
    if (not host and not allow_port_zero) or not lowest <= number <= 65535:  # a server's ":P": every address
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port {lowest}..65535, got {text!r}")
    return text


def listen_address(text: str) -> str:
    """Envoy binds its listeners to an IP address, never a name."""
    if not is_ip(text):
        raise argparse.ArgumentTypeError(f"expected an IP address (e.g. 0.0.0.0 or 127.0.0.1), got {text!r}")
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def serve_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with `meridian serve`'s flags taken together (None: nothing)."""
    seen: set[str] = set()
    for cluster_id, directory in args.cluster:
        if cluster_id in seen:
            return f"--cluster {cluster_id}=...: cluster id {cluster_id!r} is given twice"
        seen.add(cluster_id)
        if os.path.exists(directory) and not os.path.isdir(directory):  # missing: read once it exists
            return f"--cluster {cluster_id}={directory}: {directory} is not a directory (a directory of YAML manifests)"
    for flag, path in (("--kubeconfig", args.kubeconfig), ("--admin-token-file", args.admin_token_file)):
        if path and not os.path.isfile(path):
            return f"{flag} {path}: no such file"
    if not args.cluster and not args.kubeconfig and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return ("nothing to watch: give --cluster ID=DIR (a directory of manifests) or --kubeconfig PATH "
                "(outside a Kubernetes pod there is no in-cluster configuration)")  # fmt: skip
    if args.lease_renew_interval >= args.lease_duration:
        return (f"--lease-renew-interval ({args.lease_renew_interval:g} s) must be shorter than "
                f"--lease-duration ({args.lease_duration:g} s)")  # fmt: skip
    return None


def readable_file(flag: str, path: str) -> str:
    """The text of a file a flag names, or a clear exit."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise SystemExit(f"meridian: {flag} {path}: {exc.strerror or exc}") from None
