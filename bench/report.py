"""Rows of results, the printed table and the JSON file of one run."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    section: str
    metric: str
    value: float | None
    unit: str
    ratio: float | None = None  # to the bare encoder measured in the same run (set by Report.finalize)
    target: str | None = None
    met: bool | None = None  # None: no target, or not measurable
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    vs: str | None = None  # "image" or "text": which bare encoder the ratio is to
    min_ratio: float | None = None  # the target, when it is a ratio
    min_ratio_vs: str | None = None  # the reference min_ratio is to, when not `vs` ("pipeline")
    clean: bool = True  # every file went through without an error (a ratio target needs that too)


@dataclass
class Report:
    quick: bool
    machine: dict[str, Any]
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def insert_before(self, section: str, rows: list[Row]) -> None:
        """`rows` ahead of the section's first row (at the end when it has none)."""
        at = next((i for i, r in enumerate(self.rows) if r.section == section), len(self.rows))
        self.rows[at:at] = rows

    def finalize(self, refs: dict[str, float | None]) -> None:
        """Ratios to the references ("image", "text": the bare encoders; "pipeline": the pipeline limit),
        known only at the end: they bracket the run (start and end)."""
        for row in self.rows:
            if row.value is None:
                continue
            ref = refs.get(row.vs or "")
            if ref:
                row.ratio = row.value / ref
            target_ref = refs.get(row.min_ratio_vs or row.vs or "")
            if row.min_ratio is None or not target_ref:
                continue
            share = row.value / target_ref
            row.met = row.clean and share >= row.min_ratio
            if row.min_ratio_vs:
                row.extra[f"ratio_to_{row.min_ratio_vs}"] = share
                row.note = f"{share:.2f} of the {row.min_ratio_vs} limit; {row.note}"

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "duration_s": round(time.monotonic() - self._t0, 1),
            "quick": self.quick,
            "machine": self.machine,
            "context": self.context,
            "notes": self.notes,
            "errors": self.errors,
            "rows": [asdict(r) for r in self.rows],
        }

    def write(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        body = json.dumps(self.to_json(), indent=2, default=str)
        path = RESULTS_DIR / (self.started.replace(":", "").replace("-", "") + ".json")
        path.write_text(body)
        (RESULTS_DIR / "latest.json").write_text(body)
        return path

    def print(self, console: Console) -> None:
        table = Table(title="Shoebox benchmark" + (" (--quick)" if self.quick else ""), show_lines=False)
        for col, kw in (
            ("section", {}),
            ("metric", {}),
            ("value", {"justify": "right"}),
            ("unit", {}),
            ("vs bare", {"justify": "right"}),
            ("target", {}),
            ("", {}),
            ("note", {"overflow": "fold"}),
        ):
            table.add_column(col, **kw)
        for r in self.rows:
            mark = "" if r.met is None else ("[green]ok[/]" if r.met else "[red]MISS[/]")
            table.add_row(
                r.section,
                r.metric,
                _fmt(r.value),
                r.unit,
                "" if r.ratio is None else f"{r.ratio:.2f}",
                r.target or "",
                mark,
                r.note,
            )
        console.print(table)
        for n in self.notes:
            console.print(f"[yellow]note:[/] {n}")
        for e in self.errors:
            console.print(f"[red]error:[/] {e}")


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"
