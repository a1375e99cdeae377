"""Take the README's admin-UI screenshots: `shoebox up --ui` on a real-photo folder, driven by
Playwright with Debian's chromium (`.venv/bin/python scripts/screenshots.py [PHOTOS]`).

Runs in a throw-away HOME, so it never touches your library or caches. Offline, the model is
the random-weight test model (the UI's banner says so): the rankings in the picture are noise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright import sync_api

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "photos").resolve()
OUT = ROOT / "docs"
API, UI = "http://127.0.0.1:8702", "http://127.0.0.1:8703"


def wait(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer")


def main() -> None:
    home = tempfile.mkdtemp(prefix="shoebox-shots-")
    env = {**os.environ, "HOME": home, "SHOEBOX_URL": API, "XDG_DATA_HOME": f"{home}/data"}
    up = subprocess.Popen(
        [sys.executable, "-m", "shoebox.cli", "up", "--ui", "--ui-port", "8703", "--ml-port", "8701",
         "--allow", str(PHOTOS)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait(API + "/health")
        wait(UI + "/_stcore/health")
        OUT.mkdir(exist_ok=True)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(UI)
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.get_by_text("Ingest", exact=True).click()
            page.get_by_label("Collection (empty: the service's selected one)").fill("photos")
            page.keyboard.press("Enter")
            time.sleep(1.0)
            page.get_by_role("button", name="Start ingest").click()
            page.get_by_text("files/s").first.wait_for()
            time.sleep(2.0)
            page.screenshot(path=str(OUT / "admin-ingest.png"), full_page=True)
            page.get_by_text("Finished:").first.wait_for(timeout=300_000)
            sidebar.get_by_text("Search", exact=True).click()
            page.get_by_label("Describe the photo").fill("a motorcycle")
            page.get_by_role("button", name="Search").click()
            page.wait_for_function(
                "() => [...document.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0"
                " && i.src.includes('/media/')).length >= 6"
            )
            time.sleep(1.0)
            page.screenshot(path=str(OUT / "admin-search.png"), full_page=True)
            browser.close()
        print(f"screenshots in {OUT}")
    finally:
        up.terminate()
        up.wait(30)


if __name__ == "__main__":
    main()
