"""Rendering for the terminal: job summaries, errors by code, hit tables, the test-model banner."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.table import Table

from shoebox.cli.common import TEST_MODEL_PREFIX, err, out, print_json, print_test_model_banner


def warn_if_test_model(hits: list[dict[str, Any]]) -> None:
    if any(str((h.get("payload") or {}).get("model_name", "")).startswith(TEST_MODEL_PREFIX) for h in hits):
        print_test_model_banner()


def _counts(job: dict[str, Any]) -> str:
    return (
        f"[green]{job.get('indexed', 0)} indexed[/] · {job.get('cached', 0)} cached · "
        f"{job.get('unchanged', 0)} unchanged · [red]{job.get('failed', 0)} failed[/]"
    )


def print_job_summary(job: dict[str, Any], elapsed: float | None = None) -> None:
    table = Table(title=f"job {job['job_id']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    status_style = {"completed": "green", "completed_with_errors": "yellow"}.get(job["status"], "red")
    table.add_row("status", f"[{status_style}]{job['status']}[/]")
    table.add_row("collection", job.get("collection_name", ""))
    table.add_row("folder", job.get("directory_path", ""))
    for key in ("total_files", "indexed", "cached", "unchanged", "failed"):
        table.add_row(key.replace("_", " "), str(job.get(key, 0)))
    if job.get("offline"):
        table.add_row("offline", f"[yellow]{job['offline']}[/]")
    if elapsed:
        table.add_row("time", f"{elapsed:.1f} s ({job.get('processed_files', 0) / elapsed:.1f} files/s)")
    out.print(table)
    for warning in job.get("warnings") or []:
        err.print(f"[yellow]warning {warning.get('code')}: {warning.get('message')}[/]")
    print_errors_by_code(job.get("errors") or [])


def print_errors_by_code(errors: list[dict[str, Any]]) -> None:
    if not errors:
        return
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for error in errors:
        grouped[error.get("code", "?")].append(error)
    table = Table(title="errors by code", title_justify="left")
    table.add_column("code", style="red")
    table.add_column("files", justify="right")
    table.add_column("examples")
    for code, items in sorted(grouped.items(), key=lambda kv: -len(kv[1])):
        examples = "\n".join(f"{Path(e['file']).name}: {e.get('message', '')}" for e in items[:3])
        table.add_row(code, str(len(items)), examples)
    out.print(table)


def _hit_rows(hits: list[dict[str, Any]], title: str, start: int = 1) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("file")
    table.add_column("taken")
    table.add_column("camera")
    table.add_column("path", overflow="fold")
    table.add_column("id", style="dim")
    for rank, hit in enumerate(hits, start):
        payload = hit.get("payload") or {}
        make, model = payload.get("camera_make") or "", payload.get("camera_model") or ""
        # Many cameras repeat the make in the model ("Canon" + "Canon EOS R5").
        camera = (
            model if make and model.lower().startswith(make.split()[0].lower()) else f"{make} {model}".strip()
        )
        score = hit.get("score")
        table.add_row(
            str(rank),
            f"{score:.3f}" if isinstance(score, (int, float)) else "",
            hit.get("filename", ""),
            (payload.get("taken_at") or "")[:19],
            camera,
            hit.get("path", ""),
            hit.get("id", "")[:8],
        )
    return table


def print_search_warnings(answer: dict[str, Any]) -> None:
    """The answer's warnings, on stderr: a query not in the model's language names the models to use."""
    for warning in answer.get("warnings") or []:
        err.print(f"[yellow]warning {warning.get('code')}: {warning.get('message')}[/]", highlight=False)
        models = warning.get("suggested_models") or []
        if models:
            collection = answer.get("collection_name") or "NAME"
            err.print(
                f"[yellow]  multilingual models: {', '.join(models)}\n"
                f"  to switch this collection: shoebox collections migrate {collection} --model {models[0]}[/]",
                highlight=False,
            )


def _show_hits(answer: dict[str, Any], title: str, json_out: bool, start: int = 1) -> None:
    hits = answer["results"]
    warn_if_test_model(hits)
    print_search_warnings(answer)
    if json_out:
        print_json(answer)
    else:
        out.print(_hit_rows(hits, f"{title} — {len(hits)} results", start))


TIER_TITLES = {
    "exact": "exact duplicates (the same bytes under several paths)",
    "same_picture": "the same picture in different files (perceptual hash within {phash_distance} bits)",
    "bursts": "bursts (one camera, shots within {burst_seconds:g} s, cosine ≥ {burst_threshold:g})",
    "near": "near-duplicates (cosine ≥ {threshold:g})",
}


def _size(n: int | None) -> str:
    if not n:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def print_duplicate_tiers(answer: dict[str, Any]) -> None:
    """One table per tier: each group's members, the suggested copy to keep marked with ★."""
    thresholds = answer.get("thresholds") or {}
    groups = answer.get("groups") or {}
    for tier, title in TIER_TITLES.items():
        found = groups.get(tier) or []
        table = Table(title=f"{title.format(**thresholds)}: {len(found)} groups", title_justify="left")
        table.add_column("group", justify="right")
        table.add_column("keep")
        table.add_column("path", overflow="fold")
        table.add_column("size", justify="right")
        table.add_column("pixels", justify="right")
        table.add_column("format")
        table.add_column("taken")
        for number, group in enumerate(found, 1):
            for member in group.get("members") or []:
                kept = member.get("path") == group.get("keep_path")
                pixels = f"{member['width']}×{member['height']}" if member.get("width") else ""
                table.add_row(
                    str(number),
                    "★" if kept else "",
                    member.get("path", ""),
                    _size(member.get("size")),
                    pixels,
                    member.get("format") or "",
                    (member.get("taken_at") or "")[:19],
                )
        out.print(table)
    if answer.get("without_phash"):
        err.print(
            f"[yellow]{answer['without_phash']} photos have no perceptual hash yet (ingested before "
            "it existed): they cannot appear in the same-picture tier.[/]"
        )
    out.print(f"[dim]keep rule: {answer.get('keep_rule', '')}[/]", highlight=False)
