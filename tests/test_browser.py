"""JupyterLab in a real browser: `make lab`'s server, driven by headless Chromium (Debian's
chromium and chromium-driver, installed here when missing), opens a curriculum notebook, runs
all its cells from the Run menu, reads back the first visible test's output, and presses
nbgrader's Validate button. The blank release fails both; the same notebook answered passes
both. On a failure the page is saved as a screenshot (its path is in the message).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from grading_helpers import answered, release

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# as root in a container, with no network: no sandbox, no GPU, no calls home
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--window-size=1400,1000")
ASSIGNMENT, NOTEBOOK = "00_start", "start"
WAIT_S = 90
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in view
# every cell in the page (not only those in view), and no pop-up asking about news
SETTINGS = {"@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"}}


def install_chromium() -> str | None:
    """Install Debian's chromium and chromium-driver when they are missing: None once they are
    there, else why they cannot be."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return "no apt-get here to install Debian's chromium and chromium-driver"
    if os.geteuid() != 0:
        return "installing chromium and chromium-driver with apt-get needs root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in ([apt, "update", "-q"],
                    [apt, "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` took over 15 minutes"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return f"`{' '.join(command)}` failed: {last}"
    return None if CHROMIUM.exists() and CHROMEDRIVER.exists() else "apt-get installed no chromium"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why = install_chromium()
    if why is not None:
        pytest.skip(f"no Chromium for the browser test: {why}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`make lab`'s command (from the repository, so nbgrader finds the course's configuration)
    on a copy of two notebooks: running and validating them saves them."""
    course = tmp_path_factory.mktemp("lab")
    (course / "blank").mkdir()
    (course / "answered").mkdir()
    nbformat.write(release(ASSIGNMENT, NOTEBOOK), course / "blank" / f"{NOTEBOOK}.ipynb")
    nbformat.write(answered(ASSIGNMENT, NOTEBOOK), course / "answered" / f"{NOTEBOOK}.ipynb")
    settings = course / ".settings"
    for name, value in SETTINGS.items():
        path = settings / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    token, port = secrets.token_hex(16), _free_port()
    command = [str(Path(sys.executable).parent / "jupyter"), "lab", f"--ServerApp.root_dir={course}",
               "--no-browser", f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
               f"--IdentityProvider.token={token}", f"--LabApp.workspaces_dir={course / '.workspaces'}",
               f"--LabApp.user_settings_dir={settings}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    log = open(course / "lab.log", "w")  # noqa: SIM115 -- closed at teardown
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail(f"jupyter lab did not start:\n{(course / 'lab.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield base, token, course
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@contextlib.contextmanager
def screenshot_on_failure(driver, path: Path):
    try:
        yield
    except BaseException as error:
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(path))
        raise AssertionError(f"{error}\n(the page as it was: {path})") from error


def first_visible_test(nb) -> int:
    """Index of the notebook's first test cell whose tests the student sees."""
    for i, cell in enumerate(nb.cells):
        settings = cell.metadata.get("nbgrader", {})
        if settings.get("grade") and not settings.get("solution") and "HIDDEN" not in cell.source:
            return i
    raise AssertionError("no visible test in the notebook")


def run_and_validate(driver, base: str, token: str, folder: str) -> tuple[str, str]:
    """Open the notebook, Run > Run All Cells, wait for the first visible test; then Validate.
    Returns (that test's output text, the validation message's class and text)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S)
    driver.get(f"{base}/lab/tree/{folder}/{NOTEBOOK}.ipynb?reset&token={token}")  # no other tabs
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, f"{PANEL} .jp-Cell")))
    wait.until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']")))
    menu = (By.XPATH, "//div[contains(@class, 'lm-MenuBar-itemLabel') and normalize-space()='Run']")
    wait.until(ready.element_to_be_clickable(menu)).click()
    wait.until(ready.element_to_be_clickable(
        (By.XPATH, "//li[contains(@class, 'lm-Menu-item')]"
                   "[.//div[contains(@class, 'lm-Menu-itemLabel') and normalize-space()='Run All Cells']]"))
               ).click()
    nb = release(ASSIGNMENT, NOTEBOOK)
    cells = driver.find_elements(By.CSS_SELECTOR, f"{PANEL} .jp-Notebook .jp-Cell")
    assert len(cells) == len(nb.cells), f"the page shows {len(cells)} of {len(nb.cells)} cells"
    test_cell = cells[first_visible_test(nb)]

    def finished(_):
        prompt = test_cell.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").text.strip()
        return prompt[1:-2].isdigit() and prompt  # "[7]:" once run, "[*]:" while running

    wait.until(finished, "the first visible test never ran")
    outputs = test_cell.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
    test_output = "\n".join(o.text for o in outputs)
    wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, f"{PANEL} jp-button.validate-button"))
               ).click()
    message = wait.until(ready.presence_of_element_located((By.ID, "validation-message")))
    verdict = (message.get_attribute("class") or "", message.text)
    driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept").click()
    return test_output, verdict


def test_the_blank_release_fails_its_visible_test_and_validation(browser, lab):
    base, token, course = lab
    with screenshot_on_failure(browser, course / "blank.png"):
        output, (kind, text) = run_and_validate(browser, base, token, "blank")
        assert "NotImplementedError" in output, output
        assert "validation-failed" in kind and "The following cell failed" in text, (kind, text)


def test_the_answered_notebook_passes_its_visible_test_and_validation(browser, lab):
    base, token, course = lab
    with screenshot_on_failure(browser, course / "answered.png"):
        output, (kind, text) = run_and_validate(browser, base, token, "answered")
        assert "Error" not in output, output
        assert "validation-success" in kind, (kind, text)
        assert "Success! Your notebook passes all the tests." in text
