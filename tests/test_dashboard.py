"""The live dashboard: its JSON snapshot and guard over plain HTTP, and the
page itself in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) against a real gateway and
simulator, before and after traffic."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from aimesh.config import AiMeshConfig
from aimesh.mesh import AiMesh
from aimesh.server.app import create_app
from tests.conftest import openai_endpoint
from tests.gateway import Gateway, Sim

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ADMIN_KEY = "dashboard-test-key"
WAIT_S = 20.0  # every browser wait is bounded by this
STATE_KEYS = {
    "server_time_ms",
    "uptime_s",
    "queue_depth",
    "messages",
    "messages_total",
    "async_accepted",
    "rejections",
    "tokens_used",
    "cost",
    "latency_ms",
    "endpoints",
    "decisions",
    "budgets",
}
ENDPOINT_KEYS = {
    "endpoint_id",
    "group",
    "health",
    "circuit_open",
    "current_load",
    "capacity",
    "latency_p99_ms",
    "latency_ms",
    "error_rate",
    "cost_per_1k_tokens",
    "requests",
    "failures",
}


def mesh_endpoints(sim: Sim) -> list[dict[str, Any]]:
    return [
        openai_endpoint(sim, "sim-a", group="gpt-4o", cost_per_1k_tokens=0.5, capacity=8),
        openai_endpoint(sim, "sim-b", group="gpt-4o", cost_per_1k_tokens=2.0, capacity=8),
        openai_endpoint(sim, "sim-c", group="gpt-4o-mini", cost_per_1k_tokens=0.1),
    ]


def send_traffic(gw: Gateway, n: int) -> None:
    with gw.client() as c:
        for i in range(n):
            model = "gpt-4o" if i % 3 else "gpt-4o-mini"
            body = {
                "agent_id": "agent-1",
                "payload_text": f"hello {i}",
                "metadata": {"model": model},
            }
            r = c.post("/messages", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "success"


# -- plain HTTP -----------------------------------------------------------------


def test_state_snapshot_has_every_figure(sims: Callable[..., Sim], gateways: Any) -> None:
    gw = gateways(mesh_endpoints(sims()), budgets=[{"agent_id": "agent-1", "tokens": 100_000}])
    send_traffic(gw, 6)
    with gw.client() as c:
        r = c.get("/dashboard/state")
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"
        state = r.json()
        assert set(state) >= STATE_KEYS
        assert [e["endpoint_id"] for e in state["endpoints"]] == ["sim-a", "sim-b", "sim-c"]
        for e in state["endpoints"]:
            assert set(e) >= ENDPOINT_KEYS
        assert state["messages_total"] == 6
        assert state["messages"]["success"] == 6
        assert state["tokens_used"] > 0
        assert state["cost"] > 0
        assert state["latency_ms"]["p99"] >= state["latency_ms"]["p50"] > 0
        assert len(state["decisions"]) == 6
        newest = state["decisions"][0]
        assert newest["agent_id"] == "agent-1"
        assert set(newest["score_breakdown"]) == {
            "cost_score",
            "load_score",
            "latency_score",
            "total_score",
        }
        assert newest["at_ms"] >= state["decisions"][-1]["at_ms"]
        (budget,) = state["budgets"]
        assert budget["agent_id"] == "agent-1"
        assert budget["limit"] == 100_000
        assert budget["used"] == state["tokens_used"]
        assert budget["used"] + budget["reserved"] + budget["remaining"] == budget["limit"]

        page = c.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        for asset, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            r = c.get(f"/dashboard/{asset}")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith(kind)
            assert asset in page.text  # the page loads it from this origin


def test_state_needs_the_admin_key_when_one_is_set(sims: Callable[..., Sim], gateways: Any) -> None:
    # Loopback, but with a key admin routes are closed: so is the snapshot.
    gw = gateways(mesh_endpoints(sims()), env={"AIMESH_ADMIN_KEY": ADMIN_KEY})
    with gw.client() as c:
        r = c.get("/dashboard/state")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "missing_api_key"
        r = c.get("/dashboard/state", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = c.get("/dashboard/state", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200
        assert len(r.json()["endpoints"]) == 3
        # The page holds no data and a browser cannot send a bearer when it
        # navigates: it loads, then asks for the key.
        assert c.get("/dashboard").status_code == 200


def test_public_address_without_a_key_has_no_dashboard() -> None:
    # As create_app is called for a non-loopback bind without AIMESH_ADMIN_KEY.
    client = TestClient(create_app(AiMesh(AiMeshConfig()), manage_lifecycle=False))
    for path in ("/dashboard", "/dashboard/state", "/dashboard/dashboard.js"):
        r = client.get(path)
        assert r.status_code == 403, path
        assert r.json()["error"]["code"] == "admin_key_required"


# -- the page in a browser --------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Debian Chromium; Selenium Manager never runs (explicit driver)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        # CI installs both (.ci/run); a developer machine without them skips.
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are required in CI")
        pytest.skip("chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # Without these Chromium phones home and waits on the closed network.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1500",  # the whole page in the screenshot
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message=what)


# What the page shows, read in one script: the page re-renders its tables
# every second, so element handles kept across reads could go stale.
READ_PAGE = """
const cells = (tr) => Array.from(tr.cells, (td) => td.textContent);
const rows = (sel, attr) => Array.from(document.querySelectorAll(sel),
  (tr) => ({key: tr.getAttribute(attr), cells: cells(tr), health: tr.dataset.health}));
const data = (id, name) => Number(document.getElementById(id).getAttribute(name));
return {
  status: document.getElementById("status").dataset.state,
  messages: data("messages-total", "data-value"),
  peak: data("throughput-chart", "data-peak"),
  points: data("latency-chart", "data-points"),
  endpoints: rows("#endpoints tbody tr[data-endpoint]", "data-endpoint"),
  decisions: rows("#decisions tbody tr", "data-target"),
  budgets: rows("#budgets tbody tr[data-agent]", "data-agent"),
};
"""


def page(driver: Any) -> dict[str, Any]:
    return dict(driver.execute_script(READ_PAGE))


def endpoint_ids(driver: Any) -> list[str]:
    return sorted(e["key"] for e in page(driver)["endpoints"])


def console_errors(driver: Any) -> list[str]:
    # A favicon 404 is the browser's own request, not the page's.
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]
    ]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_dashboard_shows_the_live_mesh(
    sims: Callable[..., Sim], gateways: Any, browser: Any, tmp_path: Path
) -> None:
    gw = gateways(
        mesh_endpoints(sims("--latency-ms", "5")),
        budgets=[{"agent_id": "agent-1", "tokens": 100_000}],
    )
    browser.get(f"{gw.url}/dashboard")
    ids = ["sim-a", "sim-b", "sim-c"]
    wait_for(browser, lambda d: endpoint_ids(d) == ids, "the mesh's endpoints are listed")
    before = page(browser)
    assert before["status"] == "live"
    sim_a = before["endpoints"][0]
    assert (sim_a["key"], sim_a["health"]) == ("sim-a", "healthy")
    assert "0.5000" in sim_a["cells"]  # cost per 1k tokens
    # Before traffic: nothing counted or routed. What follows can only pass
    # if the page keeps updating itself.
    assert before["messages"] == 0
    assert before["decisions"] == []

    n = 30
    send_traffic(gw, n)

    # The Mesh records a message's routing decision and settles its budget
    # before it counts it: a snapshot counting all 30 shows the rest too.
    wait_for(browser, lambda d: page(d)["messages"] >= n, "all messages are counted")
    wait_for(browser, lambda d: page(d)["peak"] > 0, "a non-zero throughput is charted")
    after = page(browser)
    assert len(after["decisions"]) == 15  # the newest 15 of 30
    assert {d["key"] for d in after["decisions"]} <= set(ids)
    _, agent, _, target, cost, load, latency, total, _ = after["decisions"][0]["cells"]
    assert agent == "agent-1"
    assert target in ids
    assert float(total) == pytest.approx(float(cost) + float(load) + float(latency), abs=0.002)
    assert sum(int(e["cells"][7].replace(",", "")) for e in after["endpoints"]) >= n
    (budget,) = after["budgets"]
    assert budget["key"] == "agent-1"
    assert int(budget["cells"][2].replace(",", "")) > 0  # tokens used
    assert after["points"] >= 2
    assert console_errors(browser) == []

    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    width, height = png_size(data)
    assert width >= 800 and height >= 600
    assert len(data) > 20_000  # tables, tiles and charts, not a blank page


def test_dashboard_asks_for_the_admin_key(
    sims: Callable[..., Sim], gateways: Any, browser: Any
) -> None:
    from selenium.webdriver.support import expected_conditions as ec

    gw = gateways(mesh_endpoints(sims()), env={"AIMESH_ADMIN_KEY": ADMIN_KEY})
    browser.get(f"{gw.url}/dashboard")
    prompt = wait_for(browser, ec.alert_is_present(), "the page asks for the admin key")
    prompt.send_keys(ADMIN_KEY)
    prompt.accept()
    wait_for(browser, lambda d: len(endpoint_ids(d)) == 3, "the endpoints load with the key")
    # The 401s before the prompt are expected; nothing else may fail.
    assert all("401" in e for e in console_errors(browser))
