"""`python -m bench [--only ml,ingest,search,migrate] [--quick] [--large]`: the Shoebox benchmark, one run, one table.

Every ratio is to the bare encoder measured in the same run on the same machine, so numbers from
a busy or a different machine still compare within themselves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` importable as a package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from rich.console import Console

from bench import corpus as corpus_mod
from bench import ingest as ingest_bench
from bench import migrate as migrate_bench
from bench import ml as ml_bench
from bench import search as search_bench
from bench.machine import ForeignLoad, describe_machine
from bench.report import Report, Row
from bench.services import Workspace, running, start_ml

SECTIONS = ("ml", "ingest", "search", "migrate")
# What runs without --only: the migrate section (≈ 4 min more) only when asked for, since the
# three others already take about a quarter of an hour on 2 cores.
DEFAULT_SECTIONS = ("ml", "ingest", "search")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated sections: {','.join(SECTIONS)} (default: {','.join(DEFAULT_SECTIONS)})",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every row (~2 min)")
    p.add_argument(
        "--keep", action="store_true", help="keep the services' temp folder (logs, data) for a look"
    )
    p.add_argument(
        "--large",
        action="store_true",
        help="search section only: also 500,000 points (long: adds tens of minutes)",
    )
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:  # piped or logged: room for the notes column instead of 80 columns
        console = Console(width=200)
    t_start = time.monotonic()

    def log(msg: str) -> None:
        console.print(f"[dim]{time.monotonic() - t_start:6.1f}s[/] {msg}", highlight=False)

    report = Report(quick=args.quick, machine=describe_machine())
    foreign = ForeignLoad().start()
    report.context["sections"] = args.sections
    report.context["large"] = args.large

    corpus = corpus_mod.Corpus()
    wants = set(args.sections)
    report.errors += corpus_mod.ensure(
        corpus, need_dng=bool(wants & {"ml", "ingest"}), need_small="ingest" in wants, log=log
    )
    report.context["model"] = (
        f"random-weight ViT-B/32 test model ({corpus.vit_b_32}): speed only, results meaningless"
    )
    report.notes.append(
        "model: full-size ViT-B/32 with RANDOM weights (make_test_model('vit-b-32')): speed is real, search results are not"
    )

    bare = prepare = None
    if wants & {"ml", "ingest"}:
        bare = ml_bench.measure_bare_encoder(corpus, batches=2 if args.quick else 6, log=log)
        report.context["bare_encoder"] = vars(bare)
    if "ingest" in wants and bare:
        prepare = _bare_prepare(report, corpus, args.quick, bare.input_size, log)
        report.context["bare_decode_to_rendition"] = vars(prepare) if prepare else None

    ws_root = Path(tempfile.mkdtemp(prefix="shoebox-bench-"))
    # A fresh safe-batch probe every run: a cached one may have been measured on a busy machine.
    ws = Workspace(root=ws_root, corpus_root=corpus.root, probe_cache=ws_root / "probe")
    log(f"services' state and logs in {ws_root}")
    try:
        if wants & {"ml", "ingest", "search"}:
            ml, startup = start_ml(ws, corpus.vit_b_32, "ml-vit-b-32")
            log(f"ML service up in {startup:.1f} s at {ml.url}")
            with running(ml):
                report.add(
                    Row(
                        "ml", "ML service start-up (model load + safe-batch probe or its cache)", startup, "s"
                    )
                )
                if "ml" in wants and bare:
                    ml_bench.run(report, corpus, ml, bare, args.quick, log)
                if "ingest" in wants and bare:
                    ingest_bench.run(report, ws, corpus, ml, args.quick, log)
                if "search" in wants:
                    search_bench.run(report, ws, corpus, ml, args.quick, log, large=args.large)
        if "migrate" in wants:  # its own ML service, hosting two models
            migrate_bench.run(report, ws, corpus, args.quick, log)
    except Exception as exc:  # noqa: BLE001 - still print and save what was measured
        report.errors.append(f"run aborted: {exc!r}")
        log(f"[red]run aborted: {exc!r}[/]")
    finally:
        if args.keep or report.errors:
            report.context["workspace"] = str(ws_root)
            log(f"kept {ws_root} (service logs: *.log)")
        else:
            shutil.rmtree(ws_root, ignore_errors=True)

    if bare is not None:
        # The ceiling is measured again once the services are gone: the faster of the two is the limit
        # every ratio is to, so a slow start (a busy moment) cannot flatter the ratios.
        end = ml_bench.measure_bare_encoder(corpus, batches=2 if args.quick else 6, log=log)
        report.context["bare_encoder_end"] = vars(end)
        img, txt = max(bare.img_s, end.img_s), max(bare.text_s, end.text_s)
        spread = f"start {bare.img_s:.1f}, end {end.img_s:.1f}"
        report.rows[0:0] = [
            Row(
                "ml",
                "bare image encoder (batch 32, ready arrays) = 1.00",
                img,
                "img/s",
                1.0,
                note=f"the faster of {spread} img/s; random-weight ViT-B/32",
                vs="image",
            ),
            Row(
                "ml",
                "bare text encoder (batch 32)",
                txt,
                "texts/s",
                1.0,
                note=f"the faster of start {bare.text_s:.1f}, end {end.text_s:.1f} texts/s",
                vs="text",
            ),
        ]
        refs: dict[str, float | None] = {"image": img, "text": txt}
        if prepare is not None:
            refs["pipeline"] = _pipeline_limit(report, corpus, args.quick, bare, prepare, img, log)
        report.finalize(refs)
    report.machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()[:2]]
    other = foreign.stop()
    report.machine["other_processes_during_run"] = other
    if other["other_processes_avg_cores"] > 0.1:
        report.notes.append(
            f"other processes used {other['other_processes_avg_cores']:.2f} cores on average during the run "
            f"({other['other_processes_cpu_s']:.0f} CPU-s): numbers are pessimistic"
        )
    console.print()
    report.print(console)
    path = report.write()
    console.print(
        f"results: {path} (and {path.parent / 'latest.json'}) in {time.monotonic() - t_start:.0f} s"
    )
    return 1 if report.errors else 0


def _bare_prepare(
    report: Report, corpus: corpus_mod.Corpus, quick: bool, input_size: int, log: Callable[[str], None]
) -> ingest_bench.BarePrepare | None:
    try:
        return ingest_bench.measure_bare_prepare(corpus, quick, input_size, log)
    except Exception as exc:  # noqa: BLE001 - the pipeline limit is lost, the other rows still stand
        report.errors.append(f"ingest bare decode-to-rendition: {exc!r}")
        log(f"ingest: bare decode-to-rendition FAILED: {exc!r}")
        return None


def _pipeline_limit(
    report: Report,
    corpus: corpus_mod.Corpus,
    quick: bool,
    bare: ml_bench.Bare,
    start: ingest_bench.BarePrepare,
    img_s: float,
    log: Callable[[str], None],
) -> float:
    """1 / (encoder + decode-to-rendition per image): what this machine's ingest of 12 MP JPEGs can reach.

    The decode is measured again now the services are gone, and the faster of the two counts, as
    for the encoder.
    """
    end = _bare_prepare(report, corpus, quick, bare.input_size, log)
    report.context["bare_decode_to_rendition_end"] = vars(end) if end else None
    prepare = min(start, end or start, key=lambda p: p.s_per_image)
    limit = 1 / (1 / img_s + prepare.s_per_image)
    spread = (
        f"start {start.s_per_image * 1000:.1f}, end {end.s_per_image * 1000:.1f} ms" if end else "start only"
    )
    report.insert_before(
        "ingest",
        [
            Row(
                "ingest",
                "bare decode-to-rendition of a 12 MP JPEG (1 thread)",
                prepare.s_per_image * 1000,
                "ms/img",
                note=f"the faster of {spread}; {ingest_bench.prepare_note(prepare)}",
            ),
            Row(
                "ingest",
                "pipeline limit = 1 / (bare encoder + bare decode-to-rendition)",
                limit,
                "img/s",
                note="what the 12 MP JPEG run can reach on this machine; its ratio is to the bare encoder",
                vs="image",
            ),
        ],
    )
    return limit


if __name__ == "__main__":
    raise SystemExit(main())
