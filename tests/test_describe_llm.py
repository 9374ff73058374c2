"""Describe stage through the real openai client against a loopback chat-completions server."""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
import pytest

from components.describe import DescribeConfig, DescribeItem, DescriptionCache, check_description, create_describer
from components.errors import ConfigError
from pipelines import describe as describe_stage
from tests.describe_support import ChatServer, make_dataset

KEY = "sk-test-" + uuid.uuid4().hex  # a fresh secret per session, searched for in everything written


@pytest.fixture
def server():
    with ChatServer() as srv:
        yield srv


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "real"
    df = make_dataset(root, {"mel": 3, "nv": 2})
    return root, [DescribeItem(r.image_id, r.category, root / r.image_path, root / r.mask_path)
                  for r in df.itertuples()]


def _config(tmp_path: Path, server: ChatServer, **overrides) -> DescribeConfig:
    values = dict(data_dir=str(tmp_path / "real"), out_dir=str(tmp_path / "desc"), backend="openai",
                  base_url=server.url, max_concurrency=1, max_retries=2, backoff_s=0.01, backoff_max_s=0.05,
                  timeout_s=0.5, budget_usd=None)
    values.update(overrides)
    return DescribeConfig(**values)


def _describe(cfg, items, env=None):
    describer = create_describer(cfg, env={"OPENAI_API_KEY": KEY} if env is None else env)
    return describer.describe(items), describer.stats


def test_success_sends_the_paper_prompt_and_a_png_data_url(tmp_path, server, dataset):
    _, items = dataset
    results, stats = _describe(_config(tmp_path, server), items)
    assert [r.status for r in results] == ["llm"] * 5
    assert stats.llm == 5 and stats.requests == 5 and stats.fallback == 0
    assert stats.prompt_tokens == 5000 and stats.completion_tokens == 500
    assert stats.cost_usd == pytest.approx(5 * (1000 * 0.15 + 100 * 0.60) / 1e6)
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {KEY}" and first["png_ok"]
    assert first["body"]["model"] == "gpt-4o-mini"
    assert first["body"]["messages"][0]["content"][0]["text"] == (
        "Analyze this melanoma dermatology image. Describe in medical terms and give a sentence. Use ICD-11 "
        "terminology and begin with 'a dermoscopic lesion photo of melanoma for skin cancer diagnosis,...'")
    for result, item in zip(results, items):
        assert check_description(result.description, item.category, 100, 500).ok
        assert (result.describer, result.model) == ("openai", "gpt-4o-mini")
    assert results[0].description.startswith("a dermoscopic lesion photo of melanoma for skin cancer diagnosis, ")
    assert len({r.description for r in results}) == 5


def test_rate_limit_and_server_error_are_retried(tmp_path, server, dataset):
    _, items = dataset
    server.script = ["429", "500", "ok"]
    results, stats = _describe(_config(tmp_path, server), items[:1])
    assert results[0].status == "llm"
    assert stats.requests == 3 and stats.retries == 2 and stats.errors == 0
    assert stats.prompt_tokens == 1000  # failed attempts are not charged


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after(tmp_path, server, dataset):
    _, items = dataset
    describer = create_describer(_config(tmp_path, server, backoff_s=1.0, backoff_max_s=30.0),
                                 env={"OPENAI_API_KEY": KEY})
    no_header = ConfigError("no response attached")
    delays = {a: [describer._backoff(a, no_header) for _ in range(50)] for a in (0, 3, 10)}
    assert all(0.5 <= d <= 1.0 for d in delays[0]) and all(4.0 <= d <= 8.0 for d in delays[3])
    assert all(15.0 <= d <= 30.0 for d in delays[10]) and len(set(delays[3])) > 40  # capped, jittered

    server.retry_after = "0.4"
    server.script = ["429", "ok"]
    start = time.monotonic()
    results, stats = _describe(_config(tmp_path, server, backoff_s=0.001, backoff_max_s=1.0), items[:1])
    assert time.monotonic() - start >= 0.4 and results[0].status == "llm" and stats.retries == 1


def test_a_client_error_is_not_retried(tmp_path, server, dataset):
    _, items = dataset
    server.script = ["400"]
    results, stats = _describe(_config(tmp_path, server), items[:2])
    assert [(r.status, r.reason) for r in results] == [("fallback", "error"), ("llm", "")]
    assert stats.requests == 2 and stats.retries == 0 and stats.errors == 1


def test_retries_are_bounded_then_the_fallback_is_counted(tmp_path, server, dataset):
    _, items = dataset
    server.script = ["429"] * 3
    results, stats = _describe(_config(tmp_path, server, max_retries=2), items[:1])
    assert results[0].status == "fallback" and results[0].reason == "error"
    assert results[0].describer == "template" and stats.errors == 1 and stats.requests == 3


def test_invalid_answer_is_asked_again_once_then_falls_back(tmp_path, server, dataset):
    _, items = dataset
    server.script = ["invalid", "ok",                      # image 1: re-ask cures it
                     "wrong_category", "malformed",        # image 2: both asks fail -> fallback
                     "notjson", "invalid"]                 # image 3: both asks fail -> fallback
    results, stats = _describe(_config(tmp_path, server), items[:3])
    assert [r.status for r in results] == ["llm", "fallback", "fallback"]
    assert [r.reason for r in results] == ["", "invalid", "invalid"]
    assert stats.invalid == 2 and stats.invalid_answers == 5 and stats.requests == 6 and stats.llm == 1
    assert all(check_description(r.description, it.category, 100, 500).ok for r, it in zip(results, items))
    cache = DescriptionCache(tmp_path / "desc" / "cache.jsonl")
    assert len(cache) == 1  # only accepted answers are cached


def test_timeout_is_retried_then_falls_back(tmp_path, server, dataset):
    _, items = dataset
    server.script = ["sleep:2", "sleep:2"]
    results, stats = _describe(_config(tmp_path, server, timeout_s=0.3, max_retries=1), items[:2])
    assert [r.status for r in results] == ["fallback", "llm"]
    assert results[0].reason == "error" and stats.errors == 1 and stats.retries == 1 and stats.requests == 3


def test_budget_cap_stops_calls_and_counts_the_rest(tmp_path, server, dataset):
    _, items = dataset
    cfg = _config(tmp_path, server, budget_usd=0.0025, price_input_usd_per_mtok=1.0,
                  price_output_usd_per_mtok=1.0, max_concurrency=2)
    results, stats = _describe(cfg, items)  # each answer costs 1000 + 100 tokens x $1/M = $0.0011
    assert len(server.requests) == 2 and stats.llm == 2
    assert stats.budget_skipped == 3 and stats.fallback == 3 and stats.budget_exhausted
    assert stats.cost_usd == pytest.approx(0.0022) and stats.cost_usd <= 0.0025
    assert {r.reason for r in results if r.status == "fallback"} == {"budget"}


def test_cache_hit_makes_no_request_and_is_deterministic(tmp_path, server, dataset):
    _, items = dataset
    cfg = _config(tmp_path, server, max_concurrency=3)
    first, _ = _describe(cfg, items)
    assert len(server.requests) == 5
    second, stats = _describe(cfg, items)  # a new describer reads the cache file back
    assert len(server.requests) == 5
    assert [r.description for r in second] == [r.description for r in first]
    assert stats.cached == 5 and stats.requests == 0 and stats.cost_usd == 0
    third, _ = _describe(_config(tmp_path, server, model="other-model"), items[:1])
    assert len(server.requests) == 6 and third[0].model == "other-model"  # the model is part of the key


def test_concurrency_is_bounded(tmp_path, dataset):
    _, items = dataset
    with ChatServer(delay_s=0.15) as slow:
        results, _ = _describe(_config(tmp_path, slow, max_concurrency=2), items)
    assert [r.status for r in results] == ["llm"] * 5
    assert slow.max_in_flight == 2


def test_rejected_key_stops_the_run_with_a_clear_error(tmp_path, server, dataset):
    _, items = dataset
    server.default = "401"
    with pytest.raises(ConfigError, match="OPENAI_API_KEY") as err:
        _describe(_config(tmp_path, server, max_concurrency=2), items)
    assert KEY not in str(err.value)
    assert len(server.requests) <= 2  # no request after the first rejection except those already in flight


def test_stage_with_a_server_never_writes_the_key(tmp_path, server, dataset, monkeypatch, caplog, capsys):
    root, _ = dataset
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "describe-key-test")
    monkeypatch.chdir(tmp_path)  # MLflow artifacts of this new experiment land under tmp_path/mlruns
    caplog.set_level(logging.DEBUG)
    server.script = ["500_echo", "ok", "invalid", "ok", "429"]  # error paths that log, one echoing the key
    cfg = DescribeConfig(data_dir=str(root), out_dir=str(tmp_path / "desc"),
                         metrics_file=str(tmp_path / "metrics" / "describe.json"), max_concurrency=1,
                         backoff_s=0.01, backoff_max_s=0.05, timeout_s=2.0)
    metrics = describe_stage.run(cfg)

    assert server.requests[0]["auth"] == f"Bearer {KEY}"  # the key was in use
    assert metrics["backend"] == "openai" and metrics["llm"] == 5 and metrics["retries"] == 2
    assert metrics["invalid_answers"] == 1 and metrics["cost_usd"] > 0
    out = pd.read_csv(tmp_path / "desc" / "descriptions.csv", dtype=str, keep_default_na=False)
    assert set(out["describer"]) == {"openai"} and len(out) == 5
    run = mlflow.search_runs(experiment_names=["describe-key-test"], output_format="list")[0]
    assert run.data.metrics["llm"] == 5 and run.data.tags["describe.endpoint"] == server.url
    examples = mlflow.artifacts.load_text(run.info.artifact_uri + "/describe/examples.txt")
    assert "## llm" in examples and "a dermoscopic lesion photo of" in examples

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    db = Path(urlparse(os.environ["MLFLOW_TRACKING_URI"]).path)
    artifacts = Path(urlparse(run.info.artifact_uri).path)
    assert artifacts.is_dir() and any(artifacts.rglob("*.txt"))
    for path in [*written, db, *artifacts.rglob("*")]:
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert "upstream failed" in caplog.text  # the echoing error was logged ...
    assert KEY not in caplog.text            # ... with the key redacted
    captured = capsys.readouterr()
    assert KEY not in captured.out and KEY not in captured.err
    assert KEY not in json.dumps(run.data.params) + json.dumps(run.data.tags)
