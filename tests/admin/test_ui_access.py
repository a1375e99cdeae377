"""Who may see the admin UI: the SHOEBOX_UI_PASSWORD gate (AppTest), and where `shoebox ui` may listen.

The gate tests need no service: the UI points at a port where nothing answers, so a page that
got past the gate would show its own "cannot connect" error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

from shoebox.admin import APP_PATH, launch  # noqa: E402
from shoebox.admin.pages import PAGES  # noqa: E402
from shoebox.launcher import free_port  # noqa: E402

PASSWORD = "correct horse battery staple"
API_KEY = "service-key-never-shown-4711"
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOEBOX_UI_PASSWORD", PASSWORD)
    monkeypatch.setenv("SHOEBOX_URL", NOWHERE)
    monkeypatch.setenv("SHOEBOX_ML_URL", NOWHERE)
    monkeypatch.setenv("SHOEBOX_API_KEY", API_KEY)
    monkeypatch.setenv("SHOEBOX_ML_API_KEY", API_KEY)


def _app() -> AppTest:
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    return at


def _sign_in(at: AppTest, password: str) -> AppTest:
    at.text_input(key="password").input(password)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    return at


def _protos(node) -> Iterator[str]:
    """The text of every element the page drew (its protobuf, so every field is seen)."""
    children = getattr(node, "children", None)
    if children:
        for child in children.values():
            yield from _protos(child)
    elif getattr(node, "proto", None) is not None:
        yield str(node.proto)


def _on_page(at: AppTest) -> str:
    return "\n".join(_protos(at.main)) + "\n".join(_protos(at.sidebar))


def _is_gate(at: AppTest) -> bool:
    """Only the sign-in form: no page selector, no page, no call to a service."""
    return (
        [t.value for t in at.title] == ["Shoebox admin"]
        and len(at.text_input) == 1
        and at.text_input[0].label == "Password"
        and not at.sidebar.radio
        and not at.metric
        and not [e for e in at.error if e.value != "Wrong password."]
    )


@pytest.mark.parametrize("page", list(PAGES))
def test_the_gate_blocks_every_page(gated, page: str) -> None:
    at = _app()
    at.session_state["page"] = page  # a page asked for directly still meets the gate
    at.run()
    assert not at.exception, at.exception
    assert _is_gate(at), _on_page(at)


def test_a_wrong_password_is_refused_and_the_gate_stays(gated) -> None:
    at = _sign_in(_app().run(), "not it")
    assert [e.value for e in at.error] == ["Wrong password."]
    assert _is_gate(at)


def test_the_password_opens_every_page(gated) -> None:
    at = _sign_in(_app().run(), PASSWORD)
    assert not at.text_input or at.text_input[0].label != "Password"
    for page in PAGES:
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, at.exception
        assert "Password" not in [t.label for t in at.text_input]
        # the page ran: it tried the (unreachable) service and says so
        assert at.error or at.warning or at.info or at.markdown, page


def test_signing_out_closes_the_pages(gated) -> None:
    at = _sign_in(_app().run(), PASSWORD)
    [b for b in at.sidebar.button if b.label == "Sign out"][0].click().run()
    assert _is_gate(at)


def test_the_service_key_never_reaches_the_page(gated) -> None:
    at = _sign_in(_app().run(), PASSWORD)
    for page in PAGES:
        at.sidebar.radio(key="page").set_value(page).run()
        assert API_KEY not in _on_page(at), page
        assert PASSWORD not in _on_page(at), page


def test_without_a_password_there_is_no_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOEBOX_UI_PASSWORD", raising=False)
    monkeypatch.setenv("SHOEBOX_URL", NOWHERE)
    at = _app().run()
    assert not at.exception
    assert at.sidebar.radio(key="page").value == "Services"


# ------------------------------------------------------------------ where the UI listens


def _ui(*args: str, **env: str) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHOEBOX_")}
    return subprocess.Popen(
        [sys.executable, "-m", "shoebox.cli", "ui", *args],
        env={**base, "SHOEBOX_URL": NOWHERE, "COLUMNS": "200", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ui(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).text.strip() == "ok":
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the admin UI did not answer"
        time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return stderr


def test_ui_refuses_a_wildcard_bind_without_a_password() -> None:
    proc = _ui("--host", "0.0.0.0", "--port", str(free_port()))
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without SHOEBOX_UI_PASSWORD" in " ".join(stderr.split())


def test_launch_refuses_a_wildcard_bind_without_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOEBOX_UI_PASSWORD", raising=False)
    with pytest.raises(ValueError, match="SHOEBOX_UI_PASSWORD"):
        launch(NOWHERE, port=free_port(), address="0.0.0.0")


def test_ui_on_a_wildcard_starts_with_a_password(tmp_path: Path) -> None:
    port = free_port()
    proc = _ui("--host", "0.0.0.0", "--port", str(port), SHOEBOX_UI_PASSWORD=PASSWORD)
    try:
        _wait_ui(port, proc)
    finally:
        stderr = _stop(proc)
    assert "INSECURE" not in stderr


def test_ui_on_a_wildcard_with_insecure_starts_and_warns() -> None:
    port = free_port()
    proc = _ui("--host", "0.0.0.0", "--port", str(port), "--insecure")
    try:
        _wait_ui(port, proc)
    finally:
        stderr = _stop(proc)
    assert "WARNING: INSECURE" in stderr
