"""What a book build left without a result: runs that failed (or never wrote a record) and pages
whose notebook failed.

``make book`` keeps building when a run or a page fails (the pages mark what is missing), so the
site still appears; this summary, printed at its end, is what tells the person or the CI job that
started it. ``make book STRICT=1`` (``python -m cap book summary --strict``) exits non-zero then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cap.experiments.records import record_status
from cap.experiments.runner import describe, select


@dataclass
class BuildProblems:
    runs: int = 0  # runs selected
    failed_runs: list[str] = field(default_factory=list)  # "<state> <key> <matrix>: <run> (<detail>)"
    failed_pages: list[str] = field(default_factory=list)  # notebooks (pages, run groups) that failed

    def __bool__(self) -> bool:
        return bool(self.failed_runs or self.failed_pages)


def _failed_pages(generated: Path) -> list[str]:
    """Pages whose notebook failed: a ``<page>.failed.ipynb`` kept beside them, or a stand-in page
    (:func:`cap.experiments.notebooks.write_failure_page` dates its stand-ins to the epoch)."""
    failed = {p.with_name(p.name.removesuffix(".failed.ipynb") + ".ipynb") for p in generated.rglob("*.failed.ipynb")}
    failed |= {p for p in generated.rglob("*.ipynb") if not p.name.endswith(".failed.ipynb") and p.stat().st_mtime == 0}
    return sorted(str(p) for p in failed)


def build_problems(generated: str | Path = "book/_generated", profile: str = "sim", **filters) -> BuildProblems:
    """The selected runs of ``profile`` (``filters``: matrices, datasets, paradigms, methods, seeds, as
    for :func:`cap.experiments.runner.select`) without a current record under ``generated/records``,
    and the failed pages under ``generated``."""
    generated = Path(generated)
    runs = select(profile, **filters)
    problems = BuildProblems(runs=len(runs), failed_pages=_failed_pages(generated))
    for run in runs:
        status = record_status(run.key, generated / "records" / profile)
        if status.state != "done":
            detail = f" ({status.detail})" if status.detail else ""
            problems.failed_runs.append(f"{status.state} {run.key} {run.matrix}: {describe(run)}{detail}")
    return problems


def format_summary(problems: BuildProblems, profile: str = "sim", limit: int = 20) -> str:
    """A few lines for the end of a build: counts, then the first ``limit`` runs and every failed page."""
    if not problems:
        return f"book summary: all {problems.runs} {profile} runs have a result and every notebook ran"
    lines = [f"book summary: {len(problems.failed_runs)} of {problems.runs} {profile} runs have no result, "
             f"{len(problems.failed_pages)} notebook(s) failed"]
    lines += [f"  run  {line}" for line in problems.failed_runs[:limit]]
    if len(problems.failed_runs) > limit:
        lines.append(f"  ... and {len(problems.failed_runs) - limit} more: python -m cap runs --profile {profile} --list")
    lines += [f"  notebook {page} failed (its executed cells: the .failed.ipynb beside it)"
              for page in problems.failed_pages]
    lines.append("failed runs keep their traceback in failed-<key>.json; rerun with make book once fixed")
    return "\n".join(lines)
