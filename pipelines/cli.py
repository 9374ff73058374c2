"""Shared command line of every stage: `python -m pipelines.<stage> [--params params.yaml] [--set key=value ...]`."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, TypeVar

from components import agreements
from components.config import load_params, load_section, to_dict
from components.errors import SkinDualGenError

T = TypeVar("T")


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    """Parser with the common --params/--set options; stages may add their own flags."""
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{stage}", description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a key of the '{stage}' section, e.g. --set seed=1 (repeatable)")
    return parser


def parse_stage_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; each `--<key> <value>` (or `--<key>=<value>`) the parser does not know is an
    override of the stage's key, like `--set key=value`.

    That is what `mlflow run . -e <stage> -P key=value` appends for a key the entry point does not declare, so
    a key the user did not give never reaches the command and params.yaml stays in force.
    """
    args, rest = parser.parse_known_args(argv)
    args.overrides = list(args.overrides) + _key_value_flags(rest, parser)
    return args


def _key_value_flags(tokens: list[str], parser: argparse.ArgumentParser) -> list[str]:
    out, i = [], 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            parser.error(f"unexpected argument {token!r}; give stage keys as --set key=value or --key value")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens):
                parser.error(f"{token} needs a value (--{key} VALUE)")
            i += 1
            value = tokens[i]
        out.append(f"{key}={value}")
        i += 1
    return out


def load_stage_config(cls: type[T], stage: str, args: argparse.Namespace) -> T:
    """The typed config of `stage` from --params with --set overrides applied; it must agree with what the other
    stages share (components/agreements.py), or a ConfigError names both keys."""
    cfg = load_section(cls, stage, args.params, args.overrides)
    params = load_params(args.params)
    params[stage] = {**(params.get(stage) or {}), **to_dict(cfg)}
    agreements.check(params, stage, where=str(args.params))
    return cfg


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
    args = parse_stage_args(stage_parser(stage, description), argv)
    run_main(lambda: run(load_stage_config(cls, stage, args)))
