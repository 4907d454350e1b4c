"""Live updates through a real Envoy: files change, traffic follows, with bounded waits only."""

from __future__ import annotations

from tests.support.gateway import ingress, rule


def test_add_change_delete_ingress_and_move_endpoints(make_gateway):
    gw = make_gateway().start()
    gw.backend("web")
    assert gw.get("web.example.com", "/app").status == 404

    gw.write("ing.yaml", [ingress("web", [rule("web.example.com", ("/app", "Prefix", "web", 80))])])
    r = gw.wait_served_by("web.example.com", "/app/x", "web")
    assert r.json()["path"] == "/app/x"
    assert r.json()["host"] == "web.example.com"

    # Change the path: the old one 404s, the new one is served.
    gw.write("ing.yaml", [ingress("web", [rule("web.example.com", ("/new", "Prefix", "web", 80))])])
    gw.wait_served_by("web.example.com", "/new", "web")
    gw.wait_status("web.example.com", "/app", 404)

    # Move the Service's endpoints to another backend: traffic follows.
    other = gw.fleet.add(service="web", pod="web-moved", cluster="c1")
    gw.publish("web", [other])
    from tests.support.wait import wait_until

    wait_until(lambda: gw.get("web.example.com", "/new").json().get("pod") == "web-moved", timeout=15)

    # Delete the Ingress file: 404.
    gw.remove("ing.yaml")
    gw.wait_status("web.example.com", "/new", 404)
    gw.wait_converged()


def test_endpoint_change_of_one_service_leaves_others_serving(make_gateway):
    """SotW EDS pushes carry only the changed assignment; Envoy must keep the others."""
    from tests.support.wait import wait_until

    gw = make_gateway().start()
    gw.backend("a")
    gw.backend("b")
    gw.write(
        "ing.yaml",
        [
            ingress(
                "ab", [rule("a.example.com", ("/", "Prefix", "a", 80)), rule("b.example.com", ("/", "Prefix", "b", 80))]
            )
        ],
    )
    gw.wait_served_by("a.example.com", "/", "a")
    gw.wait_served_by("b.example.com", "/", "b")
    moved = gw.fleet.add(service="a", pod="a-moved", cluster="c1")
    gw.publish("a", [moved])
    wait_until(lambda: gw.get("a.example.com", "/").json().get("pod") == "a-moved", timeout=15)
    gw.wait_converged()
    for _ in range(5):
        r = gw.get("b.example.com", "/")
        assert r.status == 200 and r.json()["service"] == "b"
    assert gw.envoy is not None
    healthy = {k: v for k, v in gw.envoy.stats().items() if k.endswith(".membership_healthy")}
    assert [v for k, v in healthy.items() if "default/b" in k] == [1], healthy
