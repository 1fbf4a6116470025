"""Command line: ``python -m cap ...``."""

from __future__ import annotations

import argparse
import logging
import re
import sys

import yaml

from cap.atomic import writable_folder
from cap.errors import CapError, ParameterError


def _yaml_value(value: str, where: str):
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ParameterError(f"{where}: {value!r} is not a YAML value ({problem}); quote it or fix its syntax") from None


def _parameters(pairs: list[list[str]]) -> dict:
    # Values are YAML scalars, as with papermill's -p: 3 -> int, 0.5 -> float, null -> None.
    return {name: _yaml_value(value, f"-p {name}") for name, value in pairs}


# YAML 1.1 reads 1e-3 as a string (it wants 1.0e-3); a command line means the number.
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _assignment(item: str) -> tuple[str, object]:
    if "=" not in item:
        raise ParameterError(f"--set takes KEY=VALUE pairs, got {item!r}")
    key, value = item.split("=", 1)
    return key, float(value) if _EXPONENT.fullmatch(value.strip()) else _yaml_value(value, f"--set {key}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cap", description="CAP companion command line")
    sub = parser.add_subparsers(dest="command", required=True)

    notebook = sub.add_parser("notebook", help="run parameterised notebooks").add_subparsers(dest="action", required=True)
    run = notebook.add_parser("run", help="execute a jupytext notebook with papermill")
    run.add_argument("source", help="notebook (.md jupytext or .ipynb)")
    run.add_argument("output", help="executed notebook to write (.ipynb)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    run.add_argument("--stand-in-on-failure", action="store_true",
                     help="if the notebook fails, write a page saying so (the book still builds) and exit 0")

    run = sub.add_parser("run", help="run one method on one dataset and paradigm, writing a results record")
    run.add_argument("--dataset", required=True)
    run.add_argument("--paradigm", default="ul", help="ul, ssl or trzsl")
    run.add_argument("--method", default="cap", help="zero_shot, fpl, grip, cpl or cap")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--backend", default="sim", help="sim (concept simulator) or openclip (real images)")
    run.add_argument("--out", default="book/_generated/records", help="folder for the record (default: %(default)s)")
    run.add_argument("--force", action="store_true", help="rerun even when the record exists")
    run.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                     help="any other RunConfig field, e.g. --set epochs=10 margin=false")

    runs = sub.add_parser("runs", help="run experiment matrices (what `make runs` calls)")
    runs.add_argument("--profile", default="sim", help="sim (default) or paper")
    runs.add_argument("--matrix", nargs="*", default=None, help="matrix names (default: all); see cap/matrices")
    runs.add_argument("--dataset", nargs="*", default=None)
    runs.add_argument("--paradigm", nargs="*", default=None)
    runs.add_argument("--method", nargs="*", default=None)
    runs.add_argument("--seeds", nargs="*", type=int, default=None)
    runs.add_argument("--force", action="store_true", help="rerun runs that have a record")
    runs.add_argument("--workers", type=int, default=None, help="notebooks at once (default: the profile's)")
    runs.add_argument("--records", default=None, help="records folder (default: book/_generated/records/PROFILE)")
    runs.add_argument("--list", action="store_true", help="list the selected runs and their state; run nothing")
    _add_runs_executor_arguments(runs)

    sim = sub.add_parser("sim", help="summarise a simulator preset")
    sim.add_argument("preset")
    sim.add_argument("--seed", type=int, default=0)

    data = sub.add_parser("data", help="real datasets on disk").add_subparsers(dest="action", required=True)
    check = data.add_parser("check", help="read a dataset and compare its image counts with the published splits")
    check.add_argument("dataset")
    check.add_argument("--root", default=None, help="data root (default: $CAP_DATA_ROOT)")
    check.add_argument("--paradigm", default=None, help="also count the labelled/unlabelled images of ul, ssl or trzsl")
    _add_book_parser(sub)
    _add_adapt_parsers(sub)
    return parser


def _add_adapt_parsers(sub) -> None:
    adapt = sub.add_parser("adapt", help="CAP on your own images: a folder and class names in, an adapted classifier "
                                         "and a report out (book: CAP on your own images)")
    adapt.add_argument("images", help="folder of unlabelled images (any nesting)")
    adapt.add_argument("classnames", help="text file: one class name a line (blank lines ignored)")
    adapt.add_argument("--out", required=True, help="output folder (predictions.csv, classifier.pt, report.ipynb, ...)")
    adapt.add_argument("--labelled", default=None, metavar="FOLDER",
                       help="a few labelled images: one sub-folder per class name; some train (SSL), the rest are "
                            "held out to measure accuracy")
    adapt.add_argument("--descriptions", default=None, metavar="FILE",
                       help="YAML/JSON: class name -> list of candidate visual descriptions (concept alignment)")
    for name, default in (("backbone", "ViT-B-32"), ("pretrained", "openai"), ("weights", None),
                          ("precision", "auto"), ("epochs", 50), ("seed", 1)):
        adapt.add_argument(f"--{name}", default=None, type=int if isinstance(default, int) else str,
                           help=f"RunConfig {name} (default: {default})")
    adapt.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="other settings of the CAP run, e.g. --set iters_per_epoch=10 k=8 tau=0.9")
    adapt.add_argument("--force", action="store_true", help="train again even if --out holds this adaptation")
    adapt.add_argument("--no-report", action="store_true", help="skip the report notebook (needs papermill)")
    _add_device_arguments(adapt)
    adapt.add_argument("--cache", default=None, help="feature cache folder (default: $CAP_CACHE_DIR or ~/.cache/cap)")

    predict = sub.add_parser("predict", help="classify a folder of images with the classifier `cap adapt` wrote")
    predict.add_argument("classifier", help="the classifier.pt of a `cap adapt` output folder")
    predict.add_argument("images", help="folder of images (any nesting)")
    predict.add_argument("--out", required=True, help="CSV to write (path, class, confidence)")
    predict.add_argument("--weights", default=None, help="CLIP weights file (default: the one used in training, "
                                                         "else $CAP_CLIP_WEIGHTS, else download)")
    predict.add_argument("--batch-size", type=int, default=256)
    _add_device_arguments(predict)


def _add_device_arguments(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, default=None, help="image decoding processes (default: min(8, CPUs))")


def _adapt(args) -> int:
    from cap.adapt.adaptation import AdaptRequest, adapt

    settings = dict(_assignment(item) for item in args.set)
    for name in ("backbone", "pretrained", "weights", "precision", "epochs", "seed"):
        if getattr(args, name) is not None:
            if name in settings:
                raise ParameterError(f"--set {name}=... and --{name} both given; keep one")
            settings[name] = getattr(args, name)
    request = AdaptRequest(images=args.images, classnames=args.classnames, out=args.out, labelled=args.labelled,
                           descriptions=args.descriptions, settings=settings, device=args.device,
                           workers=args.workers, cache=args.cache, report=not args.no_report)
    summary = adapt(request, force=args.force)
    for path, why in summary["skipped"]:
        print(f"skipped {path}: {why}", file=sys.stderr)
    for flagged in summary["flagged"]:
        print(f"class {flagged['name']!r} looks mismatched (its name does not match its images): "
              + (f"aligned with {flagged['description']!r}" if flagged["described"] else
                 "alignment skipped (no descriptions for it; --descriptions adds them)"))
    test = summary["test"]
    score = (f"accuracy on {test['n']} held-out labelled images: zero-shot {test['zero_shot']:.1f} %, adapted "
             f"{test['adapted']:.1f} %" if "zero_shot" in test else
             f"agreement with zero-shot CLIP on {test['n']} images: {test['adapted']:.1f} %")
    print(f"{'already adapted' if summary['reused'] else 'adapted'}; {score}; outputs in {summary['out']}")
    return 0


def _predict(args) -> int:
    from cap.adapt.prediction import predict_folder

    done = predict_folder(args.classifier, args.images, args.out, weights=args.weights, device=args.device,
                          workers=args.workers, batch_size=args.batch_size)
    for path, why in done["skipped"]:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(f"classified {done['n']} images on {done['device']} in {done['seconds']:.1f} s: {done['csv']}"
          + (f" ({len(done['skipped'])} skipped, listed in {done['skipped_csv']})" if done["skipped"] else ""))
    return 0


def _add_book_parser(sub) -> None:
    book = sub.add_parser("book", help="the book build").add_subparsers(dest="action", required=True)
    summary = book.add_parser("summary", help="list the runs and notebooks a book build left without a result "
                                              "(what `make book` prints at its end)")
    summary.add_argument("--generated", default="book/_generated", help="generated folder (default: %(default)s)")
    summary.add_argument("--profile", default="sim")
    for name in ("matrix", "dataset", "paradigm", "method"):
        summary.add_argument(f"--{name}", nargs="*", default=None, help=f"only these {name} names (default: all)")
    summary.add_argument("--seeds", nargs="*", type=int, default=None)
    summary.add_argument("--strict", action="store_true", help="exit 1 if a run or notebook failed (make book STRICT=1)")
    verdicts = book.add_parser("verdicts", help="judge every claim from the records and add a snapshot to the "
                                                "verdict history when a verdict, the rule or the code changed")
    verdicts.add_argument("--records", default="book/_generated/records", help="records root (default: %(default)s)")
    verdicts.add_argument("--history", default="book/verdicts.json", help="verdict history file (default: %(default)s)")


def _book_verdicts(args) -> int:
    from cap.experiments.claims import claims_table
    from cap.experiments.verdict_log import record_snapshot, snapshot

    table, _ = claims_table(args.records, profiles=("sim",))
    added = record_snapshot(args.history, snapshot(table))
    counts = table["sim_verdict"].value_counts().to_dict()
    print(f"verdicts: {', '.join(f'{n} {v}' for v, n in counts.items())}; "
          + (f"a new snapshot in {args.history}" if added else f"{args.history} unchanged (same verdicts, rule and "
                                                                     "code, or runs missing)"))
    return 0


def _book_summary(args) -> int:
    from cap.experiments.build_summary import build_problems, format_summary

    problems = build_problems(args.generated, args.profile, matrices=args.matrix, datasets=args.dataset,
                              paradigms=args.paradigm, methods=args.method, seeds=args.seeds)
    print(format_summary(problems, args.profile), file=sys.stderr if problems else sys.stdout)
    if problems and not args.strict:
        print("(the book was built anyway; `make book STRICT=1` fails here instead)", file=sys.stderr)
    return 1 if problems and args.strict else 0


# RunConfig fields that `python -m cap run` takes as flags of their own, not through --set.
_RUN_FLAGS = ("dataset", "paradigm", "method", "seed", "backend")


def _folder_argument(value: str | None, flag: str) -> str | None:
    """An empty folder argument would write into the working directory: refuse it."""
    if value is not None and not str(value).strip():
        raise ParameterError(f"{flag} is empty; give a folder (e.g. {flag} book/_generated/records)")
    return value


def _run(args) -> int:
    from cap.config import as_dict, make_config, resolve
    from cap.experiments.locks import RunLock
    from cap.experiments.records import check_run_paths, config_hash, read_current_record
    from cap.experiments.runner import single_threaded
    from cap.experiments.runs import run

    overrides = dict(_assignment(item) for item in args.set)
    for item in args.set:
        key, _, value = item.partition("=")
        if key in _RUN_FLAGS:
            raise ParameterError(f"--set {item}: {key} has a flag of its own; use --{key} {value} instead")
    config = resolve(make_config(dataset=args.dataset, paradigm=args.paradigm, method=args.method, seed=args.seed,
                                 backend=args.backend, **overrides))
    out = writable_folder(_folder_argument(args.out, "--out"), "records folder", "choose another --out or make it writable")
    key = config_hash(as_dict(config))
    check_run_paths([key], out)  # a directory where its record or lock goes: say so before it trains
    with RunLock(key, out) as lock:  # as `cap runs` does: two commands never train one run at once
        if not lock.held:
            raise CapError(f"run {key} is being trained by another process (it holds {lock.path}): wait for it to "
                           "finish; its record will be in the same folder")
        with single_threaded():  # as every run of `cap runs`: the same numbers however it is started
            path = run(config, out, force=args.force)
    results = read_current_record(path)["results"]
    print(f"{args.method} on {args.dataset} ({args.paradigm}, seed {args.seed}): "
          f"{results['headline']:.2f}  record: {path}")
    return 0


def _add_runs_executor_arguments(runs) -> None:
    runs.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides",
                      help="RunConfig fields set on every selected run (a changed run has its own record), "
                           "e.g. --set epochs=2")
    runs.add_argument("--executor", default="inprocess", choices=("inprocess", "local", "slurm"),
                      help="inprocess (default): notebooks on this machine; local: one submitit job per run on "
                           "the GPUs of --gpus; slurm: one Slurm job per run")
    runs.add_argument("--gpus", default="0", help="local executor: GPU numbers, one job on each at a time "
                                                  "(default: %(default)s), e.g. 0,1,2,3")
    runs.add_argument("--slurm-options", default=None, metavar="FILE",
                      help="YAML file of Slurm options (partition, time, mem, account, additional_parameters, ...)")
    runs.add_argument("--slurm", nargs="*", default=[], metavar="KEY=VALUE",
                      help="Slurm options on top of the file, e.g. --slurm partition=gpu time=90")
    runs.add_argument("--detach", action="store_true", help="return once the jobs are submitted (slurm); "
                                                            "`--watch` follows them later")
    runs.add_argument("--notebooks", default=None,
                      help="executed notebooks and job logs (default: book/_generated/runs/PROFILE)")
    runs.add_argument("--status", action="store_true",
                      help="show done / running / queued / failed runs per dataset and paradigm; run nothing")
    runs.add_argument("--watch", type=float, nargs="?", const=10.0, default=None, metavar="SECONDS",
                      help="show the status every SECONDS (default 10) until no run is running or queued")


def _executor_options(args) -> dict:
    """run_matrices keywords from the executor flags of `cap runs`."""
    from cap.experiments.executors import slurm_options

    try:
        gpus = [int(g) for g in str(args.gpus).replace(" ", ",").split(",") if g]
    except ValueError:
        raise ParameterError(f"--gpus takes GPU numbers such as 0,1,2,3, got {args.gpus!r}") from None
    slurm = slurm_options(args.slurm_options, dict(_assignment(item) for item in args.slurm)) \
        if args.executor == "slurm" else None
    return dict(executor=args.executor, gpus=gpus, slurm=slurm, detach=args.detach, notebooks_dir=args.notebooks,
                overrides=dict(_assignment(item) for item in args.overrides))


def _runs_progress(args, selected) -> int:
    import pandas as pd

    from cap.experiments.matrix import matrix_names
    from cap.experiments.progress import format_progress, gpu_hours, watch
    from cap.experiments.records import DEFAULT_RECORDS
    from cap.experiments.runner import select

    records = args.records or DEFAULT_RECORDS / args.profile
    if args.watch is None:
        text, total = format_progress(selected, records)
        overrides = dict(_assignment(item) for item in args.overrides)
        hours = [gpu_hours(name, runs, records) for name in args.matrix or matrix_names() if (runs := select(
            args.profile, [name], args.dataset, args.paradigm, args.method, args.seeds, overrides))]
        hours.append(gpu_hours("all (each run once)", selected, records))
        print(text + "\n\nGPU hours (appendix D.2's training times; measured once records exist):\n"
              + pd.DataFrame(hours).to_string(index=False))
    else:
        total = watch(selected, records, args.watch, show=lambda text: print(text, flush=True))
    return 1 if total["failed"] else 0


def _runs(args) -> int:
    from cap.experiments.executors import live_statuses
    from cap.experiments.records import DEFAULT_RECORDS
    from cap.experiments.runner import describe, run_matrices, select

    overrides = dict(_assignment(item) for item in args.overrides)
    selected = select(args.profile, args.matrix, args.dataset, args.paradigm, args.method, args.seeds, overrides)
    if not selected:
        chosen = " ".join(f"--{name} {' '.join(map(str, value))}" for name, value in
                          (("matrix", args.matrix), ("dataset", args.dataset), ("paradigm", args.paradigm),
                           ("method", args.method), ("seeds", args.seeds)) if value is not None)
        raise CapError(f"no run of profile {args.profile!r} matches {chosen or 'the selection'} (a matrix may not "
                       f"run in this profile); `python -m cap runs --profile {args.profile} --list` lists every run")
    if args.list:
        records = args.records or DEFAULT_RECORDS / args.profile
        statuses = live_statuses([run.key for run in selected], records)
        for run in selected:
            status = statuses[run.key]
            print(f"{status.state:8s} {run.key}  {run.matrix}: {describe(run)}  {status.detail}")
        return 0
    if args.status or args.watch is not None:
        return _runs_progress(args, selected)
    _folder_argument(args.records, "--records")
    writable_folder(args.records or DEFAULT_RECORDS / args.profile, "records folder",
                    "choose another --records or make it writable")  # before any run starts
    states = run_matrices(args.profile, args.matrix, args.dataset, args.paradigm, args.method, args.seeds,
                          force=args.force, records_dir=args.records, workers=args.workers, **_executor_options(args))
    print("runs: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())))
    if states.get("running") or states.get("queued"):
        print("some runs are running or queued elsewhere (another runner, or Slurm jobs): `python -m cap runs "
              "--watch ...` follows them", file=sys.stderr)
    if states.get("failed") or states.get("missing") or states.get("stale"):
        print("some runs have no result; `python -m cap runs --list ...` shows which, and their failed-<key>.json "
              "records hold the tracebacks", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "notebook":
            from cap.experiments.notebooks import NotebookError, run_notebook, write_failure_page

            try:
                run_notebook(args.source, args.output, _parameters(args.parameter))
            except NotebookError as err:
                if not args.stand_in_on_failure:
                    raise
                write_failure_page(args.output, args.source, str(err))
                print(f"error: {err}\n(wrote a stand-in page; the book still builds)", file=sys.stderr)
        elif args.command == "run":
            return _run(args)
        elif args.command == "book":
            return _book_verdicts(args) if args.action == "verdicts" else _book_summary(args)
        elif args.command == "runs":
            return _runs(args)
        elif args.command == "adapt":
            return _adapt(args)
        elif args.command == "predict":
            return _predict(args)
        elif args.command == "sim":
            from cap.sim import make_problem

            problem = make_problem(args.preset, seed=args.seed)
            truth = problem.ground_truth()
            print(f"{truth['config']['preset']}: {problem.n_classes} classes, "
                  f"{len(problem.train_labels)} training / {len(problem.test_labels)} test images, "
                  f"zero-shot top-1 {problem.zero_shot_accuracy():.2f} %")
            print(f"planted mismatch: {truth['mismatched']}")
            print(f"planted confusion pairs (a's text drifts toward b): {truth['confusion_pairs']}")
        elif args.command == "data":
            from cap.data.check import check_dataset, format_check
            from cap.data.readers import data_root
            from cap.data.registry import get_dataset

            rows = check_dataset(args.dataset, args.root, paradigm=args.paradigm, decode=True)
            print(format_check(rows, f"{get_dataset(args.dataset).title} under {data_root(args.root)}"))
            if any(row.get("bad") for row in rows):
                return 1
    except CapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
