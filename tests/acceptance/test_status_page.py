"""The status page at ``/`` in a real headless Chromium (Debian's ``chromium`` driven by ``chromedriver`` through Selenium).

A real guard process forwards to a real Orthanc; the page must load without a console error,
show exactly the numbers ``GET /status`` reports, find a study by its UID with its state and
audit history, and list the delete decisions. A screenshot is saved in the test's tmp folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.acceptance.conftest import GuardFactory
from tests.support.availability import unavailable
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop

TOKEN = "status-page-test-token"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with its console log readable; quit (by its own driver process) at teardown."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        unavailable("chromium and chromium-driver (Debian packages) are needed for the status page test")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1400"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium never tries to download one.
    service = Service(executable_path=str(driver), log_output=str(tmp_path / "chromedriver.log"))
    try:
        drv = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        pytest.fail(f"headless Chromium did not start: {exc.msg}")
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def _text(drv: WebDriver, element_id: str) -> str:
    return str(drv.find_element(By.ID, element_id).text)


def _console_problems(drv: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in drv.get_log("browser") if entry.get("level") in {"SEVERE", "WARNING"}]


def _loaded_after(drv: WebDriver, count: int) -> bool:
    return int(drv.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") or 0) > count


def _start_guard(guard_factory: GuardFactory, orthanc: Orthanc) -> tuple[GuardProcess, str]:
    http_port = free_port()
    guard = guard_factory(
        archive_port=orthanc.dicom_port,
        http={"bind": "127.0.0.1", "port": http_port, "token": TOKEN},
        archive={"probe_interval": 0.5},
        delete={"source_check": False},
    )
    orthanc.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    guard.start()
    return guard, f"http://127.0.0.1:{http_port}"


def test_status_page_shows_the_api_numbers_finds_a_study_and_lists_decisions(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory, browser: WebDriver, tmp_path: Path
) -> None:
    """Three instances confirmed by Orthanc, one refused and one permitted delete: the page shows what the API says."""
    guard, base = _start_guard(guard_factory, orthanc_archive)
    study = synthetic_study(3)
    result = storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Success"] * 3, result.stdout + result.stderr
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="study not confirmed")
    unknown = "1.2.826.0.1.3680043.10.1077.999999"
    with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        assert api.delete(f"/studies/{unknown}").status_code == 409
        assert api.delete(f"/studies/{study.study_uid}").status_code == 200
        wait_until(lambda: api.get("/status").json()["archive"]["reachable"] is True, 20, message="archive never probed reachable")
        status = api.get("/status").json()

    browser.get(base + "/")
    wait_until(lambda: _loaded_after(browser, 0), 20, message="the page never rendered /status")
    assert status["confirmed"] == 3
    assert _text(browser, "count-confirmed") == str(status["confirmed"])
    assert _text(browser, "count-pending") == str(status["pending"]) == "0"
    assert _text(browser, "count-dead") == str(status["dead_lettered"]) == "0"
    assert _text(browser, "queue-depth") == str(status["queue_depth"]) == "0"
    assert _text(browser, "oldest-age") == "none"
    assert _text(browser, "archive-state").startswith("archive reachable")
    assert _text(browser, "throughput-total") == "3 received, 3 confirmed in the last hour"
    bars = browser.find_elements(By.CSS_SELECTOR, "#throughput-chart rect")
    assert len(bars) == 2 * status["throughput"]["minutes"]
    assert sum(float(b.get_attribute("height") or 0) > 0 for b in bars) >= 2  # a received and a confirmed bar at least

    decisions = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#decisions tr")]
    assert len(decisions) == len(status["recent_decisions"]) == 2
    assert study.study_uid in decisions[0]
    assert "permitted" in decisions[0]
    assert unknown in decisions[1]
    assert "refused" in decisions[1]
    assert "unknown-study" in decisions[1]
    assert "no dead letters" in _text(browser, "dead-letters")

    browser.find_element(By.ID, "study-uid").send_keys(study.study_uid)
    browser.find_element(By.CSS_SELECTOR, "#study-form button").click()
    wait_until(lambda: browser.find_element(By.ID, "study-result").get_attribute("data-uid") == study.study_uid, 20, message="no result")
    audit_rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#study-audit tr")]
    assert sum("instance.received" in r for r in audit_rows) == 3
    assert sum("instance.confirmed" in r for r in audit_rows) == 3
    assert any("delete.permitted" in r for r in audit_rows)
    counts = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#study-counts tr")]
    assert counts == ["confirmed 3"]

    screenshot = tmp_path / "status-page.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"status page screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    problems = _console_problems(browser)
    assert problems == [], problems
    guard.stop()


def test_status_page_rejects_an_invalid_uid_and_reports_an_unreachable_archive(
    guard_factory: GuardFactory, browser: WebDriver, tmp_path: Path
) -> None:
    """No archive listens: the badge says UNREACHABLE; a malformed UID in the search is refused by the page without a request."""
    http_port, dead_port = free_port(), free_port()
    guard = guard_factory(archive_port=dead_port, http={"bind": "127.0.0.1", "port": http_port}, archive={"probe_interval": 0.5})
    guard.start()
    base = f"http://127.0.0.1:{http_port}"
    wait_until(lambda: httpx.get(base + "/status", timeout=10).json()["archive"]["reachable"] is False, 20, message="probe never ran")
    browser.get(base + "/")
    wait_until(lambda: _loaded_after(browser, 0), 20, message="the page never rendered /status")
    assert _text(browser, "archive-state") == "archive UNREACHABLE"
    browser.find_element(By.ID, "study-uid").send_keys("1.2.03")  # a leading zero breaks the UID grammar
    browser.execute_script("document.getElementById('study-form').requestSubmit()")
    wait_until(lambda: browser.find_element(By.ID, "error").is_displayed(), 10, message="no error shown")
    assert "not a valid Study Instance UID" in _text(browser, "error")
    assert not browser.find_element(By.ID, "study-result").is_displayed()
    browser.save_screenshot(str(tmp_path / "status-page-unreachable.png"))
    print(f"status page screenshot: {tmp_path / 'status-page-unreachable.png'}")
    assert _console_problems(browser) == []
    guard.stop()


def test_status_page_asks_for_a_token_when_reads_require_one_and_sends_it_as_bearer(
    guard_factory: GuardFactory, browser: WebDriver
) -> None:
    """With http.read_requires_token the page shows no numbers until given a token, then reads /status with it."""
    http_port = free_port()
    guard = guard_factory(
        archive_port=free_port(),
        http={"bind": "127.0.0.1", "port": http_port, "token": TOKEN, "read_requires_token": True},
        archive={"probe_interval": 0},
    ).start()
    base = f"http://127.0.0.1:{http_port}"
    assert httpx.get(base + "/status", timeout=10).status_code == 401
    assert httpx.get(base + "/", timeout=10).status_code == 200  # the page itself holds no data
    browser.get(base + "/")
    wait_until(lambda: browser.find_element(By.ID, "token-box").is_displayed(), 20, message="no token prompt")
    assert _text(browser, "count-confirmed") == "\N{EN DASH}"  # the placeholder before any data
    browser.find_element(By.ID, "token-input").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait_until(lambda: browser.find_element(By.ID, "token-box").is_displayed(), 20, message="a wrong token was accepted")
    assert not _loaded_after(browser, 0)
    browser.find_element(By.ID, "token-input").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait_until(lambda: _loaded_after(browser, 0), 20, message="the page never rendered /status with the token")
    assert _text(browser, "count-confirmed") == "0"
    assert not browser.find_element(By.ID, "token-box").is_displayed()
    # The only console entries are the browser's own notes of the refused (401) requests.
    assert all("401" in entry["message"] for entry in _console_problems(browser)), _console_problems(browser)
    guard.stop()
