"""Shared command line of every stage: `python -m pipelines.<stage> [--params params.yaml] [--set key=value ...]`."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, TypeVar

from components.config import load_section
from components.errors import SkinDualGenError

T = TypeVar("T")


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    """Parser with the common --params/--set options; stages may add their own flags."""
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{stage}", description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a key of the '{stage}' section, e.g. --set seed=1 (repeatable)")
    return parser


def load_stage_config(cls: type[T], stage: str, args: argparse.Namespace) -> T:
    """The typed config of `stage` from --params with --set overrides applied."""
    return load_section(cls, stage, args.params, args.overrides)


def run_main(fn: Callable[[], object]) -> None:
    """Run a stage's main; project errors print one clear line and exit 2 instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        fn()
    except SkinDualGenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def stage_main(stage: str, cls: type[T], run: Callable[[T], object], description: str,
               argv: list[str] | None = None) -> None:
    """The whole `main` of a stage without extra flags: parse, load its typed config, run with clear errors."""
    args = stage_parser(stage, description).parse_args(argv)
    run_main(lambda: run(load_stage_config(cls, stage, args)))
