"""Hand transcription of the GRPCRoute core conformance tests of gateway-api v1.6.1 into cases/*.yaml.

The Go tests hold their expectations as []grpc.ExpectedResponse tables (written out below as data);
the manifests are read verbatim from the repository: python -m tests.conformance.gatewayapi.transcribe_grpc GIT_DIR
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
NS = "gateway-conformance-infra"


def show(path: str) -> str:
    git_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    done = subprocess.run(["git", "-C", git_dir, "show", f"v1.6.1:{path}"], capture_output=True, text=True, check=True)
    return done.stdout


def ok(backend: str, method: str = "Echo", **kw: Any) -> dict[str, Any]:
    return {"Method": method, **kw, "Code": "OK", "Backend": backend, "Namespace": NS}


def unimpl(method: str = "Echo", **kw: Any) -> dict[str, Any]:
    return {"Method": method, **kw, "Code": "Unimplemented"}


def md(**m: str) -> dict[str, Any]:
    return {"Metadata": m}


# short name -> (upstream file stem, requests, weighted distribution or None)
CASES: dict[str, tuple[str, list[dict[str, Any]], dict[str, Any] | None]] = {
 "GRPCExactMethodMatching": ("grpcroute-exact-method-matching", [
     ok("grpc-infra-backend-v1"), ok("grpc-infra-backend-v2", "EchoTwo"), unimpl("EchoThree")], None),
 "GRPCRouteHeaderMatching": ("grpcroute-header-matching", [
     ok("grpc-infra-backend-v1", **md(Version="one")), ok("grpc-infra-backend-v2", **md(Version="two")),
     ok("grpc-infra-backend-v1", **md(Version="two", Color="orange")),
     ok("grpc-infra-backend-v2", **md(Version="two", Color="blue")),
     unimpl(**md(Color="orange")), unimpl(**md(**{"Some-Other-Header": "one"})),
     ok("grpc-infra-backend-v1", **md(Color="blue")), ok("grpc-infra-backend-v1", **md(Color="green")),
     ok("grpc-infra-backend-v2", **md(Color="red")), ok("grpc-infra-backend-v2", **md(Color="yellow")),
     unimpl(**md(Color="purple"))], None),
 "GRPCRouteListenerHostnameMatching": ("grpcroute-listener-hostname-matching", [
     ok("grpc-infra-backend-v1", Authority="bar.com"), ok("grpc-infra-backend-v2", Authority="foo.bar.com"),
     ok("grpc-infra-backend-v3", Authority="baz.bar.com"), ok("grpc-infra-backend-v3", Authority="boo.bar.com"),
     ok("grpc-infra-backend-v3", Authority="multiple.prefixes.bar.com"),
     ok("grpc-infra-backend-v3", Authority="multiple.prefixes.foo.com"),
     unimpl(Authority="foo.com"), unimpl(Authority="no.matching.host")], None),
 "GRPCRouteNamedRule": ("grpcroute-named-rule", [
     ok("grpc-infra-backend-v1"), ok("grpc-infra-backend-v2", "EchoTwo")], None),
 "GRPCRouteWeight": ("grpcroute-weight", [{"Method": "Echo", "Code": "OK", "Namespace": NS}],
     {"requests": 500, "tolerance": 0.05, "attempts": 10,
      "weights": {"grpc-infra-backend-v1": 0.7, "grpc-infra-backend-v2": 0.3, "grpc-infra-backend-v3": 0.0}}),
}
def main() -> None:
    for stem, requests, dist in CASES.values():
        go = show(f"conformance/tests/{stem}.go")
        found = re.search(r'ShortName:\s*"([^"]+)"', go)
        assert found is not None, stem
        short = found.group(1)
        feats = re.findall(r"features\.Support(\w+)", go)
        head = {"name": short, "upstream": f"conformance/tests/{stem}.go", "protocol": "grpc",
                "features": feats, "needs_review": False}
        text = yaml.safe_dump(head, sort_keys=False)
        text += ("requests:  # hand-transcribed from the Go test's []grpc.ExpectedResponse "
                 "(Method: Echo/EchoTwo/EchoThree; Metadata; Authority)\n")
        text += yaml.safe_dump(requests, sort_keys=False, default_flow_style=None)
        if dist:
            text += "distribution:  # hand-transcribed: weight.TestWeightedDistribution over the pods that answer\n"
            dumped = yaml.safe_dump(dist, sort_keys=False, default_flow_style=None)
            text += "\n".join("  " + line for line in dumped.splitlines()) + "\n"
        manifests = show(f"conformance/tests/{stem}.yaml")
        text += "manifests: |\n" + "".join("  " + line if line.strip() else line for line in manifests.splitlines(True))
        (HERE / "cases" / f"{short}.yaml").write_text(text)
        print(short, feats)


if __name__ == "__main__":
    main()
