"""Command line: ``python -m cap ...``."""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from cap.errors import CapError


def _parameters(pairs: list[list[str]]) -> dict:
    # Values are YAML scalars, as with papermill's -p: 3 -> int, 0.5 -> float, null -> None.
    return {name: yaml.safe_load(value) for name, value in pairs}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cap", description="CAP companion command line")
    sub = parser.add_subparsers(dest="command", required=True)

    notebook = sub.add_parser("notebook", help="run parameterised notebooks").add_subparsers(dest="action", required=True)
    run = notebook.add_parser("run", help="execute a jupytext notebook with papermill")
    run.add_argument("source", help="notebook (.md jupytext or .ipynb)")
    run.add_argument("output", help="executed notebook to write (.ipynb)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))

    sim = sub.add_parser("sim", help="summarise a simulator preset")
    sim.add_argument("preset")
    sim.add_argument("--seed", type=int, default=0)

    data = sub.add_parser("data", help="real datasets on disk").add_subparsers(dest="action", required=True)
    check = data.add_parser("check", help="read a dataset and compare its image counts with the published splits")
    check.add_argument("dataset")
    check.add_argument("--root", default=None, help="data root (default: $CAP_DATA_ROOT)")
    check.add_argument("--paradigm", default=None, help="also count the labelled/unlabelled images of ul, ssl or trzsl")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "notebook":
            from cap.notebooks import run_notebook

            run_notebook(args.source, args.output, _parameters(args.parameter))
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
            from cap.datasets import get_dataset

            rows = check_dataset(args.dataset, args.root, paradigm=args.paradigm)
            print(format_check(rows, f"{get_dataset(args.dataset).title} under {data_root(args.root)}"))
    except CapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
