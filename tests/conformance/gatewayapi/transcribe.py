"""Transcribe upstream Gateway API conformance tests into data (a developer tool, not run by CI).

Reads `conformance/tests/<name>.go` and `<name>.yaml` of kubernetes-sigs/gateway-api from a git
directory (the `fetch` mirror) and writes `cases/<ShortName>.yaml`: the upstream manifests verbatim,
the test's features, and every `http.ExpectedResponse` literal as data (request, the request the
backend must see, response, redirect, backend). Usage:

    python -m tests.conformance.gatewayapi.transcribe GIT_DIR REF name...   (e.g. httproute-matching)

The Go literals are parsed by a small reader of composite literals; constants of the suite are
replaced by their values (CONSTANTS); anything else it cannot read is kept as "<expr>" and the case is
marked `needs_review`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CONSTANTS = {
    "confsuite.InfrastructureNamespace": "gateway-conformance-infra",
    "suite.InfrastructureNamespace": "gateway-conformance-infra",
    "confsuite.AppBackendNamespace": "gateway-conformance-app-backend",
    "suite.AppBackendNamespace": "gateway-conformance-app-backend",
    "confsuite.WebBackendNamespace": "gateway-conformance-web-backend",
    "confsuite.InfraBackendServiceNameV1": "infra-backend-v1",
    "confsuite.InfraBackendServiceNameV2": "infra-backend-v2",
    "confsuite.InfraBackendServiceNameV3": "infra-backend-v3",
    "confsuite.InfrastructureGatewayName": "gateway-conformance-infra-test",
    "true": True,
    "false": False,
}
_TOKEN = re.compile(
    r'\s*(?:(//[^\n]*)|("(?:[^"\\]|\\.)*")|(`[^`]*`)|(-?\d+)|(\[\]|map\[|[{}\[\]:,&()])|([A-Za-z_][\w.]*))'
)


class _Reader:
    def __init__(self, text: str, local: dict[str, Any]) -> None:
        self.toks = [m for m in _TOKEN.finditer(text) if not m.group(1)]
        self.i = 0
        self.local = local
        self.unknown = False

    def peek(self) -> str:
        return self.toks[self.i].group(0).strip() if self.i < len(self.toks) else ""

    def take(self) -> str:
        t = self.peek()
        self.i += 1
        return t

    def value(self) -> Any:
        t = self.take()
        if t == "&":
            return self.value()
        if t.startswith('"'):
            return bytes(t[1:-1], "utf-8").decode("unicode_escape")
        if t.startswith("`"):
            return t[1:-1]
        if re.fullmatch(r"-?\d+", t):
            return int(t)
        if t == "{":
            return self.body()
        if t in ("[]", "map["):  # a slice or map type, then its literal
            while self.peek() != "{":
                self.take()
            self.take()
            return self.body()
        if self.peek() == "{":  # Type{...}
            self.take()
            return self.body()
        if self.peek() == "(":  # a call: keep it unevaluated
            depth = 0
            while True:
                x = self.take()
                depth += x == "("
                depth -= x == ")"
                if depth == 0:
                    break
            self.unknown = True
            return f"<{t}(...)>"
        if t in CONSTANTS:
            return CONSTANTS[t]
        if t in self.local:
            return self.local[t]
        self.unknown = True
        return f"<{t}>"

    def body(self) -> Any:
        items: list[Any] = []
        fields: dict[str, Any] = {}
        while self.peek() != "}":
            ahead = self.toks[self.i + 1].group(0).strip() if self.i + 1 < len(self.toks) else ""
            if re.fullmatch(r"[A-Za-z_]\w*", self.peek()) and ahead == ":":  # Field: value
                key = self.take()
                self.take()
                fields[key] = self.value()
            else:
                v = self.value()
                if self.peek() == ":":  # a map entry
                    self.take()
                    fields[str(v)] = self.value()
                else:
                    items.append(v)
            if self.peek() == ",":
                self.take()
        self.take()
        return fields if fields else items


class _Block(str):
    """A multi-line string, written as a YAML block."""


yaml.SafeDumper.add_representer(_Block, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|"))


def transcribe(git_dir: str, ref: str, name: str) -> dict[str, Any]:
    name, _, only = name.partition(":")
    def show(path: str) -> str:
        return subprocess.run(["git", "--git-dir", git_dir, "show", f"{ref}:{path}"], check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    go = show(f"conformance/tests/{name}.go")
    if only:  # one test of a file that defines several: its ShortName up to the next test
        start = go.index(f'ShortName:   "{only}"') if f'ShortName:   "{only}"' in go else go.index(f'"{only}"')
        end = go.find("\nvar ", start)
        go = go[start - 200:] if end < 0 else go[start - 200:end]
    manifests = show(f"conformance/tests/{name}.yaml")
    short = re.search(r'ShortName:\s*"([^"]+)"', go[200:] if only else go)
    feats = re.search(r"Features:\s*\[\]features.FeatureName\{([^}]*)\}", go)
    local: dict[str, Any] = {}
    for m in re.finditer(r'(\w+)\s*:?=\s*("(?:[^"\\]|\\.)*"|confsuite\.\w+)\s*$', go, re.M):
        local[m.group(1)] = CONSTANTS.get(m.group(2), m.group(2).strip('"'))
    local.setdefault("ns", "gateway-conformance-infra")
    gateways = re.findall(r'gwNN\s*:?=\s*types.NamespacedName\{Name:\s*"([^"]+)"', go)
    cases: list[Any] = []
    unknown = False
    for m in re.finditer(r"(\[\])?http\.ExpectedResponse\{", go):
        r = _Reader(go[m.end():], local)
        body = r.body()
        if m.group(1):
            cases.extend(body if isinstance(body, list) else [body])
        else:
            cases.append(body)
        unknown |= r.unknown
    return {
        "name": short.group(1) if short else name,
        "upstream": f"conformance/tests/{name}.go",
        "features": re.findall(r"Support(\w+)", feats.group(1)) if feats else [],
        "gateways": gateways,
        "needs_review": unknown,
        "requests": cases,
        "manifests": _Block(manifests),
    }


def main(argv: list[str]) -> None:
    git_dir, ref, *names = argv
    for name in names:
        data = transcribe(git_dir, ref, name)
        out = HERE / "cases" / f"{data['name']}.yaml"
        out.write_text(yaml.safe_dump(data, sort_keys=False, width=120))
        print(out.name, len(data["requests"]), "requests", "(needs review)" if data["needs_review"] else "")


if __name__ == "__main__":
    main(sys.argv[1:])
