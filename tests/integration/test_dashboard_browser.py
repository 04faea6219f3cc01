"""The dashboard in a real browser (Debian's headless Chromium, driven by Selenium): log in,
watch a task go from upload to jobs-ready live without a reload, open a pre-annotated frame
with its boxes drawn, and see what an annotator's token may see. Screenshots of each page go to
``docs/screenshots/`` when ``LABELLOOP_SCREENSHOTS`` names that folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from labelloop.client import LabelloopClient
from labelloop.timeline import ADMIN_ONLY_TYPES
from labelloop_tools.synthetic import annotations_body, write_synthetic_frames
from tests.integration.harness import ApiServer, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.training, pytest.mark.browser]

LABELED, HELD_OUT = 40, 8
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not CHROMIUM.is_file() or not DRIVER.is_file():
        raise RuntimeError(
            "Debian's chromium and chromium-driver are needed: `make test` installs them"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait(driver: webdriver.Chrome, timeout_s: float) -> WebDriverWait[webdriver.Chrome]:
    """A wait that reads elements the page replaces as events arrive (its live figures)."""
    return WebDriverWait(
        driver, timeout_s, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    )


def shot(driver: webdriver.Chrome, name: str) -> None:
    folder = os.environ.get("LABELLOOP_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def log_in(driver: webdriver.Chrome, base: str, token: str) -> None:
    driver.get(f"{base}/ui/")
    assert "/ui/login" in driver.current_url, "a page without a login sends the visitor there"
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()

    def tasks_listed(d: webdriver.Chrome) -> bool:  # the page itself, not only its address
        return bool(d.find_elements(By.ID, "tasks") or d.find_elements(By.ID, "no-tasks"))

    try:
        WebDriverWait(driver, 60, poll_frequency=0.2).until(tasks_listed)
    except TimeoutException:
        page = driver.page_source[:2000]
        raise AssertionError(f"no tasks page at {driver.current_url}:\n{page}") from None


def test_the_dashboard_live_in_a_browser(
    browser: webdriver.Chrome, api: ApiServer, client: LabelloopClient, tmp_path: Path
) -> None:
    base = api.url
    truth = write_synthetic_frames(tmp_path / "frames", range(300, 300 + LABELED + HELD_OUT))
    files = sorted((tmp_path / "frames").iterdir())
    task = client.request(
        "POST",
        "/api/tasks",
        json={
            "name": "dashboard cars",
            "labels": ["box"],
            "label_threshold": LABELED,
            "priority": 0,
        },
    )
    task_id = task["id"]
    log_in(browser, base, api.settings.admin_token)
    assert "dashboard cars" in browser.find_element(By.ID, "tasks").text

    # the tasks page is live too: a task created elsewhere appears without a reload
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "live").is_displayed())
    browser.execute_script("window.stillTheSamePage = true;")
    client.request("POST", "/api/tasks", json={"name": "arrived live", "labels": ["box"]})
    wait(browser, 30).until(lambda d: "arrived live" in d.find_element(By.ID, "tasks").text)
    assert browser.execute_script("return window.stillTheSamePage === true;")

    # upload to jobs-ready, watched live: the page is never reloaded
    browser.get(f"{base}/ui/tasks/{task_id}")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "live").is_displayed())
    browser.execute_script("window.stillTheSamePage = true;")
    assert browser.find_element(By.ID, "jobs").text == "0"
    client.upload(task_id, files)

    def jobs_ready(driver: webdriver.Chrome) -> bool:
        rows = driver.find_elements(
            By.CSS_SELECTOR, 'tr.event[data-type="io.labelloop.task.jobs-ready.v1"]'
        )
        return bool(rows) and driver.find_element(By.ID, "jobs").text == "1"

    wait(browser, 120).until(jobs_ready)
    assert browser.execute_script("return window.stillTheSamePage === true;")
    wait(browser, 20).until(
        lambda d: d.find_element(By.ID, "processed").text == str(LABELED + HELD_OUT)
    )
    shot(browser, "task")

    # a model trained on the labels pre-annotates the rest; its frame page draws both kinds
    [job] = client.request("GET", f"/api/tasks/{task_id}/jobs")
    labeled = job["frames"][:LABELED]
    client.request(
        "PUT", f"/api/jobs/{job['id']}/annotations", json=annotations_body(labeled, truth)
    )
    held_out = [name for name in job["frames"] if name not in labeled]

    def preannotated() -> list[str]:
        found = client.request("GET", f"/api/jobs/{job['id']}/preannotations")["frames"]
        return [f["frame"] for f in found if f["boxes"]]

    assert wait_until(preannotated, timeout_s=900, interval_s=2)
    wait(browser, 60).until(lambda d: d.find_element(By.ID, "model").text == "v1")
    assert browser.execute_script("return window.stillTheSamePage === true;")
    # each job's label progress, and the run's curves, plotted from its epochs as they came
    progress = browser.find_element(By.CSS_SELECTOR, f'#job-list tr[data-job="{job["id"]}"]')
    assert progress.find_element(By.CLASS_NAME, "job-labeled").text == str(LABELED)
    run = browser.find_element(By.CSS_SELECTOR, '.run-curves[data-version="1"]')
    lines = run.find_elements(By.TAG_NAME, "polyline")
    assert len(lines) == 7, "losses (box, cls, dfl) and precision, recall, mAP50, mAP50-95"
    assert all(len((line.get_attribute("points") or "").split()) >= 2 for line in lines)
    shot(browser, "task-with-model")

    # a correlation link narrows the timeline to its chain: the training run's events
    run.find_element(By.CSS_SELECTOR, "a.mono").click()
    wait(browser, 20).until(lambda d: d.find_elements(By.ID, "chain"))
    chain = {
        row.get_attribute("data-type") for row in browser.find_elements(By.CSS_SELECTOR, "tr.event")
    }
    assert "io.labelloop.training.started.v1" in chain
    assert "io.labelloop.model.published.v1" in chain
    assert "io.labelloop.task.jobs-ready.v1" not in chain, "another chain's event is left out"
    browser.execute_script("document.getElementById('chain').scrollIntoView();")
    shot(browser, "timeline-chain")
    browser.get(f"{base}/ui/")
    row = f'#tasks tr[data-task="{task_id}"]'
    wait(browser, 20).until(lambda d: "v1" in d.find_element(By.CSS_SELECTOR, row).text)
    shot(browser, "tasks")
    frame = preannotated()[0]
    assert frame in held_out
    browser.get(f"{base}/ui/tasks/{task_id}/frames/{frame}")
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script(
            "const i = document.getElementById('frame'); return i.complete && i.naturalWidth > 0;"
        )
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#boxes rect.prediction")
    assert not browser.find_elements(By.CSS_SELECTOR, "#boxes rect.label")
    shot(browser, "frame")
    browser.get(f"{base}/ui/tasks/{task_id}/frames/{labeled[0]}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#boxes rect.label")) == len(
        truth[labeled[0]]
    )

    # an annotator's token: its task alone, and no admin-only event on its timeline
    other = client.request("POST", "/api/tasks", json={"name": "not yours", "labels": ["box"]})
    scoped = client.request(
        "POST", "/api/tokens", json={"name": "ann", "role": "annotator", "task_ids": [task_id]}
    )
    browser.delete_all_cookies()
    log_in(browser, base, scoped["token"])
    listed = browser.find_element(By.ID, "tasks").text
    assert "dashboard cars" in listed and "not yours" not in listed
    shot(browser, "tasks-annotator")
    browser.get(f"{base}/ui/tasks/{other['id']}")
    assert "not yours" not in browser.page_source
    browser.get(f"{base}/ui/tasks/{task_id}")
    types = {
        row.get_attribute("data-type") for row in browser.find_elements(By.CSS_SELECTOR, "tr.event")
    }
    assert "io.labelloop.task.jobs-ready.v1" in types
    assert not types & ADMIN_ONLY_TYPES, "admin-only events stay hidden"
