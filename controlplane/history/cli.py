"""`meridian history|diff|rollback|resume`: talk to a running Meridian through its admin API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:19000"


def add_serve_flags(s: argparse.ArgumentParser) -> None:
    """History's `serve` flags. `--state-dir` (where the history, pin and admin token live in file mode)
    is the one the local CA uses, defined with the xDS flags in `controlplane.cli`."""
    s.add_argument("--history-size", type=_positive_int, default=200, metavar="N",
                   help="published versions kept (default 200)")  # fmt: skip
    s.add_argument(
        "--admin-token-file",
        help="token that mutating admin endpoints (rollback, resume) require "
        "(default in file mode: <state-dir>/admin-token, created on first start)",
    )
    s.add_argument(
        "--rollback-max-age",
        type=_non_negative_float,
        default=24.0,
        metavar="HOURS",
        help="rolling back to a version older than this needs --yes (default 24)",
    )


def _positive_int(text: str) -> int:
    from controlplane.cli_checks import positive_int

    return positive_int(text)


def _non_negative_float(text: str) -> float:
    from controlplane.cli_checks import non_negative_float

    return non_negative_float(text)


def add_commands(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    def client_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", default=os.environ.get("MERIDIAN_SERVER", DEFAULT_SERVER), help="admin URL")
        p.add_argument("--admin-token-file", help="default: <state-dir>/admin-token")
        p.add_argument("--state-dir", default=None, help="where serve keeps its state (for the token)")

    h = sub.add_parser("history", help="list published versions (or `history show V`)")
    client_flags(h)
    h.add_argument("action", nargs="?", choices=["show"], help="show one version")
    h.add_argument("version", nargs="?")
    h.add_argument("--limit", type=int, default=50)
    h.add_argument("-o", "--output", choices=["table", "json"], default="table")

    d = sub.add_parser("diff", help="diff two versions: V1 [V2|live] (Envoy resources, or --sources)")
    client_flags(d)
    d.add_argument("v1")
    d.add_argument("v2", nargs="?", default="live")
    d.add_argument("--sources", action="store_true", help="the Kubernetes objects that changed instead")

    r = sub.add_parser("rollback", help="serve version V on every replica and gateway group")
    client_flags(r)
    r.add_argument("version", type=int)
    r.add_argument("--reason", default="")
    r.add_argument("--yes", action="store_true", help="confirm an old version or one missing current resources")

    u = sub.add_parser("resume", help="drop the pin and serve the current sources again")
    client_flags(u)
    return {"history": cmd_history, "diff": cmd_diff, "rollback": cmd_rollback, "resume": cmd_resume}


class AdminError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if method == "POST":
        headers["Authorization"] = f"Bearer {_token(args)}"
    data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
    req = urllib.request.Request(args.server.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            raise AdminError(exc.code, json.loads(text)) from None
        except ValueError:
            raise AdminError(exc.code, {"error": text}) from None
    except (urllib.error.URLError, OSError) as exc:  # refused, unknown host, timeout
        reason = getattr(exc, "reason", exc)
        raise SystemExit(f"meridian: cannot reach Meridian's admin API at {args.server} ({reason}); "
                         "is `meridian serve` running? (--server URL or $MERIDIAN_SERVER)") from None


def _token(args: argparse.Namespace) -> str:
    from controlplane.history.wiring import TOKEN_FILE
    from controlplane.xds.localca import default_state_dir

    path = args.admin_token_file or os.path.join(args.state_dir or default_state_dir(), TOKEN_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise SystemExit(f"meridian: cannot read the admin token ({exc}); pass --admin-token-file") from None


def _fail(exc: AdminError) -> int:
    body = exc.body if isinstance(exc.body, dict) else {"error": str(exc.body)}
    print(f"error: {body.get('error')}", file=sys.stderr)
    for reason in body.get("reasons") or []:
        print(f"  - {reason}", file=sys.stderr)
    return 2 if exc.status == 409 else 1


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _pin_line(doc: dict[str, Any]) -> str | None:
    pin = doc.get("pin")
    if not pin:
        return None
    return f"PINNED: {pin['banner']} — newer versions are pending, not served (`meridian resume`)"


def _fleet(rec: dict[str, Any]) -> str:
    fleet = rec.get("fleet") or {}
    if not fleet:
        return "-"
    acked = sum(int(v.get("acked", 0)) for v in fleet.values())
    nacked = sum(int(v.get("nacked", 0)) for v in fleet.values())
    return f"{acked}/{nacked}"


def cmd_history(args: argparse.Namespace) -> int:
    try:
        if args.action == "show":
            if not args.version:
                print("error: history show needs a version", file=sys.stderr)
                return 1
            return _show(args, _call(args, "GET", f"/debug/history/{args.version}"))
        doc = _call(args, "GET", f"/debug/history?limit={args.limit}")
    except AdminError as exc:
        return _fail(exc)
    if args.output == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    line = _pin_line(doc)
    if line:
        print(line)
    pinned = (doc.get("pin") or {}).get("version")
    rows = [("VERSION", "AGE", "STATE", "CDS", "EDS", "LDS", "RDS", "SDS", "CHANGED", "ACK/NACK", "TRIGGER")]
    for rec in doc["records"]:
        c = rec.get("counts") or {}
        state = "pinned" if rec["version"] == pinned else "served" if rec.get("served", True) else "pending"
        rows.append((
            str(rec["version"]), _age(doc["now"] - rec["at"]), state,
            *(str(c.get(t, 0)) for t in ("CDS", "EDS", "LDS", "RDS", "SDS")),
            str(rec.get("resource_changes", 0)), _fleet(rec), rec.get("summary") or "-",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])
    for ev in (doc.get("pin_events") or [])[-5:]:
        what = f"rollback to {ev['version']}" if ev["action"] == "rollback" else f"resume at {ev['version']}"
        print(f"{_age(doc['now'] - ev['at'])} ago: {what}" + (f" ({ev['reason']})" if ev.get("reason") else ""))
    return 0


def _show(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    rec = doc["record"]
    line = _pin_line(doc)
    if line:
        print(line)
    state = "served" if rec.get("served", True) else "pending, not served"
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(rec["at"]))  # as the PINNED line, not epoch seconds
    print(f"version {rec['version']} ({state}) at {at}" + (f" — {rec['note']}" if rec.get("note") else ""))
    print(f"trigger: {rec['trigger_count']} object(s) changed")
    for t in rec["triggers"]:
        ns = f"{t['namespace']}/" if t["namespace"] else ""
        print(f"  {t['action']:8} {t['cluster']}:{t['kind']}/{ns}{t['name']}")
        for d in t.get("diff") or ():
            print(f"      {d}")
    total = rec.get("resource_total", -1)
    listed = len(rec["resources"])
    shown = f" ({listed} listed)" if 0 <= listed < total else ""
    print(f"resources: {listed if total < 0 else total} changed{shown}")
    for r in rec["resources"]:
        print(f"  {r['action']:8} {r['type']:4} {r['name']}  {r['version'] or ''}")
    for group, counts in (rec.get("fleet") or {}).items():
        print(f"fleet {group}: {counts.get('acked', 0)} acked, {counts.get('nacked', 0)} nacked "
              f"of {counts.get('streams', 0)} streams")  # fmt: skip
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    query = {"from": args.v1, "to": args.v2, **({"sources": "1"} if args.sources else {})}
    try:
        doc = _call(args, "GET", "/debug/history/diff?" + urlencode(query))
    except AdminError as exc:
        return _fail(exc)
    line = _pin_line(doc)
    if line:
        print(line)
    if not args.sources:
        print(f"{doc['from']} -> {doc['to']}: " + "; ".join(doc["summary_lines"]))
    sys.stdout.write(doc["text"])
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    try:
        body = {"version": args.version, "reason": args.reason, "yes": args.yes}
        doc = _call(args, "POST", "/history/rollback", body)
    except AdminError as exc:
        return _fail(exc)
    print(f"pinned to version {doc['pin']['version']} on every replica and gateway group")
    for reason in doc.get("confirmed") or []:
        print(f"  confirmed: {reason}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from controlplane.history.render import summary_lines

    try:
        diff = _call(args, "GET", "/debug/history/diff?from=served&to=live")
        # Endpoints follow the sources while pinned (a pin holds configuration, not pod addresses): the
        # pinned version's recorded endpoints differ from live, but resuming does not change them.
        summary = {t: {k: n for k, n in kinds.items() if (t, k) != ("EDS", "changed")}
                   for t, kinds in diff["summary"].items()}  # fmt: skip
        if diff.get("pin"):  # not pinned: there is nothing to summarise
            print(f"resuming: {diff['from']} -> {diff['to']}: " + "; ".join(summary_lines(
                {t: kinds for t, kinds in summary.items() if kinds})))
        doc = _call(args, "POST", "/history/resume")
    except AdminError as exc:
        return _fail(exc)
    if doc.get("resumed_from") is None:
        print("not pinned; nothing to resume")
    else:
        print(f"pin on version {doc['resumed_from']} dropped; serving version {doc['serving']}")
    return 0
