"""Promote challengers to champion in the MLflow registry when they win on their metric."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from components import atomic
from components.config import to_dict
from components.errors import ConfigError
from components.tracking.mlflow_setup import configure
from components.tracking.promotion import Decision, promote
from pipelines.cli import load_stage_config, parse_stage_args, run_main, stage_parser


@dataclass
class PromoteConfig:
    # Each target is "model-name-or-glob:metric:max|min".
    targets: list[str] = field(default_factory=lambda: ["skindualgen-generator:fd_vae:min"])
    force: bool = False
    min_delta: float = 0.0
    out: str = "metrics/promote.json"


def parse_target(spec: str) -> tuple[str, str, bool]:
    """'name:metric:max' → (name, metric, greater_is_better)."""
    parts = spec.split(":")
    if len(parts) != 3 or parts[2] not in ("max", "min"):
        raise ConfigError(f"promote target {spec!r}: expected 'model:metric:max' or 'model:metric:min'")
    return parts[0], parts[1], parts[2] == "max"


def run(cfg: PromoteConfig) -> list[Decision]:
    """Compare champion and challenger of every matching registered model; returns the decisions."""
    configure()
    registered = [m.name for m in MlflowClient().search_registered_models()]
    decisions: list[Decision] = []
    errors: list[str] = []
    for spec in cfg.targets:
        pattern, metric, greater = parse_target(spec)
        names = sorted(fnmatch.filter(registered, pattern))
        if not names:
            raise ConfigError(f"no registered model matches {pattern!r}; registered: {sorted(registered)}")
        for name in names:
            try:
                decisions.append(promote(name, metric, greater, force=cfg.force, min_delta=cfg.min_delta))
            except ConfigError as exc:  # one model without a figure must not block the others
                errors.append(str(exc))
    atomic.write_json(cfg.out, {"config": to_dict(cfg), "decisions": [d.__dict__ for d in decisions],
                                "errors": errors})
    for d in decisions:
        verdict = "PROMOTED" if d.promoted else "kept champion"
        print(f"{d.model}: challenger v{d.challenger_version} ({d.metric}={d.challenger_value}) vs champion "
              f"v{d.champion_version} ({d.champion_value}) → {verdict}: {d.reason}")
    if errors:
        raise ConfigError("; ".join(errors))
    return decisions


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("promote", __doc__)
    parser.add_argument("--force", nargs="?", const="true", default=None, metavar="true|false",
                        help="promote the challenger whatever the metric says")
    args = parse_stage_args(parser, argv)
    if args.force is not None:
        args.overrides.append(f"force={args.force}")
    run_main(lambda: run(load_stage_config(PromoteConfig, "promote", args)))


if __name__ == "__main__":
    main()
