"""Run a jupytext notebook with papermill: check its parameters, execute, write atomically.

Notebooks in ``notebooks/`` are MyST-markdown (jupytext) files with a cell tagged ``parameters``
whose assignments carry type annotations (``seed: int = 0``;
papermill reads ``Optional[int]`` but not ``int | None``). Markdown cells may use
``{{ name }}`` placeholders, filled from the parameters after execution (plus ``preset_title``,
the display name of a ``preset`` parameter, ``matrix_title`` / ``matrix_about`` of a
``matrix`` parameter, and ``dataset_title`` / ``paradigm_title`` / ``profile_title`` of a run
notebook's parameters), so each executed page gets its own title.
"""

from __future__ import annotations

import ast
import logging
import os
import re
from pathlib import Path

from cap.atomic import atomic_write, remove_stale_temporaries
from cap.errors import CapError, ParameterError, matches_types

log = logging.getLogger(__name__)

# jupyter_client picks a kernel's ports before the kernel binds them, so kernels started at the same
# moment (two notebooks at once) can collide and one dies before it answers; nothing has run then,
# so the notebook is started again.
KERNEL_START_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond in")
KERNEL_START_TRIES = 3

class NotebookError(CapError):
    """A notebook that could not be run: bad parameters or an error inside it."""


class NotebookStopped(NotebookError, RuntimeError):
    """A notebook whose execution stopped before it finished (its kernel died or was killed, a cell
    timed out): nothing was written in place of its output, and running it again redoes it."""


def declared_parameters(notebook) -> dict[str, dict]:
    """The parameters cell of ``notebook``: name -> {type, default}."""
    from papermill.inspection import _infer_parameters

    for cell in notebook.cells:  # papermill expects every cell to carry a tags list
        cell.metadata.setdefault("tags", [])
    found = _infer_parameters(notebook)
    return {p.name: {"type": p.inferred_type_name, "default": p.default} for p in found}


def _type_names(annotation: str) -> list[str]:
    """``int``, ``Optional[int]`` or ``Union[int, str]`` -> the plain type names."""
    annotation = annotation.replace(" ", "")
    if annotation.startswith("Optional[") and annotation.endswith("]"):
        return [*_type_names(annotation[9:-1]), "None"]
    if annotation.startswith("Union[") and annotation.endswith("]"):
        return annotation[6:-1].split(",")
    return annotation.split("|")


def check_parameters(declared: dict[str, dict], given: dict) -> None:
    """Raise ParameterError for an unknown parameter or a value of the wrong type."""
    for name, value in given.items():
        if name not in declared:
            raise ParameterError(f"unknown notebook parameter {name!r}; valid: {', '.join(sorted(declared))}")
        type_name = declared[name]["type"]
        if matches_types(value, _type_names(type_name)) is False:  # None: a type we do not check
            raise ParameterError(
                f"notebook parameter {name!r} must be {type_name}, got {type(value).__name__} {value!r}"
            )


def _literal(source: str):
    """The value of a default as written in the parameters cell (its source text if not a literal)."""
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return source


def _fill_placeholders(notebook, context: dict) -> None:
    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in context:
            raise NotebookError(f"placeholder {{{{ {key} }}}} has no value; known: {', '.join(sorted(context))}")
        return str(context[key])

    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = re.sub(r"\{\{\s*(\w+)\s*\}\}", fill, cell.source)


def run_notebook(source: str | Path, output: str | Path, parameters: dict | None = None) -> Path:
    """Execute ``source`` (a jupytext .md or an .ipynb) with ``parameters`` into ``output``.

    The output appears only when the run succeeded; a failed run leaves
    ``<output stem>.failed.ipynb`` beside it for inspection and raises NotebookError.
    """
    import jupytext
    import nbformat
    import papermill

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise NotebookError(f"notebook {source} does not exist")
    parameters = dict(parameters or {})
    notebook = jupytext.read(source)
    declared = declared_parameters(notebook)
    check_parameters(declared, parameters)

    output.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(output.parent):  # left by a notebook run that was killed
        log.info("removed %s, left by a killed notebook run", stale)
    failed = output.with_name(output.stem + ".failed.ipynb")
    failed.unlink(missing_ok=True)
    context = {name: _literal(spec["default"]) for name, spec in declared.items()} | parameters

    def execute(tmp: Path) -> None:
        try:
            for attempt in range(1, KERNEL_START_TRIES + 1):
                try:
                    papermill.execute_notebook(notebook, str(tmp), parameters=parameters, kernel_name="python3",
                                               progress_bar=False, cwd=str(Path.cwd()))
                    break
                except RuntimeError as err:
                    if attempt == KERNEL_START_TRIES or not any(text in str(err) for text in KERNEL_START_FAILURES):
                        raise
                    log.warning("the kernel of %s died as it started (%s): starting another (%d of %d)", source, err,
                                attempt + 1, KERNEL_START_TRIES)
        except papermill.PapermillExecutionError as err:
            os.replace(tmp, failed)
            raise NotebookError(
                f"{source} failed with parameters {parameters}: {err.ename}: {err.evalue} (executed cells: {failed})"
            ) from None
        except Exception as err:  # the kernel died (killed, out of memory), a cell timed out, ...
            kept = f"; the cells it executed: {failed}" if _keep_partial(tmp, failed) else ""
            reason = (str(err).strip().splitlines() or [""])[0]
            raise NotebookStopped(
                f"{source} stopped before it finished ({type(err).__name__}: {reason}); {output} was not written: "
                f"run it again (make reruns it){kept}") from None
        executed = nbformat.read(tmp, as_version=4)
        executed.metadata.papermill.update(input_path=str(source), output_path=str(output))
        _fill_placeholders(executed, _page_context(context))
        for cell in executed.cells:  # pages show their parameters themselves, not papermill's cell
            if "injected-parameters" in cell.metadata.get("tags", []):
                cell.metadata.tags.append("remove-cell")
        nbformat.write(executed, tmp)

    atomic_write(output, execute)
    log.info("wrote %s", output)
    return output


def _keep_partial(tmp: Path, failed: Path) -> bool:
    """Keep what a stopped execution wrote as ``failed`` if it is a readable notebook; whether it was."""
    import nbformat

    try:
        nbformat.read(tmp, as_version=4)
    except Exception:  # half-written or empty: nothing to look at
        return False
    os.replace(tmp, failed)
    return True


def _page_context(context: dict) -> dict:
    """The placeholders' values: the parameters, plus the display names of a preset and a matrix."""
    context = dict(context)
    if context.get("preset") is not None:
        from cap.data.registry import get_dataset

        context["preset_title"] = get_dataset(context["preset"]).title
    if context.get("dataset") and context.get("paradigm") and context.get("profile"):  # a run notebook
        from cap.data.registry import get_dataset
        from cap.experiments.matrix import get_profile

        context["dataset_title"] = get_dataset(context["dataset"]).title
        context["paradigm_title"] = str(context["paradigm"]).upper()
        context["profile_title"] = get_profile(context["profile"]).title
    if context.get("matrix"):
        from cap.experiments.matrix import load_matrix

        context["matrix_title"] = load_matrix(context["matrix"]).title
        context["matrix_about"] = load_matrix(context["matrix"]).about
    return context


def write_failure_page(output: str | Path, source: str | Path, error: str) -> Path:
    """A stand-in for a page whose notebook failed, so the book still builds and says what is
    missing. Its modification time is set to the epoch: make sees it as out of date and runs the
    notebook again next time."""
    import nbformat

    output = Path(output)
    title = Path(source).stem.replace("_", " ")
    page = nbformat.v4.new_notebook()
    page.cells = [nbformat.v4.new_markdown_cell(
        f"# {title}: not built\n\n"
        f"```{{error}}\nThe notebook `{source}` that makes this page failed, so the page is missing from this "
        f"build:\n\n{error}\n\nFix the cause and run `make book` again; the failed notebook, with every cell it "
        f"executed, is `{output.with_name(output.stem + '.failed.ipynb')}`.\n```")]
    page.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    atomic_write(output, lambda tmp: nbformat.write(page, str(tmp)))
    os.utime(output, (0, 0))
    log.error("%s failed; wrote a stand-in page %s", source, output)
    return output
