"""Describe under a bad server: circuit breaker, fallback share, per-row status/reason, rerun from the cache.

Real openai client against loopback stand-ins (tests/describe_support.py): a chat-completions server with a
scripted behaviour per request, and a TCP server that accepts and never answers.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from components.describe import DescribeConfig, DescribeItem, DescriptionCache, create_describer
from components.describe.base import DescribeError
from components.errors import ConfigError
from pipelines import describe as describe_stage
from tests.describe_support import ChatServer, HangingServer, make_dataset

KEY = "sk-test-" + uuid.uuid4().hex


@pytest.fixture
def server():
    with ChatServer() as srv:
        yield srv


def _items(root: Path, per_class: dict[str, int]) -> list[DescribeItem]:
    df = make_dataset(root, per_class)
    return [DescribeItem(r.image_id, r.category, root / r.image_path, root / r.mask_path) for r in df.itertuples()]


def _config(tmp_path: Path, url: str, **overrides) -> DescribeConfig:
    values = dict(data_dir=str(tmp_path / "real"), out_dir=str(tmp_path / "desc"), backend="openai", base_url=url,
                  max_concurrency=1, max_retries=2, backoff_s=0.01, backoff_max_s=0.05, timeout_s=0.5,
                  budget_usd=None)
    values.update(overrides)
    return DescribeConfig(**values)


def _describe(cfg: DescribeConfig, items: list[DescribeItem]):
    describer = create_describer(cfg, env={"OPENAI_API_KEY": KEY})
    return describer.describe(items), describer.stats


def _stage(tmp_path: Path, capsys, monkeypatch, **describe) -> tuple[int, str, float]:
    """Run `python -m pipelines.describe` in-process: (exit code, stderr, seconds)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "describe-breaker-" + uuid.uuid4().hex[:8])
    monkeypatch.chdir(tmp_path)
    section = {"data_dir": str(tmp_path / "real"), "out_dir": str(tmp_path / "desc"),
               "metrics_file": str(tmp_path / "metrics" / "describe.json"), "backend": "openai", **describe}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"describe": section}))
    capsys.readouterr()
    start = time.monotonic()
    try:
        describe_stage.main(["--params", str(params)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err, time.monotonic() - start


def _error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def _rows(tmp_path: Path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "desc" / "descriptions.csv", dtype=str, keep_default_na=False)


# -- the case: a server that never answers ----------------------------------------------------------

def test_hanging_server_gives_up_within_a_minute_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    """40 images, every setting at its default except a test-sized timeout."""
    make_dataset(tmp_path / "real", {"mel": 20, "nv": 20})
    with HangingServer() as hanging:
        code, stderr, seconds = _stage(tmp_path, capsys, monkeypatch, base_url=hanging.url, timeout_s=1.0)
        posts = hanging.posts
    print(f"40 images against a hanging server: gave up after {seconds:.1f} s, {posts} request(s)")
    assert code == 2 and seconds < 60
    # Until a first answer reports usage the budget lets one request be in flight, so the attempts are serial:
    # the breaker opens at the 5th timeout and nothing is asked afterwards.
    assert posts == 5
    line = _error_line(stderr)
    assert "40 of 40 image(s) asked of the LLM fell back to the template" in line
    assert "circuit breaker opened after 5 failed attempt(s) in a row" in line and "APITimeoutError" in line
    assert "status/reason in" in line
    rows = _rows(tmp_path)
    assert len(rows) == 40 and set(rows["status"]) == {"fallback"} and set(rows["describer"]) == {"template"}
    assert set(rows["reason"]) <= {"error", "circuit_open"} and (rows["reason"] == "circuit_open").sum() >= 35
    metrics = json.loads((tmp_path / "metrics" / "describe.json").read_text())
    assert metrics["requests"] == 5 and metrics["circuit_breaker_open"] is True
    assert metrics["circuit_opened_at_request"] == 5 and metrics["fallback_share"] == 1.0
    assert metrics["circuit_open"] + metrics["errors"] == 40 and metrics["llm"] == 0
    run = mlflow.search_runs(experiment_names=[os.environ["MLFLOW_EXPERIMENT_NAME"]], output_format="list")[0]
    assert run.info.status == "FAILED" and run.data.tags["describe.failed"] == "fallback_share"


def test_hanging_server_with_parallel_requests_stops_after_two_timeouts(tmp_path):
    """No budget cap: 4 requests in flight; the 5th timeout (the first retry's) opens the breaker."""
    items = _items(tmp_path / "real", {"mel": 20, "nv": 20})
    with HangingServer() as hanging:
        cfg = _config(tmp_path, hanging.url, max_concurrency=4, max_retries=4, backoff_s=0.2, backoff_max_s=30.0,
                      timeout_s=1.0)
        start = time.monotonic()
        results, stats = _describe(cfg, items)
        seconds = time.monotonic() - start
        posts = hanging.posts
    assert seconds < 4.0  # ~ timeout + backoff + timeout, not 40 images x 5 attempts
    assert 5 <= posts <= 8 and stats.requests == posts and stats.circuit_breaker_open
    assert [r.status for r in results] == ["fallback"] * 40
    assert {r.reason for r in results} == {"circuit_open"}  # each had retries left when the breaker opened
    assert stats.circuit_open == 40 and stats.failed == stats.asked == 40


# -- what counts as a failure --------------------------------------------------------------------------------

def test_breaker_opens_at_the_configured_count_of_failed_attempts(tmp_path, server):
    items = _items(tmp_path / "real", {"mel": 3, "nv": 2})
    server.default = "500"
    results, stats = _describe(_config(tmp_path, server.url, max_retries=2, max_consecutive_failures=5), items)
    # image 1: attempts 1-3 fail (retries spent: error); image 2: attempts 4-5 fail, the 5th opens the breaker
    assert [(r.status, r.reason) for r in results] == [("fallback", "error")] + [("fallback", "circuit_open")] * 4
    assert len(server.requests) == stats.requests == 5 and stats.circuit_opened_at_request == 5
    assert stats.errors == 1 and stats.circuit_open == 4 and stats.retries == 3


def test_an_answer_resets_the_count(tmp_path, server):
    items = _items(tmp_path / "real", {"mel": 2, "nv": 1})
    server.script = ["500"] * 4 + ["ok"] + ["500"] * 4 + ["ok", "ok"]
    results, stats = _describe(_config(tmp_path, server.url, max_retries=4, max_consecutive_failures=5), items)
    assert [r.status for r in results] == ["llm"] * 3 and not stats.circuit_breaker_open
    assert len(server.requests) == 11

    server.requests.clear()
    server.script = ["500"] * 4 + ["ok"]
    results, stats = _describe(_config(tmp_path, server.url, out_dir=str(tmp_path / "other"), max_retries=4,
                                       max_consecutive_failures=4), items)
    assert [(r.status, r.reason) for r in results] == [("fallback", "circuit_open")] * 3
    assert len(server.requests) == 4 and stats.circuit_opened_at_request == 4


def test_a_retried_429_does_not_count_but_a_request_given_up_does(tmp_path, server):
    items = _items(tmp_path / "real", {"mel": 3, "nv": 2})
    server.script = ["429", "429", "ok",     # image 1: paced twice, then answered: nothing counted
                     "429", "429", "429",    # image 2: retries spent on 429: failure 1
                     "400"]                  # image 3: a client error, not retried: failure 2 -> open
    results, stats = _describe(_config(tmp_path, server.url, max_retries=2, max_consecutive_failures=2), items)
    assert [(r.status, r.reason) for r in results] == [
        ("llm", ""), ("fallback", "error"), ("fallback", "error"), ("fallback", "circuit_open"),
        ("fallback", "circuit_open")]
    assert len(server.requests) == 7 and stats.circuit_opened_at_request == 7


def test_malformed_bodies_count_and_answers_failing_the_checks_do_not(tmp_path, server):
    items = _items(tmp_path / "real", {"mel": 3})
    server.script = ["invalid", "invalid", "invalid", "invalid",   # images 1-2: answered badly, not failures
                     "malformed", "notjson"]                        # image 3: 2 failures -> open
    results, stats = _describe(_config(tmp_path, server.url, max_consecutive_failures=2), items)
    assert [(r.status, r.reason) for r in results] == [("fallback", "invalid")] * 3
    assert stats.circuit_breaker_open and stats.circuit_opened_at_request == 6 and len(server.requests) == 6


def test_zero_turns_the_breaker_off(tmp_path, server):
    items = _items(tmp_path / "real", {"mel": 4, "nv": 4})
    server.default = "500"
    results, stats = _describe(_config(tmp_path, server.url, max_retries=0, max_consecutive_failures=0), items)
    assert {(r.status, r.reason) for r in results} == {("fallback", "error")}
    assert len(server.requests) == 8 and not stats.circuit_breaker_open and stats.circuit_opened_at_request == 0


# -- the fallback share decides the exit code ----------------------------------------------------------------

def test_fallback_share_fails_the_stage_and_a_rerun_asks_only_for_the_rest(tmp_path, server, capsys, monkeypatch):
    make_dataset(tmp_path / "real", {"mel": 5, "nv": 5})
    server.script = ["ok"] * 3
    server.default = "500"  # then the server breaks
    settings = dict(base_url=server.url, max_concurrency=1, max_retries=1, backoff_s=0.01, backoff_max_s=0.05,
                    timeout_s=2.0, max_consecutive_failures=3)
    code, stderr, _ = _stage(tmp_path, capsys, monkeypatch, **settings)
    assert code == 2 and len(server.requests) == 6  # 3 answers, image 4: 2 attempts, image 5: 1 -> open
    line = _error_line(stderr)
    assert line.startswith("error: describe: 7 of 10 image(s) asked of the LLM fell back to the template "
                           "(1 error, 6 circuit_open; 70% > describe.max_fallback_share=0.1)")
    assert "the 3 answer(s) received are cached" in line and "InternalServerError 500" in line
    rows = _rows(tmp_path)
    assert list(rows.columns) == ["image_id", "description", "describer", "model", "status", "reason"]
    assert list(zip(rows["status"], rows["reason"])) == (
        [("llm", "")] * 3 + [("fallback", "error")] + [("fallback", "circuit_open")] * 6)
    assert len(DescriptionCache(tmp_path / "desc" / "cache.jsonl")) == 3

    server.requests.clear()
    server.default = "ok"  # fixed: the rerun asks only for the 7 images without an answer
    code, stderr, _ = _stage(tmp_path, capsys, monkeypatch, **settings)
    assert code == 0 and "error:" not in stderr and len(server.requests) == 7
    rows = _rows(tmp_path)
    assert list(rows["status"]) == ["cached"] * 3 + ["llm"] * 7 and set(rows["reason"]) == {""}
    assert set(rows["describer"]) == {"openai"}
    metrics = json.loads((tmp_path / "metrics" / "describe.json").read_text())
    assert (metrics["cached"], metrics["llm"], metrics["fallback"], metrics["fallback_share"]) == (3, 7, 0, 0.0)


def test_fallback_share_threshold_is_exclusive_and_budget_fallbacks_do_not_count(tmp_path, server, monkeypatch):
    make_dataset(tmp_path / "real", {"mel": 5, "nv": 5})
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "describe-share-test")
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, server.url, metrics_file=str(tmp_path / "m.json"))
    server.script = ["400"]  # 1 of 10 falls back: 10% is not more than 10%
    assert describe_stage.run(cfg)["fallback_share"] == 0.1

    server.script = ["400"]
    strict = _config(tmp_path, server.url, out_dir=str(tmp_path / "d2"), metrics_file=str(tmp_path / "m.json"),
                     max_fallback_share=0.05)
    with pytest.raises(DescribeError, match=r"1 of 10 image\(s\) asked .* \(1 error; 10% > "
                                            r"describe.max_fallback_share=0.05\)"):
        describe_stage.run(strict)

    capped = _config(tmp_path, server.url, out_dir=str(tmp_path / "d3"), metrics_file=str(tmp_path / "m.json"),
                     budget_usd=0.0025, price_input_usd_per_mtok=1.0, price_output_usd_per_mtok=1.0)
    metrics = describe_stage.run(capped)  # the cap allows 2 answers; 8 budget fallbacks are the cap at work
    assert (metrics["llm"], metrics["budget_skipped"], metrics["asked"], metrics["fallback_share"]) == (2, 8, 2, 0.0)


def test_config_checks_the_new_keys():
    with pytest.raises(ConfigError, match="max_fallback_share"):
        DescribeConfig(max_fallback_share=1.5)
    with pytest.raises(ConfigError, match="max_consecutive_failures"):
        DescribeConfig(max_consecutive_failures=-1)
    assert (DescribeConfig().max_consecutive_failures, DescribeConfig().max_fallback_share) == (5, 0.1)
