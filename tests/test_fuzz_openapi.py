"""Property tests over both services' OpenAPI schemas (schemathesis, live on loopback).

Schemathesis generates requests from each service's own `/openapi.json` — valid ones and ones
that break the schema — and sends them to the real processes. Whatever comes in: never a 5xx,
and every error answers API.md's `{"error": {"code", "message"}}`. The default run is bounded
(a few examples per route and mode, derandomised); `-m long` runs many more. (Schemathesis's
own pytest plugin does not run on pytest 9, so its strategies are driven by Hypothesis here.)
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from servers import ServiceProcess, start_ingest, start_ml
from shoebox.protocol import ErrorCode

CODES = {code.value for code in ErrorCode}
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
# Examples per route and generation mode: the default run, and the long one (`-m long`).
FAST_EXAMPLES = 4
LONG_EXAMPLES = 150
SENT: Counter[str] = Counter()


@pytest.fixture(scope="module")
def fuzz_services(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    work = tmp_path_factory.mktemp("fuzz")
    root = work / "photos"
    root.mkdir()
    ml = start_ml(tiny_model_dir, work / "ml")
    ingest = None
    try:
        ingest = start_ingest(work / "data", [ml.url], [root])
        yield {"ml": ml, "ingest": ingest}
    finally:
        if ingest is not None:
            ingest.stop()
        ml.stop()


@pytest.fixture(scope="module", autouse=True)
def report_count(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if SENT:
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"\nOpenAPI fuzzing: {sum(SENT.values())} requests {dict(SENT)}")


def check(case: Any, key: str) -> None:
    """One generated request: no 5xx, and an error body that is API.md's."""
    response = case.call(timeout=60)
    SENT[key] += 1
    described = f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, described
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, described
        assert body["error"]["code"] in CODES, described
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], described


def fuzz(service: ServiceProcess, name: str, examples: int, derandomize: bool) -> list[str]:
    """Every operation of the service's schema, valid and invalid requests; the failures found."""
    schema = schemathesis.openapi.from_url(service.url + "/openapi.json")
    failures: list[str] = []
    run = settings(
        max_examples=examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # report the first failure, do not shrink it
        suppress_health_check=list(HealthCheck),
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        # Path parameters are free strings: invalid requests need a query or a body to break.
        breakable = len(operation.query) > 0 or len(operation.body) > 0
        for mode in MODES if breakable else MODES[:1]:

            @run
            @given(case=operation.as_strategy(generation_mode=mode))
            def one(case: Any) -> None:
                check(case, name)

            try:
                one()
            except Unsatisfiable:
                pass  # no parameters and no body: nothing there to break
            except AssertionError as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


@pytest.mark.parametrize("name", ["ml", "ingest"])
def test_any_request_from_the_schema_is_answered_without_a_5xx(
    fuzz_services: dict[str, ServiceProcess], name: str
) -> None:
    assert fuzz(fuzz_services[name], name, FAST_EXAMPLES, derandomize=True) == []


@pytest.mark.long
@pytest.mark.parametrize("name", ["ml", "ingest"])
def test_many_requests_from_the_schema_are_answered_without_a_5xx(
    fuzz_services: dict[str, ServiceProcess], name: str
) -> None:
    assert fuzz(fuzz_services[name], name, LONG_EXAMPLES, derandomize=False) == []
