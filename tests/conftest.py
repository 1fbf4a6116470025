import os
import subprocess
import sys
from pathlib import Path

import pytest

from cap import ensure_torchvision_importable

ROOT = Path(__file__).resolve().parents[1]
ensure_torchvision_importable()  # test modules import torchvision and open_clip themselves

NOTEBOOK_HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""
TINY_NOTEBOOK = NOTEBOOK_HEADER + """
```{code-cell} ipython3
:tags: [parameters]

x: int = 0
```
"""  # a MyST notebook with one parameter, for the notebook runner's tests


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> dict:
    """Seeded tiny open_clip weights, saved once and registered under open_clip's pretrained names."""
    from tiny_clip import register_tiny_weights

    return register_tiny_weights(tmp_path_factory.mktemp("tiny_weights"))


def run_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (imports and op registrations start clean)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``python -m cap *argv``, run in this process."""
    from cap.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_clear_error(code: int, err: str, *needles: str) -> str:
    """The CLI failed with exit status 2 and exactly one ``error:`` line holding every needle, no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, (code, err)
    assert all(needle in lines[0] for needle in needles), (needles, lines[0])
    return lines[0]
