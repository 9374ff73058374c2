"""Print the report tables and where to look next (the end of `make demo`)."""
from __future__ import annotations

import argparse
from pathlib import Path

SHOWN = ("table1.md", "table2.md", "table3.md", "verdict.md")   # the verdict last: what the demo answers


def print_results(root: str | Path = ".") -> None:
    """Print the report tables that exist (Tables 1-3, then the verdict), then where to look next."""
    root = Path(root).resolve()
    reports = root / "reports"
    shown = 0
    for name in SHOWN:
        md = reports / name
        if md.is_file():
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
