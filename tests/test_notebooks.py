"""The papermill runner: parameter checks, placeholders, atomic output, failures."""

import subprocess
import sys
import textwrap

import nbformat
import pytest

from cap.errors import ParameterError
from cap.experiments.notebooks import NotebookError, check_parameters, run_notebook
from conftest import NOTEBOOK_HEADER

HEADER = NOTEBOOK_HEADER


def notebook(tmp_path, body: str):
    path = tmp_path / "nb.md"
    path.write_text(HEADER + textwrap.dedent(body))
    return path


PARAMS = """
# Page for {{ preset_title }} with seed {{ seed }}

```{code-cell} ipython3
:tags: [parameters]

from typing import Optional

preset: str = "eurosat"
seed: int = 0
scale: float = 1.0
size: Optional[int] = None
```

```{code-cell} ipython3
print("value", seed * 10)
if seed < 0:
    raise ValueError("negative seed")
```
"""


def test_check_parameters():
    declared = {"seed": {"type": "int"}, "scale": {"type": "float"}, "size": {"type": "Optional[int]"}}
    check_parameters(declared, {"seed": 3, "scale": 2, "size": None})
    check_parameters(declared, {"size": 5})
    with pytest.raises(ParameterError, match=r"'size' must be Optional\[int\], got str"):
        check_parameters(declared, {"size": "5"})
    with pytest.raises(ParameterError, match=r"'seed' must be int, got str '3'"):
        check_parameters(declared, {"seed": "3"})
    with pytest.raises(ParameterError, match=r"'seed' must be int, got bool"):
        check_parameters(declared, {"seed": True})
    with pytest.raises(ParameterError, match=r"unknown notebook parameter 'sead'; valid: scale, seed, size"):
        check_parameters(declared, {"sead": 1})


def test_run_fills_parameters_and_placeholders(tmp_path):
    out = run_notebook(notebook(tmp_path, PARAMS), tmp_path / "out" / "page.ipynb", {"preset": "dtd", "seed": 4})
    nb = nbformat.read(out, as_version=4)
    assert nb.cells[0].source.startswith("# Page for DTD with seed 4")
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "value 40" in outputs
    assert nb.metadata.papermill.parameters == {"preset": "dtd", "seed": 4}
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.tags]
    assert injected and "remove-cell" in injected[0].metadata.tags
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_wrong_type_is_refused_before_running(tmp_path):
    with pytest.raises(ParameterError, match="must be int"):
        run_notebook(notebook(tmp_path, PARAMS), tmp_path / "page.ipynb", {"seed": "four"})
    assert not (tmp_path / "page.ipynb").exists()


def test_failure_leaves_no_output_and_keeps_the_failed_notebook(tmp_path):
    out = tmp_path / "page.ipynb"
    out.write_text("previous good result")
    with pytest.raises(NotebookError, match="ValueError: negative seed"):
        run_notebook(notebook(tmp_path, PARAMS), out, {"seed": -1})
    assert out.read_text() == "previous good result"  # nothing already computed is lost
    assert (tmp_path / "page.failed.ipynb").exists()


def test_a_kernel_that_dies_as_it_starts_is_started_again(tmp_path, monkeypatch, caplog):
    import papermill

    real, calls = papermill.execute_notebook, []

    def first_kernel_dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # what jupyter_client raises when two kernels took the same ports
            raise RuntimeError("Kernel died before replying to kernel_info")
        return real(*args, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", first_kernel_dies)
    out = run_notebook(notebook(tmp_path, PARAMS), tmp_path / "page.ipynb", {"seed": 2})
    assert len(calls) == 2 and "value 20" in out.read_text() and "died as it started" in caplog.text

    def other_failure(*args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(papermill, "execute_notebook", other_failure)
    with pytest.raises(RuntimeError, match="something else"):  # only a kernel's start is retried
        run_notebook(notebook(tmp_path, PARAMS), tmp_path / "other.ipynb", {"seed": 2})


def test_missing_notebook(tmp_path):
    with pytest.raises(NotebookError, match="does not exist"):
        run_notebook(tmp_path / "nope.md", tmp_path / "x.ipynb")


def test_cli_reports_errors_without_a_traceback():
    result = subprocess.run([sys.executable, "-m", "cap", "sim", "imagenet"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown simulator preset 'imagenet'; valid choices:")
    assert "Traceback" not in result.stderr


def test_a_failing_page_leaves_a_stand_in_so_the_book_still_builds(tmp_path):
    source = notebook(tmp_path, """
        # A page

        ```{code-cell} ipython3
        :tags: [parameters]

        records_root: str = "x"
        ```

        ```{code-cell} ipython3
        raise KeyError("headline")
        ```
        """)
    output = tmp_path / "out" / "page.ipynb"
    command = [sys.executable, "-m", "cap", "notebook", "run", str(source), str(output)]
    plain = subprocess.run(command, capture_output=True, text=True)
    assert plain.returncode == 2 and not output.exists()
    kept = subprocess.run(command[:5] + ["--stand-in-on-failure"] + command[5:], capture_output=True, text=True)
    assert kept.returncode == 0 and "wrote a stand-in page" in kept.stderr
    page = nbformat.read(output, as_version=4)
    assert "not built" in page.cells[0].source and "KeyError" in page.cells[0].source
    assert output.stat().st_mtime == 0, "make sees the stand-in as out of date and retries it"
    assert (tmp_path / "out" / "page.failed.ipynb").is_file()


def test_run_notebook_placeholders_name_the_dataset_paradigm_and_profile():
    from cap.experiments.notebooks import _page_context

    context = _page_context({"dataset": "fgvc_aircraft", "paradigm": "trzsl", "profile": "sim"})
    assert (context["dataset_title"], context["paradigm_title"], context["profile_title"]) == (
        "FGVC-Aircraft", "TRZSL", "Concept simulator (CPU)")
