"""environment.yml, pyproject.toml and constraints.txt describe one environment."""

import re
import tomllib

import yaml


def requirement_lines(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_environment_yml_matches_pyproject(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    expected = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        expected |= set(extra)

    env = yaml.safe_load((root / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    assert project["requires-python"] == ">=" + python.split("=")[1]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-c constraints.txt" in pip and "-e ." in pip
    listed = {line for line in pip if not line.startswith("-")}
    assert listed == expected, f"only in environment.yml: {listed - expected}; only in pyproject: {expected - listed}"


def test_every_pin_is_applied_everywhere(root):
    pins = requirement_lines((root / "constraints.txt").read_text())
    assert {"torch==2.13.0", "torchvision==0.28.0", "open_clip_torch==3.3.0", "jupyter-book<2"} <= set(pins)
    env_text = (root / "environment.yml").read_text()
    project_text = (root / "pyproject.toml").read_text()
    for pin in pins:
        assert re.search(rf"\b{re.escape(pin)}\b", env_text), pin
        assert re.search(rf"\b{re.escape(pin)}\b", project_text), pin
    assert "-c constraints.txt" in (root / "Makefile").read_text()
