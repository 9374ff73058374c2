"""Stage `describe`: one clinical description per image of a dataset (vision LLM with cache, or offline template).

Writes <out_dir>/descriptions.csv (image_id, description, describer, model, status, reason), keeps the answer
cache in <out_dir>/cache.jsonl, writes the run's counters to metrics_file and logs them to MLflow with token
usage, estimated cost and examples. When more than `max_fallback_share` of the images asked of the LLM fell
back to the template, the stage still writes all of that, then fails with one line (DescribeError), so DVC does
not record the degraded output; the answers received are cached and a rerun asks only for the rest.
Known secrets (the API key from the environment, credentials inside the base URL) are redacted from answers,
params and logs: no file the stage writes holds them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import mlflow
import pandas as pd

from components import atomic
from components.config import to_dict
from components.data.manifest import read_manifest, resolve
from components.describe import (
    DescribeConfig,
    DescribeItem,
    Description,
    DescriptionCache,
    create_describer,
    resolve_backend,
)
from components.describe.apply import DESCRIPTION_COLUMNS
from components.describe.base import DescribeError, fallback_problem
from components.describe.cache import CACHE_NAME
from components.describe.secrets import Secrets, redacting_logs
from components.errors import DataError
from components.progress import progress_bar
from components.tracking.mlflow_setup import stage_run
from pipelines.cli import stage_main

log = logging.getLogger("pipelines.describe")

DESCRIPTIONS_NAME = "descriptions.csv"


def select_items(cfg: DescribeConfig) -> list[DescribeItem]:
    """Manifest rows of the configured splits (first `max_images` when > 0) as describe items."""
    root = Path(cfg.data_dir)
    df = read_manifest(root)
    present = set(df["split"].astype(str))
    unknown = sorted(set(cfg.splits) - present)
    if unknown and not set(cfg.splits) & present:
        raise DataError(f"{root}/manifest.csv: no rows with split {unknown}; the manifest has "
                        f"{sorted(present)}; fix describe.splits")
    if unknown:   # e.g. a dataset prepared with val_fraction: 0 has no 'val' rows
        log.info("describe: no rows with split %s in %s/manifest.csv; describing %s", unknown, root,
                 sorted(set(cfg.splits) & present))
    df = df[df["split"].isin(cfg.splits)]
    if cfg.max_images:
        df = df.head(cfg.max_images)
    items = []
    for row in df.itertuples(index=False):
        where = f"{root}/manifest.csv image_id={row.image_id}"
        mask = resolve(root, row.mask_path, where) if row.mask_path else None
        items.append(DescribeItem(str(row.image_id), str(row.category), resolve(root, row.image_path, where), mask))
    return items


def examples_text(results: Sequence[Description], per_path: int) -> str:
    """Up to `per_path` example descriptions for each way they were obtained."""
    lines = []
    for status in ("llm", "cached", "fallback", "template"):
        picked = [r for r in results if r.status == status][:per_path]
        if picked:
            lines.append(f"## {status}")
            lines += [f"[{r.image_id}] ({r.describer}/{r.model}{', ' + r.reason if r.reason else ''}) "
                      f"{r.description}" for r in picked]
            lines.append("")
    return "\n".join(lines)


def run(cfg: DescribeConfig) -> dict:
    """Describe every selected image; write descriptions.csv and the metrics; return the metrics."""
    items = select_items(cfg)
    backend = resolve_backend(cfg)
    secrets = Secrets.from_env(cfg.base_url, os.environ)
    params = {k: secrets.redact(v) if isinstance(v, str) else v for k, v in to_dict(cfg).items()}
    params["base_url"] = secrets.mask_url(cfg.base_url)
    out_dir = Path(cfg.out_dir)
    if Secrets(base_url=cfg.base_url).url_has_credentials:
        log.warning("describe.base_url carries credentials: they are redacted in everything this stage writes, but "
                    "DVC records the params section in dvc.lock; prefer OPENAI_BASE_URL for such a URL")
    with redacting_logs(secrets), stage_run("describe", params, inputs={"real": cfg.data_dir}):
        cache = DescriptionCache(out_dir / CACHE_NAME)
        describer = create_describer(cfg, cache=cache)
        endpoint = getattr(describer, "endpoint", "")
        mlflow.set_tags({"describe.backend": backend, "describe.describer": describer.name,
                         **({"describe.endpoint": endpoint} if endpoint else {})})
        log.info("describing %d image(s) with %s%s (cache: %d answer(s))", len(items), describer.name,
                 f" at {endpoint}, model {cfg.model}" if endpoint else "", len(cache))
        with progress_bar(total=len(items), desc="describe", unit="img") as bar:
            results = describer.describe(items, progress=bar.update)
        frame = pd.DataFrame([{c: getattr(r, c) for c in DESCRIPTION_COLUMNS} for r in results],
                             columns=list(DESCRIPTION_COLUMNS))
        frame["description"] = frame["description"].map(secrets.redact)  # the describer redacted already
        with atomic.atomic_path(out_dir / DESCRIPTIONS_NAME) as tmp:
            frame.to_csv(tmp, index=False)
        stats = describer.stats
        metrics = {**stats.to_metrics(), "backend": describer.name, "asked": stats.asked,
                   "fallback_share": round(stats.failed / stats.asked, 4) if stats.asked else 0.0,
                   "distinct_descriptions": int(frame["description"].nunique()),
                   "mean_chars": round(float(frame["description"].str.len().mean()), 1) if len(frame) else 0.0}
        atomic.write_json(cfg.metrics_file, metrics)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        mlflow.log_text(secrets.redact(examples_text(results, cfg.examples)), "describe/examples.txt")
        log.info("described %d image(s): %d llm, %d cached, %d fallback (%d invalid, %d errors, %d over budget, "
                 "%d circuit open), %d template; %d+%d tokens, ~$%.4f", metrics["images"], metrics["llm"],
                 metrics["cached"], metrics["fallback"], metrics["invalid"], metrics["errors"],
                 metrics["budget_skipped"], metrics["circuit_open"], metrics["template"], metrics["prompt_tokens"],
                 metrics["completion_tokens"], metrics["cost_usd"])
        note = getattr(describer, "health_note", lambda: "")()
        problem = fallback_problem(stats, cfg.max_fallback_share, note)
        if problem:
            mlflow.set_tag("describe.failed", "fallback_share")
            raise DescribeError(secrets.redact(f"describe: {problem} (per image: status/reason in "
                                               f"{out_dir / DESCRIPTIONS_NAME})"))
    return metrics


def main(argv: list[str] | None = None) -> None:
    stage_main("describe", DescribeConfig, run,
               "Describe every image with a vision LLM (cached) or the offline template.", argv)


if __name__ == "__main__":
    main()
