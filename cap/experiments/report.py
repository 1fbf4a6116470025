"""Read results records into the tables of the book's pages; pages never train.

:func:`collect` lists every planned run of a matrix under a profile with what its record holds
(or why there is none: missing, failed, stale); :func:`summarise` turns runs into cells with
mean ± std over replicates, every seed's value, the paper's number, its provenance and the difference.
The rest formats them the way every page shows numbers: accuracies with one decimal, counts as
integers, the best value of a column in bold, a missing value saying why (never ``nan``), and each
cell linking to the runs behind it (:class:`SiteLinks`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from cap.config import METHOD_TITLES
from cap.data.registry import get_dataset
from cap.experiments.matrix import command, get_profile, load_matrix, plan
from cap.experiments.records import DEFAULT_RECORDS, record_status
from cap.experiments.references import reference_number

PARADIGM_TITLES = {"ssl": "SSL", "ul": "UL", "trzsl": "TRZSL"}
PROFILE_TITLES = {"paper": "Real data", "sim": "Concept simulator"}
# Okabe and Ito's palette, told apart with any colour vision
METHOD_COLOURS = {"zero_shot": "#6b6b6b", "fpl": "#56b4e9", "grip": "#009e73", "cpl": "#0072b2", "cap": "#d55e00"}
NOT_RUN = "not run yet"
NO_VALUE = "—"
MINUS = "\u2212"
DECIMALS = 1  # accuracies, their std and differences, in percentage points


# -- numbers -----------------------------------------------------------------------------------
def is_missing(value) -> bool:
    """None, NaN (float or numpy) or pandas' NA."""
    if value is None or value is pd.NA:
        return True
    try:
        return bool(isinstance(value, (float, np.floating)) and math.isnan(value))
    except TypeError:
        return False


def number(value, decimals: int = DECIMALS, signed: bool = False, missing: str = NO_VALUE) -> str:
    """``value`` with ``decimals`` decimals (a typographic minus; ``+`` when ``signed``), or ``missing``.
    A non-zero value that rounds to zero gets one decimal more (−0.03, not −0.0, whose sign would
    say more than its digits); below that it is 0."""
    if is_missing(value):
        return missing
    if decimals > 0 and float(value) != 0 and round(float(value), decimals) == 0:
        if round(float(value), decimals + 1) != 0:
            decimals += 1
        else:
            return f"{0:.{decimals}f}"
    if decimals == 0:
        text = f"{round(float(value)):+d}" if signed else f"{round(float(value)):d}"
    else:
        text = f"{float(value):+.{decimals}f}" if signed else f"{float(value):.{decimals}f}"
    return text.replace("-", MINUS)


def mean_std(values, decimals: int = DECIMALS) -> str:
    """``mean ± std`` (sample std over replicates) of the finite values, the single value, or "not run yet"."""
    values = [float(v) for v in values if not is_missing(v)]
    if not values:
        return NOT_RUN
    if len(values) == 1:
        return number(values[0], decimals)
    return f"{number(np.mean(values), decimals)} ± {number(np.std(values, ddof=1), decimals)}"


# -- records into cells ------------------------------------------------------------------------
def collect(matrix: str, profile: str, records_root: str | Path = DEFAULT_RECORDS, **filters) -> pd.DataFrame:
    """One row per planned run: its labels, profile, state (done / missing / failed / stale), the
    headline value (top-1, or H in TRZSL) and the record itself (``None`` unless done)."""
    records_dir = Path(records_root) / profile
    rows = []
    for run in plan(matrix, profile, **filters):
        status = record_status(run.key, records_dir)
        record = status.record
        rows.append(run.labels | {"profile": profile, "state": status.state, "detail": status.detail,
                                  "value": record["results"]["headline"] if record else np.nan, "record": record})
    columns = ["matrix", "dataset", "paradigm", "method", "variant", "sweep", "seed", "key", "profile", "state",
               "detail", "value", "record"]
    return pd.DataFrame(rows, columns=columns)


def has_results(runs: pd.DataFrame) -> bool:
    return bool(len(runs)) and bool((runs["state"] == "done").any())


def _seed_values(group: pd.DataFrame) -> str:
    if (group["state"] == "missing").all():
        return NO_VALUE
    parts = []
    for seed, value, state in zip(group["seed"], group["value"], group["state"]):
        parts.append(f"{seed}: {number(value)}" if state == "done" else f"{seed}: {state}")
    return ", ".join(parts)


def summarise(runs: pd.DataFrame, by: list[str], paper: bool = True, reference_variant: str | None = None) -> pd.DataFrame:
    """Cells of a table: mean, std and ``ours`` (mean ± std), every seed's value, how many seeds have a
    result, the runs behind the cell (``runs``: seed, key, state) and with ``paper`` the published
    number, its source and verified flag, and ours − paper. With ``reference_variant``, only that
    variant's cells are compared with a published number (the reference file holds full-method
    numbers, not ablations)."""
    rows = []
    for key, group in runs.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        done = group[group["state"] == "done"]
        row = dict(zip(by, key))
        row |= {"mean": done["value"].mean() if len(done) else np.nan,
                "std": done["value"].std(ddof=1) if len(done) > 1 else np.nan,
                "ours": mean_std(done["value"].tolist()),
                "seeds": _seed_values(group), "done": f"{len(done)}/{len(group)}",
                "runs": [{"seed": int(r["seed"]), "key": r["key"], "state": r["state"], "dataset": r["dataset"],
                          "paradigm": r["paradigm"], "profile": r.get("profile")}
                         for r in group.to_dict("records")]}
        if paper:
            comparable = {"method", "paradigm", "dataset"} <= set(row) and (
                reference_variant is None or row.get("variant") == reference_variant)
            ref = reference_number(row["method"], row["paradigm"], row["dataset"]) if comparable else None
            row |= {"paper": ref.value if ref else np.nan,
                    "verified": ref.verified if ref else None,
                    "source_label": ref.label if ref else None,
                    "source": (ref.label + (" (verified)" if ref.verified else " (unverified)")) if ref
                    else "CAP paper: not transcribed",
                    "difference": row["mean"] - ref.value if ref and len(done) else np.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def missing_commands(runs: pd.DataFrame, profile: str) -> list[str]:
    """The exact commands that would produce the runs without a current record, one per dataset and paradigm."""
    lacking = runs[runs["state"] != "done"]
    commands = []
    for (matrix, dataset, paradigm), group in lacking.groupby(["matrix", "dataset", "paradigm"], sort=False):
        methods = sorted(set(group["method"]))
        method = methods[0] if len(methods) == 1 else None
        commands.append(command(profile, matrix, dataset, paradigm, method, sorted(set(group["seed"]))))
    return commands


def state_counts(runs: pd.DataFrame) -> str:
    counts = runs["state"].value_counts()
    return ", ".join(f"{n} {state}" for state, n in counts.items()) if len(runs) else "no runs planned"


def titled(frame: pd.DataFrame) -> pd.DataFrame:
    """Display names for the label columns."""
    frame = frame.copy()
    if "method" in frame:
        frame["method"] = frame["method"].map(lambda m: METHOD_TITLES.get(m, m))
    if "paradigm" in frame:
        frame["paradigm"] = frame["paradigm"].map(lambda p: PARADIGM_TITLES.get(p, p))
    if "dataset" in frame:
        frame["dataset"] = frame["dataset"].map(lambda d: get_dataset(d).title)
    return frame


def variant_labels(matrix: str) -> dict[str, str]:
    return {v.name: v.label for v in load_matrix(matrix).variants}


def done_records(runs: pd.DataFrame) -> list[tuple[dict, dict]]:
    """(labels, record) of every run that has a current record."""
    return [(row._asdict(), row.record) for row in runs.itertuples(index=False) if row.state == "done"]


# -- links from numbers to runs ----------------------------------------------------------------
@dataclass(frozen=True)
class SiteLinks:
    """Where a page's numbers link to on the built site: each record is published as
    ``records/<profile>/run-<key>.json`` and each executed run notebook (one per dataset and
    paradigm) is the page ``_generated/runs/<profile>/<dataset>-<paradigm>.html``, with one anchor
    per run (``run-<key>``). ``to_root`` leads from the page to the site's root."""

    records_root: Path
    to_root: str = "../../"

    def record(self, profile: str, key: str) -> str:
        return f"{self.to_root}records/{profile}/run-{key}.json"

    def run_page(self, profile: str, dataset: str, paradigm: str) -> str | None:
        """The run notebook's page, or None when this build has no such notebook."""
        name = f"{dataset}-{paradigm}"
        if not (Path(self.records_root).parent / "runs" / profile / f"{name}.ipynb").is_file():
            return None
        return f"{self.to_root}_generated/runs/{profile}/{name}.html"

    def run(self, profile: str, dataset: str, paradigm: str, key: str) -> str:
        """A run's row on its run page, or its record where there is no run page."""
        page = self.run_page(profile, dataset, paradigm)
        return f"{page}#run-{key}" if page else self.record(profile, key)


def seed_links(runs: list[dict], links: SiteLinks | None) -> str:
    """HTML: "seeds 1 2 3", each seed with a result linking to its run."""
    done = [r for r in runs if r["state"] == "done"]
    if not done or links is None:
        return ""
    anchors = " ".join(f'<a href="{escape(links.run(r["profile"], r["dataset"], r["paradigm"], r["key"]))}">{r["seed"]}</a>'
                       for r in done)
    return f"seed{'s' if len(done) > 1 else ''} {anchors}"


def _best_rows(values: pd.Series, best: str) -> set:
    finite = values.dropna()
    if not len(finite) or best not in ("max", "min"):
        return set()
    target = finite.max() if best == "max" else finite.min()
    return set(finite.index[np.isclose(finite.values.astype(float), float(target))])


def separated_best(means: pd.Series, spreads: pd.Series, best: str = "max") -> set:
    """The row of the best mean, only when it is ahead of the next best by more than either one's
    spread (seed std; a missing std counts as 0): a lead inside the spread marks nothing. Ties and a
    column with a single value mark nothing either."""
    finite = means.dropna()
    if len(finite) < 2 or best not in ("max", "min"):
        return set()
    ranked = finite.sort_values(ascending=best == "min")
    first, second = ranked.index[0], ranked.index[1]
    spread = max(float(np.nan_to_num(spreads.get(first, np.nan))), float(np.nan_to_num(spreads.get(second, np.nan))))
    return {first} if abs(ranked.iloc[0] - ranked.iloc[1]) > spread and not np.isclose(ranked.iloc[0], ranked.iloc[1]) \
        else set()


def _wide_cell(raw: pd.Series, bold: bool, links: SiteLinks | None) -> str:
    text = escape(str(raw["ours"]))
    if not is_missing(raw["mean"]):
        text = f"<strong>{text}</strong>" if bold else text
    elif len(raw["runs"]) and all(r["state"] == "failed" for r in raw["runs"]):
        text = "failed"
    lines = [text]
    if "paper" in raw and not is_missing(raw["paper"]):
        paper = f"{escape(str(raw.get('source_label') or 'published'))} {number(raw['paper'])}{'' if raw['verified'] else '*'}"
        if not is_missing(raw["difference"]):
            paper += f", Δ {number(raw['difference'], signed=True)}"
        lines.append(f"<small>{paper}</small>")
    seeds = seed_links(raw["runs"], links) if "runs" in raw else ""
    if seeds:
        lines.append(f"<small>{seeds}</small>")
    return "<br>".join(lines)


def wide_html(cells: pd.DataFrame, rows: str = "method", columns: str = "dataset", links: SiteLinks | None = None,
              best: str = "max") -> str:
    """A compact table (e.g. methods × datasets): each cell holds ours (mean ± std; the best of its
    column in bold where :func:`separated_best` says it leads), the paper's number and the difference, and links to the seeds' runs; notes
    under the table say what an asterisk and an empty cell mean. Returned as HTML."""
    if not len(cells):
        return "<p>No runs planned.</p>"
    shown = titled(cells)
    best_rows = set()
    spreads = cells["std"] if "std" in cells else pd.Series(np.nan, index=cells.index)
    for _, group in cells.groupby(columns, sort=False):
        best_rows |= separated_best(group["mean"], spreads[group.index], best)
    table: dict = {}
    for (index, cell), (_, raw) in zip(shown.iterrows(), cells.iterrows()):
        table.setdefault(escape(str(cell[rows])), {})[escape(str(cell[columns]))] = _wide_cell(raw, index in best_rows, links)
    frame = pd.DataFrame.from_dict(table, orient="index").fillna("not in this matrix")
    frame.columns.name = escape(rows)  # the corner cell names the row labels, no extra header row
    notes = ["Bold: the best mean of its column, where it leads the next best by more than either one's spread "
             "over replicates (std); no bold: nothing leads by more than the spread."]
    if "paper" in cells:
        if cells["verified"].eq(False).any():
            notes.append("* an unverified transcription of the published number.")
        if cells["paper"].isna().any():
            notes.append("No published line: CAP's table is not transcribed for that cell.")
    return wrap_table(frame.to_html(escape=False, border=0, classes="table"), " ".join(notes))


def wrap_table(table_html: str, note: str = "") -> str:
    """A table in a box that scrolls sideways when the page is narrow, with a note under it."""
    note_html = f'<p class="table-note">{escape(note, quote=False)}</p>' if note else ""
    return f'<div class="table-box">{table_html}</div>{note_html}'


def _format_cell(value, decimals, missing: str) -> str:
    if is_missing(value):
        return escape(missing)
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return number(value, decimals)
    return breakable(escape(str(value)))


def breakable(text: str, longer_than: int = 24) -> str:
    """Long text (paths, parameter lists) may wrap after a slash, comma, equals sign or underscore,
    so a table cell does not push its table wider than the page."""
    if len(text) <= longer_than:
        return text
    return re.sub(r"([/,=_])", r"\1<wbr>", text)


def html_table(frame: pd.DataFrame, decimals: int | dict = DECIMALS, missing: str | dict = NO_VALUE,
               best: dict | None = None, html_columns: tuple = (), note: str = "", row_ids: list | None = None) -> str:
    """A table for a page: floats with ``decimals`` (per column, or one for all), integers as
    integers, a missing value replaced by ``missing`` (per column: the reason it is missing), the
    best value of each column in ``best`` ({column: "max" or "min"}) in bold, no index column.
    Columns in ``html_columns`` hold HTML (links) and are not escaped; ``row_ids`` gives each row
    an anchor (``id``) that links can point at."""
    best = best or {}
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        places = decimals.get(column, DECIMALS) if isinstance(decimals, dict) else decimals
        reason = missing.get(column, NO_VALUE) if isinstance(missing, dict) else missing
        values = frame[column]
        if column in html_columns:
            out[escape(str(column))] = [escape(reason) if is_missing(v) else str(v) for v in values]
            continue
        bold = _best_rows(pd.to_numeric(values, errors="coerce"), best[column]) if column in best else set()
        out[escape(str(column))] = [f"<strong>{_format_cell(v, places, reason)}</strong>" if i in bold
                                    else _format_cell(v, places, reason) for i, v in zip(frame.index, values)]
    note = note or ("Bold: the best value of its column." if best else "")
    table = out.to_html(escape=False, index=False, border=0, classes="table")
    if row_ids is not None:
        head, body = table.split("<tbody>", 1)
        rows = body.split("<tr>")
        body = rows[0] + "".join(f'<tr id="{escape(str(i))}">' + row for i, row in zip(row_ids, rows[1:]))
        table = head + "<tbody>" + body
    return wrap_table(table, note)


def cell_table(cells: pd.DataFrame, labels: list[str], paper: bool = True) -> pd.DataFrame:
    """A display table: label columns, ours (mean ± std), every seed, and the paper's number with its
    source and ours − paper (text, ready to show)."""
    shown = titled(cells)[labels].copy() if len(cells) else pd.DataFrame(columns=labels)
    shown["ours (mean ± std)"] = cells["ours"].values
    shown["per seed"] = cells["seeds"].values
    if paper:
        shown["published"] = [number(v, missing="not transcribed") for v in cells["paper"]]
        shown["source"] = cells["source"].values
        shown["ours − published"] = [number(v, signed=True, missing="no published number" if is_missing(p) else NOT_RUN)
                                 for v, p in zip(cells["difference"], cells["paper"])]
    return shown.reset_index(drop=True)


def details(summary: str, frame: pd.DataFrame | str) -> str:
    """HTML: ``frame`` (a table, or HTML) folded under ``summary``."""
    body = frame if isinstance(frame, str) else html_table(frame)
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def show(frame: pd.DataFrame, **options):
    """A table for a page (see :func:`html_table`), ready to display."""
    from IPython.display import HTML

    return HTML(html_table(frame, **options))


# -- what has run, and the commands for the rest ---------------------------------------------
def run_state_html(runs: pd.DataFrame, profile: str, matrix: str) -> str:
    """One line: how many of the matrix's runs in ``profile`` have a result and the one command
    that runs the rest; under it, folded, the per-slice commands and what failed or is stale."""
    total, done = len(runs), int((runs["state"] == "done").sum()) if len(runs) else 0
    title = PROFILE_TITLES.get(profile, get_profile(profile).title)
    if not total:
        return f"<p><strong>{escape(title)}:</strong> this matrix has no runs in the <code>{profile}</code> profile.</p>"
    counts = f"{done} of {total} runs have a result"
    problems = [f"{n} {state}" for state, n in runs["state"].value_counts().items() if state in ("failed", "stale")]
    if problems:
        counts += f" ({', '.join(problems)})"
    if done == total:
        return f"<p><strong>{escape(title)}:</strong> {counts}.</p>"
    whole = command(profile, matrix)
    line = (f"<p><strong>{escape(title)}:</strong> {counts}. Run {'them' if not done else 'the rest'} with "
            f"<code>{escape(whole)}</code> (finished runs are skipped).</p>")
    return line + details("commands for each dataset and paradigm, and what failed", commands_html(runs, profile))


def commands_html(runs: pd.DataFrame, profile: str, limit: int = 60) -> str:
    """The commands for every run without a result, failures and stale records, as HTML."""
    commands = missing_commands(runs, profile)
    parts = []
    failed = runs[runs["state"] == "failed"]
    if len(failed):
        errors = sorted(set(failed["detail"]))
        parts.append(f"<p>{len(failed)} runs failed (their <code>failed-&lt;key&gt;.json</code> records hold the "
                     "tracebacks): " + "; ".join(f"<code>{escape(e)}</code>" for e in errors[:3])
                     + (" …" if len(errors) > 3 else "") + "</p>")
    stale = runs[runs["state"] == "stale"]
    if len(stale):
        parts.append(f"<p>{len(stale)} records are stale ({escape(stale['detail'].iloc[0])}): they are not shown "
                     "as results and the commands below rerun them.</p>")
    if commands:
        more = (f"\n… and {len(commands) - limit} more (python -m cap runs --profile {profile} --list lists them)"
                if len(commands) > limit else "")
        parts.append("<pre>" + escape("\n".join(commands[:limit]) + more) + "</pre>")
    return "".join(parts) or "<p>Every run of this matrix has a result.</p>"
