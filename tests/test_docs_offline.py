"""/docs (Swagger UI) and /redoc render with the network blocked: a real headless Chromium
(Debian's ``chromium`` package, driven by Playwright's Python client) loads both pages from a real
uvicorn, every request to any other host is aborted, and the page must show the route list.

Screenshots land in var/screenshots/. Without Chromium or Playwright the test skips locally and
fails under CI (CI=true): ``make install`` installs both (Chromium through apt-get, as root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "var" / "screenshots"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
#: Redoc's "API docs by Redocly" footer shows a logo from its CDN, an <img> that hides itself
#: when it cannot load: the one outside request a page may make (and it is aborted here).
DECORATIVE = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}


def _need(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required in CI; `make install` provides it)")
    pytest.skip(reason)


def _chromium() -> str:
    path = os.environ.get("RNNHPO_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if not path:
        _need("no Chromium on PATH: `apt-get install chromium` (make install does it as root)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``uvicorn --factory service.api.app:create_app`` on a free port, fresh SQLite, no runner."""
    tmp = tmp_path_factory.mktemp("docs")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNHPO_")}
    env.update({"RNNHPO_HOME": str(tmp / "home"), "RNNHPO_DATABASE_URL": f"sqlite:///{tmp / 'docs.db'}",
                "RNNHPO_RUNNER_IN_PROCESS": "false"})
    log = open(tmp / "uvicorn.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "service.api.app:create_app",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not come up:\n{(tmp / 'uvicorn.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package is not installed (pip install playwright; no `playwright install`)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            yield b
        finally:
            b.close()


def _offline_page(browser, server: str):
    """A page whose requests to anything but ``server`` are aborted and recorded."""
    own = urlsplit(server).netloc
    blocked: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 1000})

    def route(r):
        url = r.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == own:
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page, blocked, errors


#: page -> a selector that exists once the page has rendered the OpenAPI document
RENDERED = {"/docs": ".opblock-summary-path", "/redoc": "[data-section-id^='operation/']"}


@pytest.mark.parametrize("path", sorted(RENDERED))
def test_docs_page_renders_offline(browser, server, path):
    context, page, blocked, errors = _offline_page(browser, server)
    try:
        response = page.goto(server + path, wait_until="networkidle")
        assert response is not None and response.status == 200
        page.wait_for_selector(RENDERED[path], timeout=30_000)
        text = " ".join(page.inner_text("body").split())
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{path.strip('/')}-offline.png"))
    finally:
        context.close()
    for operation in ("POST /api/v1/experiments", "GET /api/v1/experiments/{exp_id}/compare"):
        assert operation in text, f"{path} does not show {operation}"
    assert set(blocked) <= DECORATIVE, f"{path} needs other hosts: {sorted(set(blocked) - DECORATIVE)}"
    assert errors == [], f"{path} raised in the browser: {errors}"
