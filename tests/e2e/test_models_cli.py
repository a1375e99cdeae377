"""`shoebox models` and `shoebox models pull` as a user runs them: the CLI as a subprocess, with the
model cache under a test folder and a local mirror (SHOEBOX_MODEL_SOURCE) instead of the hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import ServiceProcess, free_port, start_ml
from shoebox.ml.models.catalogue import CATALOGUE
from shoebox.ml.models.clip import ClipModel
from shoebox.ml.models.download import REQUIRED_FILES, is_complete
from shoebox.ml.models.onnx_testmodel import build_onnx_test_model

NAME = "ViT-B-32__openai"
CLI_TIMEOUT = 60


@dataclass
class CLI:
    """`python -m shoebox.cli` with a clean environment: its own cache, the mirror, no ML service."""

    cache: Path  # XDG_CACHE_HOME
    mirror: Path

    @property
    def models_dir(self) -> Path:
        return self.cache / "shoebox" / "models"

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SHOEBOX_")}
        full = {
            **clean,
            "COLUMNS": "1000",
            "XDG_CACHE_HOME": str(self.cache),
            "SHOEBOX_MODEL_SOURCE": str(self.mirror),
            "SHOEBOX_HOST": "127.0.0.1",
            "SHOEBOX_PORT": str(free_port()),  # nothing answers: no model is hosted
            **env,
        }
        return subprocess.run(
            [sys.executable, "-m", "shoebox.cli", *args],
            env=full,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )

    def json(self, *args: str, **env: str) -> dict:
        result = self.run(*args, "--json", **env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def listed(self, **env: str) -> dict[str, dict]:
        return {row["name"]: row for row in self.json("models", **env)["models"]}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local mirror holding a random-weight tiny model under a catalogue name."""
    root = tmp_path_factory.mktemp("mirror")
    build_onnx_test_model("tiny", root / NAME, seed=0)
    return root


@pytest.fixture
def cli(mirror: Path, tmp_path: Path) -> CLI:
    return CLI(tmp_path / "cache", mirror)


@pytest.fixture(scope="module")
def pulled(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> CLI:
    """A cache into which `shoebox models pull NAME` copied the mirror's model."""
    runner = CLI(tmp_path_factory.mktemp("pulled") / "cache", mirror)
    result = runner.run("models", "pull", NAME)
    assert result.returncode == 0, result.stderr
    return runner


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if "error" in line.lower()]


# ------------------------------------------------------------------ the list


def test_models_json_lists_every_catalogue_entry_none_present(cli: CLI) -> None:
    answer = cli.json("models")
    assert answer["cache_dir"] == str(cli.models_dir)
    rows = answer["models"]
    assert [row["name"] for row in rows] == [m.name for m in CATALOGUE]
    for row, model in zip(rows, CATALOGUE, strict=True):
        assert (row["family"], row["dim"], row["size_mb"]) == (model.family, model.dim, model.size_mb)
        assert row["present"] is False
        assert row["hosted"] is False


def test_models_multilingual_lists_only_the_multilingual_models(cli: CLI) -> None:
    rows = cli.json("models", "--multilingual")["models"]
    assert [row["name"] for row in rows] == [m.name for m in CATALOGUE if m.multilingual]
    assert rows and all(row["multilingual"] for row in rows)


def test_models_table_names_the_models_and_how_to_pull_one(cli: CLI) -> None:
    result = cli.run("models")
    assert result.returncode == 0, result.stderr
    assert NAME in result.stdout and "nllb-clip-base-siglip__v1" in result.stdout
    assert "shoebox models pull" in result.stdout


# ------------------------------------------------------------------ pull


def test_pull_leaves_a_complete_model_folder(pulled: CLI) -> None:
    target = pulled.models_dir / NAME
    assert is_complete(target)
    assert set(REQUIRED_FILES) <= set(files_under(target))


def test_pull_copies_the_mirrors_files_byte_for_byte(pulled: CLI) -> None:
    copied = files_under(pulled.models_dir / NAME)
    source = files_under(pulled.mirror / NAME)
    assert copied
    for name, data in copied.items():
        assert data == source[name], name
    assert "visual/model_fp16.onnx" in copied  # optional weights come along too


def test_pull_leaves_no_partial_folder(pulled: CLI) -> None:
    assert sorted(p.name for p in pulled.models_dir.iterdir()) == [NAME]


def test_a_pulled_model_is_listed_as_present(pulled: CLI) -> None:
    present = [name for name, row in pulled.listed().items() if row["present"]]
    assert present == [NAME]


def test_pulling_a_present_model_again_says_it_is_there(pulled: CLI) -> None:
    result = pulled.run("models", "pull", NAME)
    assert result.returncode == 0, result.stderr
    assert "already" in result.stdout and "--force" in result.stdout
    assert pulled.json("models", "pull", NAME)["fetched"] is False


def test_pull_force_fetches_a_present_model_again(cli: CLI) -> None:
    assert cli.json("models", "pull", NAME)["fetched"] is True
    damaged = cli.models_dir / NAME / "textual" / "model.onnx"
    damaged.write_bytes(b"not the model")
    assert cli.json("models", "pull", NAME, "--force")["fetched"] is True
    assert damaged.read_bytes() == (cli.mirror / NAME / "textual" / "model.onnx").read_bytes()


def test_pulling_an_unknown_name_fails_pointing_at_the_list(cli: CLI) -> None:
    result = cli.run("models", "pull", "ViT-Z-99__nobody")
    assert result.returncode != 0
    [line] = error_lines(result)
    assert "ViT-Z-99__nobody" in line and "shoebox models" in line
    assert not cli.models_dir.exists() or not any(cli.models_dir.iterdir())


def test_pulling_from_a_mirror_missing_a_file_fails_naming_it_and_leaves_nothing(
    mirror: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-mirror"
    shutil.copytree(mirror, broken)
    (broken / NAME / "textual" / "tokenizer.json").unlink()
    cli = CLI(tmp_path / "cache", broken)
    result = cli.run("models", "pull", NAME)
    assert result.returncode != 0
    [line] = error_lines(result)
    assert "textual/tokenizer.json" in line
    assert "Traceback" not in result.stderr
    assert not (cli.models_dir / NAME).exists()
    assert not (cli.models_dir / f"{NAME}.partial").exists()


def test_pull_is_refused_offline(cli: CLI) -> None:
    result = cli.run("models", "pull", NAME, SHOEBOX_OFFLINE="1")
    assert result.returncode != 0
    [line] = error_lines(result)
    assert "SHOEBOX_OFFLINE" in line and NAME in line
    assert not (cli.models_dir / NAME).exists()


# ------------------------------------------------------------------ what a service hosts


@pytest.fixture(scope="module")
def hosting(pulled: CLI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """An ML service hosting the pulled model by its catalogue name (found in the model cache)."""
    model_dir = pulled.models_dir / NAME
    env = {"SHOEBOX_MODELS": NAME, "XDG_CACHE_HOME": str(pulled.cache)}
    proc = start_ml(model_dir, tmp_path_factory.mktemp("ml-hosting"), env=env)
    yield proc
    proc.stop()


def test_models_marks_what_the_running_ml_service_hosts_with_its_id(
    pulled: CLI, hosting: ServiceProcess
) -> None:
    rows = pulled.listed(SHOEBOX_PORT=str(hosting.port))
    hosted = {name: row["model_id"] for name, row in rows.items() if row["hosted"]}
    assert hosted == {NAME: ClipModel(pulled.models_dir / NAME).model_id}


# ------------------------------------------------------------------ identity across machines


def test_a_model_pulled_from_a_mirror_of_a_hub_download_keeps_its_identity(
    mirror: Path, tmp_path: Path
) -> None:
    # The mirror is another machine's model cache (README: a NAS share of ~/.cache/shoebox/models):
    # its folder was a hub download, with the commit huggingface_hub recorded beside the files.
    hub_mirror = tmp_path / "hub-mirror"
    shutil.copytree(mirror, hub_mirror)
    source = hub_mirror / NAME
    meta = source / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    (meta / "config.json.metadata").write_text("0123456789abcdef0123456789abcdef01234567\netag\n1.0\n")
    (source / ".shoebox-hub.json").write_text(json.dumps({"repo_id": f"immich-app/{NAME}"}))

    cli = CLI(tmp_path / "cache", hub_mirror)
    assert cli.json("models", "pull", NAME)["fetched"] is True
    # The digest, not the whole id: the copy leaves the test model's marker behind, and with it the
    # TEST-RANDOM-WEIGHTS prefix of the name; a real model has none.
    assert ClipModel(cli.models_dir / NAME).identity.digest == ClipModel(source).identity.digest
