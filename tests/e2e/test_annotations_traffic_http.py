"""Traffic annotations end to end through a real Envoy: redirects, app-root, CORS, retries,
timeouts, upstream-vhost, x-forwarded-prefix, custom errors, mirroring and WebSockets.

One gateway for the whole module (each Ingress has its own host).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

NGINX = "nginx.ingress.kubernetes.io/"


def ing(name: str, backend: str, annotations: dict[str, str], path: str = "/", path_type: str = "Prefix") -> Any:
    return ingress(
        name,
        [rule(f"{name}.example.com", (path, path_type, backend, 80))],
        annotations={(k if "/" in k else NGINX + k): v for k, v in annotations.items()},
    )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("traffic-http"))
    g.start()
    g.backend("web")
    g.backend("flaky", fail_first=1)
    g.backend("errpages")
    g.mirror_srv = g.fleet.add(service="mirror", pod="mirror-0")  # type: ignore[attr-defined]
    mirror_url = f"http://127.0.0.1:{g.mirror_srv.port}$request_uri"  # type: ignore[attr-defined]
    objs = [
        ing(
            "perm",
            "web",
            {"permanent-redirect": "https://new.example.com/landing?x=1", "permanent-redirect-code": "308"},
        ),
        ing("perm305", "web", {"permanent-redirect": "https://new.example.com/", "permanent-redirect-code": "305"}),
        ing(
            "temp",
            "web",
            {"temporal-redirect": "http://t.example.com/x", "permanent-redirect": "https://p.example.com/"},
        ),
        ing("approot", "web", {"app-root": "/app"}),
        ing(
            "cors",
            "web",
            {
                "enable-cors": "true",
                "cors-allow-origin": "https://a.example.com, https://*.b.example.com",
                "cors-expose-headers": "X-Echo-Pod",
                "cors-max-age": "600",
                "cors-allow-methods": "GET, POST",
            },
        ),
        ing("retry", "flaky", {"proxy-next-upstream": "error timeout http_503"}),
        ing("retryoff", "flaky", {"proxy-next-upstream": "off"}),
        ing("timeout", "web", {"proxy-read-timeout": "1"}),
        ing("vhost", "web", {"upstream-vhost": "internal.svc.local"}),
        ing(
            "prefix",
            "web",
            {"rewrite-target": "/$2", "x-forwarded-prefix": "/api"},
            path="/api(/|$)(.*)",
            path_type="ImplementationSpecific",
        ),
        ing("errors", "web", {"default-backend": "errpages", "custom-http-errors": "404,503"}),
        ing("mirror", "web", {"mirror-target": mirror_url}),
        ing("ws", "web", {}),
    ]
    g.write("ing.yaml", objs)
    g.wait_served_by("ws.example.com", "/", "web")
    g.wait_status("mirror.example.com", "/", 200)
    try:
        yield g
    finally:
        g.stop()


def test_permanent_and_temporal_redirects(gw: Gateway) -> None:
    r = gw.wait_status("perm.example.com", "/some/path?q=2", 308)
    assert r.headers["Location"] == "https://new.example.com/landing?x=1"
    # nginx `return 305 URL`: the URL is the body, there is no Location.
    r = gw.wait_status("perm305.example.com", "/", 305)
    assert "Location" not in r.headers and r.text == "https://new.example.com/"
    # temporal wins over permanent, default code 302.
    r = gw.wait_status("temp.example.com", "/", 302)
    assert r.headers["Location"] == "http://t.example.com/x"


def test_app_root(gw: Gateway) -> None:
    r = gw.wait_status("approot.example.com", "/", 302)
    assert r.headers["Location"].endswith("approot.example.com/app")
    r = gw.get("approot.example.com", "/app/page")
    assert r.status == 200 and r.json()["path"] == "/app/page"


def test_cors_preflight_and_actual_request(gw: Gateway) -> None:
    pre = gw.get(
        "cors.example.com",
        "/items",
        method="OPTIONS",
        headers={"Origin": "https://x.b.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status == 204, pre
    assert pre.headers["Access-Control-Allow-Origin"] == "https://x.b.example.com"
    assert pre.headers["Access-Control-Allow-Methods"] == "GET, POST"  # as written, like nginx
    assert pre.headers["Access-Control-Max-Age"] == "600"
    assert pre.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    assert "X-Echo-Service" not in pre.headers  # answered by the gateway, not the backend

    r = gw.get("cors.example.com", "/items", headers={"Origin": "https://a.example.com"})
    assert r.status == 200 and r.json()["service"] == "web"
    assert r.headers["Access-Control-Allow-Origin"] == "https://a.example.com"
    assert r.headers["Access-Control-Expose-Headers"] == "X-Echo-Pod"
    # The wildcard is one label only, and unknown origins get no CORS headers.
    for origin in ("https://evil.example.com", "https://a.x.b.example.com"):
        r = gw.get("cors.example.com", "/items", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in r.headers, origin


def test_retries_follow_proxy_next_upstream(gw: Gateway) -> None:
    key = uuid.uuid4().hex
    r = gw.get("retry.example.com", "/r", headers={"X-Request-Key": key})
    assert r.status == 200 and r.json()["service"] == "flaky"  # first try 503, retried
    # POST is not idempotent: without non_idempotent, nginx does not retry it.
    r = gw.get("retry.example.com", "/r", method="POST", headers={"X-Request-Key": uuid.uuid4().hex})
    assert r.status == 503
    r = gw.get("retryoff.example.com", "/r", headers={"X-Request-Key": uuid.uuid4().hex})
    assert r.status == 503  # off: the first answer is returned


def test_read_timeout_answers_504(gw: Gateway) -> None:
    assert gw.get("timeout.example.com", "/", headers={"X-Echo-Delay": "0.2"}).status == 200
    started = time.monotonic()
    r = gw.get("timeout.example.com", "/", headers={"X-Echo-Delay": "2.5"}, timeout=15)
    assert r.status == 504
    assert time.monotonic() - started < 10


def test_upstream_vhost_and_forwarded_prefix(gw: Gateway) -> None:
    body = gw.get("vhost.example.com", "/v").json()
    assert body["host"] == "internal.svc.local"
    r = gw.get("prefix.example.com", "/api/items/1")
    assert r.status == 200
    body = r.json()
    assert body["path"] == "/items/1"
    assert body["headers"]["X-Forwarded-Prefix"] == "/api"


def test_custom_http_errors_served_by_default_backend(gw: Gateway) -> None:
    r = gw.get("errors.example.com", "/missing?a=b", headers={"X-Echo-Status": "404"})
    assert r.status == 404
    body = r.json()
    assert body["service"] == "errpages"
    assert body["path"] == "/?a=b"  # nginx `rewrite (.*) / break` keeps the arguments too
    assert body["headers"]["X-Code"] == "404"
    assert body["headers"]["X-Namespace"] == "default"
    assert body["headers"]["X-Ingress-Name"] == "errors"
    assert body["headers"]["X-Service-Name"] == "web"
    # Codes that are not listed come from the backend itself.
    r = gw.get("errors.example.com", "/boom", headers={"X-Echo-Status": "500"})
    assert r.status == 500 and r.json()["service"] == "web"
    r = gw.get("errors.example.com", "/fine")
    assert r.status == 200 and r.json()["service"] == "web"


def test_mirror_receives_a_copy(gw: Gateway) -> None:
    mirror = gw.mirror_srv  # type: ignore[attr-defined]
    path = f"/m/{uuid.uuid4().hex}?k=v"
    r = gw.get("mirror.example.com", path)
    assert r.status == 200 and r.json()["service"] == "web"
    seen = wait_until(lambda: [s for s in mirror.requests if s.path == path], timeout=10, message="no mirror copy")
    assert seen[0].headers["Host"] == f"127.0.0.1:{mirror.port}"


def test_websocket_upgrade(gw: Gateway) -> None:
    async def talk() -> tuple[str, str]:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{gw.http_port}/ws"
            async with s.ws_connect(url, headers={"Host": "ws.example.com"}, timeout=aiohttp.ClientWSTimeout(5)) as ws:
                await ws.send_str("hello")
                msg = await asyncio.wait_for(ws.receive(), 5)
                return str(msg.data), ws._response.headers.get("X-Echo-Service", "")

    data, service = asyncio.run(asyncio.wait_for(talk(), 10))
    assert data == "web-c1-0: hello"
    assert service == "web"


def test_no_nack(gw: Gateway) -> None:
    gw.wait_converged()
    for stream in gw.admin("/debug/syncz"):
        for short, t in stream["types"].items():
            assert t.get("last_nack") is None, (short, t["last_nack"])
