"""Experiment matrices: every table and figure of the paper as one YAML file of runs.

A matrix (``cap/experiments/matrices/<name>.yml``) names datasets × paradigms × methods × seeds, optional
variants (named config changes, e.g. "without concept alignment") and an optional one-field
sweep (e.g. k). A profile (``cap/experiments/matrices/profiles.yml``) says where it runs: ``sim`` (the concept
simulator on the CPU, shortened schedules) or ``paper`` (real images through open_clip, the
official schedule), and may narrow a matrix's scope. :func:`plan` expands one matrix under one
profile into fully resolved runs, each keyed by the hash of its config, which is also the name
of its record, so a run shared by two matrices is one run.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from cap.config import METHOD_NAMES, RunConfig, as_dict, make_config, resolve
from cap.data.registry import PARADIGMS, dataset_names, get_dataset
from cap.errors import CapError, ParameterError, UnknownNameError
from cap.experiments.records import config_hash

MATRIX_KEYS = {"title", "about", "datasets", "paradigms", "methods", "seeds", "config", "variants", "sweep", "profiles"}
SCOPE_KEYS = {"datasets", "paradigms", "methods", "seeds"}
VARIANT_KEYS = {"label", "set", "datasets", "paradigms", "profiles"}
PROFILE_KEYS = {"title", "about", "config", "workers"}
# Where the matrix and profile files are (a test may point this elsewhere, then clear the caches:
# ``profiles.cache_clear(); load_matrix.cache_clear()``).
MATRICES_DIR = resources.files("cap.experiments").joinpath("matrices")
PROFILES_FILE = "profiles.yml"


class MatrixError(CapError):
    """A matrix or profile file that cannot be used as written."""


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    about: str
    config: dict
    workers: int


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    changes: dict
    datasets: tuple[str, ...] | None = None  # None: the matrix's
    paradigms: tuple[str, ...] | None = None
    profiles: tuple[str, ...] | None = None  # None: every profile of the matrix


@dataclass(frozen=True)
class Matrix:
    name: str
    title: str
    about: str
    datasets: tuple[str, ...]
    paradigms: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    config: dict
    variants: tuple[Variant, ...]
    sweep_field: str | None
    sweep_values: tuple
    profiles: dict[str, dict]  # profile name -> scope narrowing: datasets/paradigms/methods/seeds (None: all)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a matrix: its resolved config, record key and the labels a page groups by."""

    matrix: str
    variant: str
    sweep_value: object
    config: RunConfig
    key: str = field(compare=False)

    @property
    def labels(self) -> dict:
        c = self.config
        return {"matrix": self.matrix, "dataset": c.dataset, "paradigm": c.paradigm, "method": c.method,
                "variant": self.variant, "sweep": self.sweep_value, "seed": c.seed, "key": self.key}


def matrix_file(filename: str) -> str:
    """How messages name a matrix or profile file: ``cap/experiments/matrices/<filename>`` for the
    package's own, the full path for others."""
    path = MATRICES_DIR.joinpath(filename)
    try:
        return Path(str(path)).relative_to(Path(__file__).resolve().parents[2]).as_posix()
    except ValueError:
        return str(path)


def _read(filename: str) -> dict:
    shown = matrix_file(filename)
    try:
        data = yaml.safe_load(MATRICES_DIR.joinpath(filename).read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise MatrixError(f"{shown} is not valid YAML: {problem}{at}; fix its syntax") from None
    except (OSError, UnicodeDecodeError) as err:
        raise MatrixError(f"{shown} cannot be read ({err})") from None
    if not isinstance(data, dict):
        raise MatrixError(f"{shown} must hold a mapping (key: value lines), got a {_kind(data)}")
    return data


def _kind(value) -> str:
    return {list: "list", dict: "mapping", str: "string", type(None): "nothing (null)"}.get(type(value),
                                                                                           type(value).__name__)


def _mapping(where: str, value, what: str, empty_ok: bool = True) -> dict:
    """``value`` if it is a mapping (None: an empty one, when ``empty_ok``); MatrixError otherwise."""
    if value is None and empty_ok:
        return {}
    if not isinstance(value, dict):
        raise MatrixError(f"{where} must be a mapping of {what} (key: value lines or {{...}}), got a {_kind(value)} "
                          f"{value!r}")
    return value


def _unknown_keys(where: str, data: dict, valid: set[str]) -> None:
    unknown = sorted(set(data) - valid)
    if unknown:
        raise MatrixError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(valid))}")


def matrix_names() -> list[str]:
    return sorted(p.name[:-4] for p in MATRICES_DIR.iterdir() if p.name.endswith(".yml") and p.name != PROFILES_FILE)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count: a Slurm
    or container limit is respected). Each worker runs its notebook on one thread."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity masks on this platform (macOS)
        return max(1, os.cpu_count() or 1)


@cache
def profiles() -> dict[str, Profile]:
    out = {}
    for name, raw in _read(PROFILES_FILE).items():
        where = f"profile {name!r} ({matrix_file(PROFILES_FILE)})"
        raw = _mapping(where, raw, "title, about, config and workers")
        _unknown_keys(where, raw, PROFILE_KEYS)
        config = _mapping(f"{where}, config", raw.get("config"), "config fields")
        _check_changes(f"{where}, config", config)  # unknown keys and bad values fail here
        workers = raw.get("workers", 1)
        if workers == "cores":
            workers = available_cores()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise MatrixError(f"{where}, workers: must be a whole number of notebooks run at once (1 or more) or "
                              f"'cores' (one per CPU core this process may use), got {workers!r}; e.g. workers: 2")
        out[name] = Profile(name, raw.get("title", name), raw.get("about", ""), dict(config), workers)
    return out


class UnknownProfileError(MatrixError, UnknownNameError):
    """A profile name that ``profiles.yml`` does not define."""

    def __init__(self, name: object, where: str | None = None):
        UnknownNameError.__init__(self, "profile", name, profiles())
        at = f"{where}: " if where else ""
        self.args = (f"{at}{self.args[0]} (profiles are defined in {matrix_file(PROFILES_FILE)})",)


def get_profile(name: str, where: str | None = None) -> Profile:
    """The profile ``name``; UnknownProfileError (naming ``where`` it was asked for) if none has it."""
    if name not in profiles():
        raise UnknownProfileError(name, where)
    return profiles()[name]


def _names(where: str, value, valid: tuple[str, ...], normalise=lambda x: x) -> tuple[str, ...]:
    if value == "all":
        return tuple(valid)
    if not isinstance(value, list) or not value:
        raise MatrixError(f"{where} must be 'all' or a non-empty list, got {value!r}")
    out = []
    for item in value:
        name = normalise(item)
        if name not in valid:
            raise MatrixError(f"{where}: unknown name {item!r}; valid: {', '.join(valid)}")
        out.append(name)
    return tuple(out)


def _dataset(name: str) -> str:
    try:
        return get_dataset(name).name
    except UnknownNameError:
        return name


def _seeds(where: str, value) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                           for s in value):
        raise MatrixError(f"{where} must be a non-empty list of non-negative integers, got {value!r}")
    return tuple(value)


def _check_changes(where: str, changes: dict, datasets=None) -> None:
    """Changes that resolve on every dataset of ``datasets`` (some values depend on the dataset, e.g.
    ``sim_classes``); on EuroSAT when none is usable (the datasets' own check names those)."""
    if not isinstance(changes, dict):
        raise MatrixError(f"{where} must be a mapping of config fields, got {changes!r}")
    known = []
    for name in datasets if isinstance(datasets, list) else []:
        try:
            known.append(get_dataset(name).name)
        except UnknownNameError:
            pass
    for dataset in known or ["eurosat"]:
        try:
            resolve(make_config(dataset=dataset, **{k: v for k, v in changes.items() if k != "dataset"}))
        except CapError as err:
            raise MatrixError(f"{where}: {err}") from err


@cache
def load_matrix(name: str) -> Matrix:
    """The matrix ``name`` (a file in cap/matrices), checked: unknown keys and names are errors."""
    if name not in matrix_names():
        raise UnknownNameError("matrix", name, matrix_names())
    return parse_matrix(name, _read(f"{name}.yml"))


def parse_matrix(name: str, raw: dict) -> Matrix:
    """Check and build a matrix from its YAML mapping."""
    where = f"matrix {name!r} ({matrix_file(f'{name}.yml')})"
    raw = _mapping(where, raw, "matrix keys", empty_ok=False)
    _unknown_keys(where, raw, MATRIX_KEYS)
    for required in ("title", "datasets", "paradigms", "methods", "seeds", "profiles"):
        if required not in raw:
            raise MatrixError(f"{where}: missing key {required!r}")
    config = raw.get("config", {}) or {}
    _check_changes(f"{where}, config", config, raw["datasets"])
    variants = []
    for vname, spec in (_mapping(f"{where}, variants", raw.get("variants"), "variant names to variants")
                        or {"default": {}}).items():
        spec = _mapping(f"{where}, variant {vname!r}", spec, "label, set, datasets, paradigms and profiles")
        _unknown_keys(f"{where}, variant {vname!r}", spec, VARIANT_KEYS)
        _mapping(f"{where}, variant {vname!r}, set", spec.get("set"), "config fields")
        _check_changes(f"{where}, variant {vname!r}", spec.get("set", {}), spec.get("datasets", raw["datasets"]))
        variants.append(Variant(
            vname, spec.get("label", vname), dict(spec.get("set", {})),
            _names(f"{where}, variant {vname!r} datasets", spec["datasets"], tuple(dataset_names()), _dataset)
            if "datasets" in spec else None,
            _names(f"{where}, variant {vname!r} paradigms", spec["paradigms"], PARADIGMS) if "paradigms" in spec else None,
            _names(f"{where}, variant {vname!r} profiles", spec["profiles"], tuple(profiles())) if "profiles" in spec else None,
        ))
    sweep = raw.get("sweep")
    sweep_field, sweep_values = None, (None,)
    if sweep is not None:
        if not isinstance(sweep, dict) or set(sweep) != {"field", "values"} or not sweep["values"]:
            raise MatrixError(f"{where}: sweep must be {{field: NAME, values: [...]}}, got {sweep!r}")
        sweep_field, sweep_values = sweep["field"], tuple(sweep["values"])
        if sweep_field in ("dataset", "paradigm", "method", "seed"):
            raise MatrixError(f"{where}: a sweep cannot vary {sweep_field!r} (every run would collapse into one); "
                              f"list the values under '{sweep_field}s' instead")
        for value in sweep_values:
            _check_changes(f"{where}, sweep", {sweep_field: value}, raw["datasets"])
    scopes = raw["profiles"]
    if not isinstance(scopes, dict) or not scopes:
        raise MatrixError(f"{where}: profiles must map profile names to scopes ({{}} for the whole matrix)")
    checked_scopes = {}
    for pname, scope in scopes.items():
        at = f"{where}, profile {pname!r}"
        get_profile(pname, f"{where}, profiles")
        scope = _mapping(at, scope, "scope keys (datasets, paradigms, methods, seeds; {} for the whole matrix)")
        _unknown_keys(at, scope, SCOPE_KEYS)
        checked_scopes[pname] = {
            "datasets": _names(f"{at} datasets", scope["datasets"], tuple(dataset_names()), _dataset) if "datasets" in scope else None,
            "paradigms": _names(f"{at} paradigms", scope["paradigms"], PARADIGMS) if "paradigms" in scope else None,
            "methods": _names(f"{at} methods", scope["methods"], METHOD_NAMES) if "methods" in scope else None,
            "seeds": _seeds(f"{at} seeds", scope["seeds"]) if "seeds" in scope else None,
        }
    return Matrix(
        name=name, title=raw["title"], about=raw.get("about", ""),
        datasets=_names(f"{where}, datasets", raw["datasets"], tuple(dataset_names()), _dataset),
        paradigms=_names(f"{where}, paradigms", raw["paradigms"], PARADIGMS),
        methods=_names(f"{where}, methods", raw["methods"], METHOD_NAMES),
        seeds=_seeds(f"{where}, seeds", raw["seeds"]),
        config=dict(config), variants=tuple(variants), sweep_field=sweep_field, sweep_values=sweep_values,
        profiles=checked_scopes,
    )


def _filter(wanted: tuple | None, available: tuple) -> tuple:
    """``available`` in its order, narrowed to ``wanted`` (None: no narrowing)."""
    return available if wanted is None else tuple(x for x in available if x in wanted)


def _check_filter(kind: str, wanted, valid) -> tuple | None:
    if wanted is None:
        return None
    unknown = [w for w in wanted if w not in valid]
    if unknown:
        raise UnknownNameError(kind, unknown[0], [str(v) for v in valid])
    return tuple(wanted)


def plan(matrix: str | Matrix, profile: str, datasets=None, paradigms=None, methods=None, seeds=None,
         overrides: dict | None = None) -> list[PlannedRun]:
    """Every run of ``matrix`` under ``profile``, optionally narrowed to some datasets, paradigms,
    methods and seeds. ``overrides`` (RunConfig fields) come on top of the profile's, the matrix's,
    the variant's and the sweep's values, before the config is resolved, so an override of a value
    that others derive from (``schedule_factor``, ``official_flowers_k``) derives them again. A
    matrix that does not run under ``profile`` plans nothing."""
    m = load_matrix(matrix) if isinstance(matrix, str) else matrix
    prof = get_profile(profile)
    datasets = _check_filter("dataset", None if datasets is None else [_dataset(d) for d in datasets], dataset_names())
    paradigms = _check_filter("paradigm", paradigms, PARADIGMS)
    methods = _check_filter("method", methods, METHOD_NAMES)
    if seeds is not None and not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ParameterError(f"seeds must be non-negative integers, got {seeds!r}")
    if profile not in m.profiles:
        return []
    scope = m.profiles[profile]
    runs, seen = [], set()
    for variant in m.variants:
        if variant.profiles is not None and profile not in variant.profiles:
            continue
        datasets_ = _filter(scope["datasets"], variant.datasets or m.datasets)
        paradigms_ = _filter(scope["paradigms"], variant.paradigms or m.paradigms)
        methods_ = _filter(scope["methods"], m.methods)
        seeds_ = scope["seeds"] or m.seeds
        for dataset, paradigm, method, value, seed in itertools.product(
                _filter(datasets, datasets_), _filter(paradigms, paradigms_), _filter(methods, methods_),
                m.sweep_values, _filter(None if seeds is None else tuple(seeds), seeds_)):
            values = prof.config | m.config | variant.changes
            if m.sweep_field is not None:
                values |= {m.sweep_field: value}
            values |= overrides or {}
            try:
                config = resolve(make_config(**(values | dict(dataset=dataset, paradigm=paradigm, method=method,
                                                              seed=seed))))
            except CapError as err:  # e.g. a schedule set by the profile and by the matrix: name both files
                raise _combination_error(m, prof, variant, value, dataset, overrides, err) from None
            key = config_hash(as_dict(config))
            if key not in seen:  # e.g. a sweep value equal to a variant's: one run
                seen.add(key)
                runs.append(PlannedRun(m.name, variant.name, value, config, key))
    return runs


def _combination_error(m: Matrix, prof: Profile, variant: Variant, sweep_value, dataset: str, overrides,
                       err: CapError) -> MatrixError:
    """A config that the profile, the matrix, its variant, its sweep and the overrides make together
    but that does not resolve: the error names every file and key that contributed."""
    parts = [f"profile {prof.name!r} config ({matrix_file(PROFILES_FILE)})"] if prof.config else []
    parts.append(f"matrix {m.name!r} ({matrix_file(f'{m.name}.yml')})"
                 + (f" variant {variant.name!r}" if variant.changes else "")
                 + (f" sweep {m.sweep_field}={sweep_value!r}" if m.sweep_field is not None else ""))
    if overrides:
        parts.append(f"the overrides {overrides} (--set)")
    return MatrixError(f"{' + '.join(parts)} on {dataset}: {err}; change one of them so that they agree")


def command(profile: str, matrix: str, dataset: str | None = None, paradigm: str | None = None,
            method: str | None = None, seeds=None) -> str:
    """The exact ``make runs`` command that runs (part of) a matrix."""
    parts = ["make runs", f"PROFILE={profile}", f"MATRIX={matrix}"]
    for name, value in (("DATASET", dataset), ("PARADIGM", paradigm), ("METHOD", method)):
        if value is not None:
            parts.append(f"{name}={value}")
    if seeds:
        parts.append(f'SEEDS="{" ".join(str(s) for s in seeds)}"')
    return " ".join(parts)
