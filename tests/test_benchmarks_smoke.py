"""Smoke test of the benchmark harness on its smallest setting (scaling benchmark, 16 px, tiny model)."""
from __future__ import annotations

import json
import re

from benchmarks import run


def test_scaling_benchmark_appends_a_section_with_ratios(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\nan earlier section\n")
    record = run.main(["--only", "d", "--quick", "--device", "cpu", "--scaling-resolutions", "16",
                       "--scaling-batches", "1,2", "--out", str(out)])

    text = out.read_text()
    assert text.startswith("# Benchmark results\n\nan earlier section\n")      # appended, not replaced
    section = text.split("an earlier section\n", 1)[1]
    assert re.search(r"^## \d{4}-\d\d-\d\d \d\d:\d\d UTC · .+ · preset tiny$", section, re.M)
    header = next(line for line in section.splitlines() if line.startswith("| resolution × batch"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert "ratio vs baseline" in columns
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| 16 px")}
    assert set(rows) == {"16 px × batch 1", "16 px × batch 2"}
    ratio_col = columns.index("ratio vs baseline")
    assert rows["16 px × batch 1"][ratio_col] == "1.00× (baseline)"
    ratio = float(rows["16 px × batch 2"][ratio_col].rstrip("×"))

    cases = record["benchmarks"]["d"]["cases"]
    b1, b2 = cases["16 px × batch 1"], cases["16 px × batch 2"]
    assert len(b1["step_seconds"]) >= 2 and all(t > 0 for t in b1["step_seconds"])
    assert abs(ratio - b2["throughput"] / b1["throughput"]) < 0.01          # table ratio = raw numbers
    assert b2["throughput"] == 2 / b2["median_step_seconds"]
    saved = list((tmp_path / "results").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["settings"]["scaling_resolutions"] == [16]
