"""The workbench in a real JupyterLab in headless Chromium: open 02_optimizations, run
all cells, flip a toggle, set max_steps, press Train, wait for the loss plot and the
status, and keep a screenshot under the test's output folder."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_optimizations.ipynb"
TIMEOUT_MS = 180_000
KERNEL_READY = """() => {
  const app = window.jupyterapp; if (!app) return false;
  const w = app.shell.currentWidget, sc = w && w.sessionContext;
  const k = sc && sc.session && sc.session.kernel;
  return !!(k && sc.isReady && k.connectionStatus === 'connected' && k.status === 'idle');
}"""
RAN = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
              .some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))"""
ALL_DONE = """n => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  return p.length === n && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }"""

if not Path(CHROMIUM).exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError("chromium is missing in CI: `make test` installs it with apt-get")
    pytest.skip("needs Debian's chromium: apt-get install chromium (make test does it as root)",
                allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    root = tmp_path / "nb"
    root.mkdir()
    shutil.copy2(NOTEBOOK, root / NOTEBOOK.name)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"checkForUpdates": False, "fetchNews": "false"}))
    port, token = free_port(), "ndwork-browser-test"
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "PYTHONPATH": str(NOTEBOOK.parents[1])}
    command = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
               "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    with open(tmp_path / "lab.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  cwd=root, start_new_session=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}",
                                       timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, \
                    (tmp_path / "lab.log").read_text()[-3000:]
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}", tmp_path
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_workbench_in_jupyterlab(lab):
    url, out = lab
    shot = out / "workbench.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            user_data_dir=str(out / "chromium"), executable_path=CHROMIUM, headless=True,
            args=FLAGS, viewport={"width": 1280, "height": 2400})
        page = browser.pages[0] if browser.pages else browser.new_page()
        try:
            page.goto(url, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
            page.wait_for_selector(".jp-Notebook", timeout=TIMEOUT_MS)
            page.wait_for_function(KERNEL_READY, timeout=TIMEOUT_MS)
            for _ in range(3):  # a Run All sent before the kernel connects is dropped
                page.keyboard.press("Escape")
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                try:
                    page.wait_for_function(RAN, timeout=15_000)
                    break
                except playwright.TimeoutError:
                    continue
            cells = page.locator(".jp-CodeCell").count()
            page.wait_for_function(ALL_DONE, arg=cells, timeout=TIMEOUT_MS)
            toggle = page.locator(".widget-toggle-button", has_text="numba kernels").first
            toggle.wait_for(state="visible", timeout=TIMEOUT_MS)
            toggle.click()
            page.get_by_text("kernels=numpy").first.wait_for(timeout=TIMEOUT_MS)
            steps = page.locator(".widget-inline-hbox", has_text="max_steps").locator("input")
            steps.first.fill("37")
            steps.first.press("Enter")
            page.locator("button.widget-button", has_text="Train").first.click()
            page.get_by_text("trained 37 steps").first.wait_for(timeout=TIMEOUT_MS)
            page.wait_for_function(  # the loss plot drew its train-loss line
                "() => [...document.querySelectorAll('.js-plotly-plot .scatterlayer path.js-line')]"
                ".some(p => (p.getAttribute('d') || '').length > 20)", timeout=TIMEOUT_MS)
            page.wait_for_timeout(500)
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    assert shot.stat().st_size > 10_000
