"""Human-readable per-Ingress report for `meridian translate --report`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_ORDER = {
    "rejected": 0,
    "conflict": 1,
    "warning": 2,
    "unsupported": 3,
    "unknown": 4,
    "not-applicable": 5,
    "converted": 6,
}


def format_report(reports: Iterable[dict[str, Any]]) -> str:
    lines: list[str] = []
    for r in reports:
        state = "served" if r["accepted"] else "NOT SERVED"
        lines.append(f"{r['cluster']}/{r['namespace']}/{r['name']}  [{state}]  hosts: {', '.join(r['hosts']) or '-'}")
        for reason in r["reasons"]:
            lines.append(f"  ! {reason}")
        findings = sorted(r["findings"], key=lambda f: (_ORDER.get(f["level"], 9), f["key"]))
        if findings:
            width = max(len(f["key"]) for f in findings)
            for f in findings:
                msg = f"  {f['level']:<15} {f['key']:<{width}}"
                if f["message"]:
                    msg += f"  {f['message']}"
                lines.append(msg.rstrip())
        lines.append("")
    return "\n".join(lines) + ("\n" if lines else "")
