"""The console at /ui in a real headless browser (Debian's chromium, driven by Selenium through the
system chromedriver; nothing downloads a browser): each page renders the running instance's data,
and a rollback clicked in the console reaches a real Envoy. A screenshot of each page is kept in
$MERIDIAN_ARTIFACTS (default build/artifacts/console) for the README."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import REPO, ingress, rule
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("MERIDIAN_ARTIFACTS") or REPO / "build" / "artifacts" / "console")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("needs Debian's chromium and chromium-driver (make system-packages installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, base: str, page: str) -> None:
    driver.get(f"{base}/ui#{page}")
    driver.refresh()  # a hash change alone does not reload; make every visit a fresh render
    wait_until(lambda: driver.find_element("tag name", "body").get_attribute("data-loaded") == page,
               timeout=15, message=f"{page} page did not render")  # fmt: skip


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_console_pages_and_a_rollback_from_the_browser(make_gateway, browser: Any) -> None:
    gw = make_gateway(delta=True).start()
    base = f"http://127.0.0.1:{gw.admin_port}"
    gw.backend("web")
    gw.write("web.yaml", [ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))],
                                  annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "oops",
                                               "nginx.ingress.kubernetes.io/server-snippet": "x"})])  # fmt: skip
    gw.wait_served_by("web.example.com", "/", "web")
    gw.wait_converged()
    good = gw.admin("/debug/history")["latest"]
    gw.write("web.yaml", [ingress("web", [rule("web.example.com", ("/", "Prefix", "wbe", 80))])])
    gw.wait_status("web.example.com", "/", 503)
    gw.wait_converged()
    bad = gw.admin("/debug/history")["latest"]
    driver = browser

    # Clusters and their sync state.
    open_page(driver, base, "clusters")
    row = driver.find_element("css selector", 'tr[data-cluster="c1"]')
    assert "synced" in row.text and "Ingress 1" in row.text, row.text
    shot(driver, "clusters")

    # Connected Envoys per group, with ACK state per type.
    open_page(driver, base, "envoys")
    node = driver.find_element("css selector", 'tr[data-node="gw-1"]')
    assert node.text.count("ACK") >= 3 and "NACK" not in node.text, node.text
    shot(driver, "envoys")

    # Ingresses with their annotation report, searchable.
    gw.write("api.yaml", [ingress("api", [rule("api.example.com", ("/", "Prefix", "web", 80))])])
    wait_until(lambda: gw.ingress_report("api"), timeout=10)
    open_page(driver, base, "ingresses")
    assert len(driver.find_elements("css selector", "#ingresses-table tbody tr")) == 2
    search = driver.find_element("id", "ingress-search")
    search.send_keys("wbe")
    wait_until(lambda: len(driver.find_elements("css selector", "#ingresses-table tbody tr")) == 1, timeout=5)
    shot(driver, "ingresses")
    search.clear()
    search.send_keys("api.example")
    rows = driver.find_elements("css selector", "#ingresses-table tbody tr")
    assert len(rows) == 1 and "converted" in rows[0].text, [r.text for r in rows]

    # History with a side-by-side diff.
    open_page(driver, base, "history")
    rows = driver.find_elements("css selector", "#history-table tbody tr")
    versions = [r.get_attribute("data-version") for r in rows]
    assert str(good) in versions and str(bad) in versions, versions
    for field, value in (("diff-from", str(good)), ("diff-to", str(bad))):
        el = driver.find_element("id", field)
        el.clear()
        el.send_keys(value)
    driver.find_element("id", "diff-go").click()
    wait_until(lambda: driver.find_elements("css selector", ".sbs .add"), timeout=10, message="no diff shown")
    right = " ".join(e.text for e in driver.find_elements("css selector", ".sbs .r.add"))
    left = " ".join(e.text for e in driver.find_elements("css selector", ".sbs .l.del"))
    assert "503" in right and "default/web:80" in left, (left, right)
    shot(driver, "history-diff")

    # Rollback from the console needs the token; with it, the old route answers through Envoy.
    driver.find_element("css selector", f'button.rollback[data-version="{good}"]').click()
    wait_until(lambda: "401" in driver.find_element("id", "action-result").text, timeout=10)
    token = (gw.root / "state" / "admin-token").read_text().strip()
    driver.find_element("id", "token").send_keys(token)
    driver.find_element("id", "reason").send_keys("typo in web backend")
    driver.find_element("css selector", f'button.rollback[data-version="{good}"]').click()
    wait_until(lambda: f"pinned to version {good}" in driver.find_element("id", "action-result").text, timeout=10)
    gw.wait_served_by("web.example.com", "/", "web")
    banner = driver.find_element("id", "banner")
    wait_until(lambda: banner.is_displayed() and f"version {good}" in banner.text, timeout=10)
    shot(driver, "history-pinned")

    # Resume from the console: the sources are served again.
    driver.find_element("id", "resume").click()
    wait_until(lambda: "resumed" in driver.find_element("id", "action-result").text, timeout=10)
    gw.wait_status("web.example.com", "/", 503)
    assert gw.admin("/debug/history")["pin"] is None
    assert {p.name for p in ARTIFACTS.iterdir()} >= {
        "clusters.png", "envoys.png", "ingresses.png", "history-diff.png", "history-pinned.png"
    }

