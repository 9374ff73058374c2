"""Print the report tables and where to look next (the end of `make demo`)."""
from __future__ import annotations

import argparse
from pathlib import Path



def print_results(root: str | Path = ".") -> None:
    """Print reports/*.md tables that exist, then the MLflow UI command."""
    root = Path(root).resolve()
    reports = root / "reports"
    shown = 0
    for md in sorted(reports.glob("*.md")) if reports.is_dir() else []:
        print(f"\n=== {md.relative_to(root)} ===\n{md.read_text().strip()}")
        shown += 1
    if not shown:
        print(f"No report tables in {reports} yet; run `dvc repro` (or `make demo`).")
    print(f"\nMetrics: {root / 'metrics'}  (dvc metrics show)")
    print(f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{root / 'mlflow.db'}   (or `make ui`)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.show_results", description=__doc__)
    parser.add_argument("--root", default=".")
    print_results(parser.parse_args(argv).root)


if __name__ == "__main__":
    main()
