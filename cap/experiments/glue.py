"""Numbers and texts handed from a page's code cells to its prose ({glue:md}`key`)."""

from __future__ import annotations

from cap.experiments.report import DECIMALS, NO_VALUE, number


def put(key: str, value, decimals: int = DECIMALS, signed: bool = False, missing: str = NO_VALUE) -> None:
    """Glue ``value`` as a formatted number under ``key`` for the page's text ({glue:md}`key`)."""
    from IPython.display import Markdown
    from myst_nb import glue

    glue(key, Markdown(number(value, decimals, signed, missing)), display=False)


def glue_texts(texts: dict[str, str]) -> None:
    """Glue each Markdown text of ``texts`` under its key for the page's text ({glue:md}`key`)."""
    from IPython.display import Markdown
    from myst_nb import glue

    for key, text in texts.items():
        glue(key, Markdown(text), display=False)
