"""The README documents every setting and every error code (docs stay true with the code)."""

from pathlib import Path

import pytest

from shoebox.ingest.config import IngestSettings
from shoebox.ml.config import MLSettings
from shoebox.protocol import ErrorCode

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("settings_cls", [MLSettings, IngestSettings])
def test_readme_lists_every_setting_with_its_env_var(settings_cls):
    missing = [
        f"SHOEBOX_{name.upper()}"
        for name in settings_cls.model_fields
        if f"`SHOEBOX_{name.upper()}`" not in README
    ]
    assert missing == []


def test_readme_lists_every_error_code():
    missing = [code.value for code in ErrorCode if f"`{code.value}`" not in README]
    assert missing == []


def test_readme_has_exactly_the_two_commands_and_ci_runs_the_test_one():
    root = Path(__file__).resolve().parents[1]
    assert "scripts/install && .venv/bin/shoebox demo" in README
    assert "scripts/test" in README
    assert "scripts/test" in (root / ".ci" / "run").read_text()
