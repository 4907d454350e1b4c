"""A route and its brand-new Service arrive together: Envoy must never answer for the route before
its new cluster is usable (make-before-break; Envoy ACKs CDS while new EDS clusters still warm, and
a route naming a warming cluster answers an empty 503, counted as `no_cluster`)."""

from __future__ import annotations

import threading

import pytest

from tests.support.gateway import ingress, rule, service_manifests
from tests.support.http import Client
from tests.support.wait import wait_until


class Hammer:
    """Requests `host` in a loop on a kept-alive connection, recording every status, until stopped."""

    def __init__(self, port: int, host: str) -> None:
        self.port, self.host = port, host
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"hammer-{host}", daemon=True)

    def _loop(self) -> None:
        with Client(self.port, host=self.host) as c:
            while not self._stop.is_set():
                try:
                    self.statuses.append(c.request("GET", "/").status)
                except OSError:
                    self.statuses.append(0)
                    c.close()

    def served(self, after_first_200: int) -> bool:
        if 200 not in self.statuses:
            return False
        return len(self.statuses) - self.statuses.index(200) > after_first_200

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_route_to_a_new_service_is_never_served_before_its_cluster(make_gateway, delta: bool) -> None:
    gw = make_gateway(delta=delta).start()
    gw.backend("base")
    gw.write("base.yaml", [ingress("base", [rule("base.example.com", ("/", "Prefix", "base", 80))])])
    gw.wait_served_by("base.example.com", "/", "base")
    assert gw.envoy is not None

    def no_cluster() -> int:
        return sum(v for k, v in gw.envoy.stats("no_cluster").items() if k.endswith(".no_cluster"))

    before = no_cluster()
    for i in range(4):  # the race is milliseconds wide: several fresh Services, each with its route
        host, service = f"new{i}.example.com", f"new{i}"
        pod = gw.fleet.add(service=service, pod=f"{service}-0", cluster="c1")
        with Hammer(gw.http_port, host) as hammer:
            wait_until(lambda: len(hammer.statuses) > 5, timeout=15, message="the hammer never got an answer")
            objs = [*service_manifests(service, [pod]), ingress(service, [rule(host, ("/", "Prefix", service, 80))])]
            gw.write(f"{service}.yaml", objs)
            wait_until(lambda: hammer.served(after_first_200=50), timeout=20, message=f"{host} never served")
        first = hammer.statuses.index(200)
        # Unknown host (404) until the route and its cluster are both in place, then only 200s.
        assert set(hammer.statuses[:first]) == {404}, hammer.statuses[:first]
        assert set(hammer.statuses[first:]) == {200}, hammer.statuses[first:]
    assert no_cluster() == before
