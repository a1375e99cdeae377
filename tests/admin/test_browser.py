"""The admin UI in a real browser (Playwright + Chromium): ingest from the UI, search, thumbnails.

Skipped when Playwright or Chromium is missing. Screenshots go to tests/admin/screenshots/.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from shoebox.admin import launch
from shoebox.launcher import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).with_name("screenshots")

pytestmark = pytest.mark.slow


@pytest.fixture
def ui(ui_env) -> str:
    pytest.importorskip("streamlit")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}")
    port = free_port()
    proc = launch(
        ui_env.ingest.url, None, port, ml_url=ui_env.ml.url, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/_stcore/health", timeout=1).text.strip() == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the UI did not start"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_browser_ingest_search_thumbnails(ui: str, ui_env) -> None:
    from playwright import sync_api

    SHOTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(ui)
            page.get_by_text("TEST MODEL").first.wait_for()
            page.screenshot(path=str(SHOTS / "1-services.png"), full_page=True)

            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.get_by_text("Ingest", exact=True).click()
            page.get_by_label("Collection (empty: the service's selected one)").fill("browser")
            page.keyboard.press("Enter")
            start = page.get_by_role("button", name="Start ingest")
            start.wait_for()
            time.sleep(1.0)  # let the rerun of the text input settle
            start.click()
            # The live fragment updates the progress until the job's end, without any click.
            page.get_by_text("Finished:").first.wait_for(timeout=90_000)
            page.screenshot(path=str(SHOTS / "2-ingest.png"), full_page=True)
            with httpx.Client(base_url=ui_env.ingest.url) as api:
                assert (
                    api.get("/api/v1/collections/browser/info").json()["points_count"] == 8
                )  # trip (7 distinct: an exact copy, a resized one) and bad/fine.jpg

            sidebar.get_by_text("Search", exact=True).click()
            page.get_by_label("Describe the photo").fill("a photo")
            page.get_by_role("button", name="Search").click()
            images = page.locator('[data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img')
            page.wait_for_function(
                "() => [...document.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0"
                " && i.src.includes('/media/')).length >= 6",
                timeout=60_000,
            )
            loaded = images.evaluate_all("els => els.filter(i => i.complete && i.naturalWidth > 0).length")
            assert loaded >= 6
            page.screenshot(path=str(SHOTS / "3-search.png"), full_page=True)

            # Search by an example photo (upload), then a detail view.
            page.locator('input[type="file"]').set_input_files(str(ui_env.trip / "img_0001.jpg"))
            page.get_by_text("img_0001.jpg").first.wait_for()  # the uploader shows the file
            page.get_by_role("button", name="Search").click()
            # The description still in its box and the photo make one combined query.
            page.get_by_text("Text: “a photo” · Like the uploaded photo img_0001.jpg").wait_for()
            page.get_by_role("button", name="Details").first.click()
            page.get_by_text("Photo details").wait_for()
            page.get_by_text("Near duplicates").wait_for()
            page.screenshot(path=str(SHOTS / "4-detail.png"), full_page=True)

            sidebar.get_by_text("Duplicates", exact=True).click()
            page.get_by_text("Exact copies (1 group(s))").wait_for()
            page.get_by_text("Same picture (1 group(s))").wait_for()
            page.get_by_text("✅ KEEP").first.wait_for()
            page.screenshot(path=str(SHOTS / "5-duplicates.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
