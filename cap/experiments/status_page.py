"""The status page's runs section, from :func:`publish.publish_records`' table: a summary a reader
takes in at a glance, the versions once, and every record in a folded table with a filter box."""

from __future__ import annotations

from html import escape

import pandas as pd

SHOWN = ("epochs", "iters_per_epoch", "k", "tau", "margin", "margin_scale", "concept_alignment",
         "independent_adapters", "unlabelled_fraction", "backbone")


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Records per profile, dataset and method: how many in each state and the mean wall seconds."""
    frame = table.assign(dataset=table.get("config.dataset"), method=table.get("config.method"))
    counts = frame.pivot_table(index=["profile", "dataset", "method"], columns="state", values="record",
                               aggfunc="count", fill_value=0)
    seconds = frame.groupby(["profile", "dataset", "method"])["wall_seconds"].mean().rename("mean seconds")
    return counts.join(seconds).reset_index()


def versions(table: pd.DataFrame) -> str:
    """The software that wrote the records: one line when every record agrees, else each with its count."""
    lines = (f"Python {py}, torch {t}, open_clip {o}" for py, t, o in
             zip(table["python"], table["torch"], table["open_clip_torch"]))
    counts = pd.Series(list(lines)).value_counts()
    if len(counts) == 1:
        return f"every record: {counts.index[0]}"
    return "; ".join(f"{line} ({n} records)" for line, n in counts.items())


def parameters(row) -> str:
    return ", ".join(f"{k}={row[f'config.{k}']}" for k in SHOWN if f"config.{k}" in row and row[f"config.{k}"] is not None)


def run_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per record: a link to it, its state, what ran, its parameters, result, time, device."""
    return pd.DataFrame({
        "record": [f'<a href="../records/{escape(p)}/{escape(r)}">{escape(r[:-5])}</a>'
                   for p, r in zip(table["profile"], table["record"])],
        "state": table["state"],
        "run": [f"{d} {pa} {m} seed {s}" for d, pa, m, s in zip(
            table.get("config.dataset"), table.get("config.paradigm"), table.get("config.method"), table.get("config.seed"))],
        "parameters": [parameters(row) for _, row in table.iterrows()],
        "result": [r if r == r and r is not None else (e or "") for r, e in zip(table["headline"], table.get("error", ""))],
        "seconds": table["wall_seconds"],
        "device": table["device"],
        "written (UTC)": [str(w or "")[:19].replace("T", " ") for w in table["written"]],
    })


def filterable(table_html: str, summary_text: str) -> str:
    """``table_html`` folded under ``summary_text``, with a box that hides the rows not containing
    what is typed (runs in the page itself: nothing is loaded from elsewhere)."""
    script = ("var q=this.value.toLowerCase();this.closest('details').querySelectorAll('tbody tr')"
              ".forEach(function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)<0?'none':'';});")
    return (f"<details><summary>{escape(summary_text)}</summary>"
            f'<p><input type="search" placeholder="filter: e.g. eurosat ul cap seed 2" aria-label="filter the runs" '
            f'oninput="{escape(script)}" style="width:100%;max-width:30em"></p>{table_html}</details>')
