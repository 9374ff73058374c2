"""Known secrets (the API key, credentials inside the base URL) in no file, param or log the stage writes."""
from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
import pytest

from components.describe import DescribeConfig, DescribeItem, DescriptionCache, cache_key, create_describer
from components.describe.base import render_prompt
from components.describe.secrets import REDACTED, Secrets, mask_url, url_credentials
from components.hashing import bytes_digest
from pipelines import describe as describe_stage
from tests.describe_support import ChatServer, make_dataset

KEY = "sk-test-" + uuid.uuid4().hex


def test_url_credentials_and_masking():
    url = "http://alice:p%40ss-" + "x" * 6 + "@gateway.local:8443/v1?team=a"
    found = url_credentials(url)
    assert "p%40ss-xxxxxx" in found and "p@ss-xxxxxx" in found and "alice:p@ss-xxxxxx" in found
    assert base64.b64encode(b"alice:p@ss-xxxxxx").decode() in found  # as sent in Authorization: Basic
    assert "alice" not in found  # a user name is no secret next to a password ...
    assert "tok-123456" in url_credentials("https://tok-123456@gw/v1")  # ... but is when it stands alone
    assert url_credentials("http://127.0.0.1:8000/v1") == [] and url_credentials("") == []
    assert mask_url(url) == "http://***@gateway.local:8443/v1?team=a"
    assert mask_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1" and mask_url("") == ""
    secrets = Secrets.from_env("", {"OPENAI_API_KEY": "key-abcdef", "OPENAI_BASE_URL": url})
    assert secrets.redact("key-abcdef and p@ss-xxxxxx and alice:p%40ss-xxxxxx") == (
        f"{REDACTED} and {REDACTED} and {REDACTED}")
    assert secrets.mask_url(url) == "http://***@gateway.local:8443/v1?team=a"


def test_an_answer_echoing_the_key_is_stored_redacted(tmp_path):
    root = tmp_path / "real"
    df = make_dataset(root, {"mel": 2})
    items = [DescribeItem(r.image_id, r.category, root / r.image_path, root / r.mask_path) for r in df.itertuples()]
    with ChatServer() as server:
        server.default, server.echo_text = "echo", KEY
        cfg = DescribeConfig(data_dir=str(root), out_dir=str(tmp_path / "desc"), backend="openai", base_url=server.url,
                             max_concurrency=1, timeout_s=2.0, budget_usd=None)
        results = create_describer(cfg, env={"OPENAI_API_KEY": KEY}).describe(items)
    assert [r.status for r in results] == ["llm", "llm"]
    assert all(f"reference {REDACTED} (Bearer {REDACTED})" in r.description for r in results)
    assert KEY not in (tmp_path / "desc" / "cache.jsonl").read_text()

    # A cache line written before redaction existed: the answer it holds comes out redacted.
    image = items[0].image_path.read_bytes()
    old = DescriptionCache(tmp_path / "old.jsonl")
    old.put(cache_key(bytes_digest(image), cfg.model, render_prompt(cfg.prompt, "mel")),
            results[0].description.replace(REDACTED, KEY, 1))
    again = create_describer(cfg, cache=old, env={"OPENAI_API_KEY": KEY}).describe(items[:1])
    assert again[0].status == "cached" and KEY not in again[0].description


def test_stage_with_echoing_server_and_url_credentials_writes_no_secret(tmp_path, monkeypatch, caplog, capsys):
    password = "pw-" + uuid.uuid4().hex[:12]
    basic = base64.b64encode(f"svc:{password}".encode()).decode()
    root = tmp_path / "real"
    make_dataset(root, {"mel": 3, "nv": 2})
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "describe-secrets-test")
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    with ChatServer() as server:
        base_url = server.url.replace("http://", f"http://svc:{password}@")
        server.echo_text = f"{KEY} {password} {base_url}"
        server.default = "echo"
        server.script = ["500_echo", "echo", "invalid"]  # an error body echoing the Authorization header, too
        cfg = DescribeConfig(data_dir=str(root), out_dir=str(tmp_path / "desc"), backend="openai", base_url=base_url,
                             metrics_file=str(tmp_path / "metrics" / "describe.json"), max_concurrency=1,
                             backoff_s=0.01, backoff_max_s=0.05, timeout_s=2.0)
        metrics = describe_stage.run(cfg)
    # The secrets were in play: httpx sends the URL's credentials as Basic auth, and the server echoed them.
    assert server.requests[0]["auth"] == f"Basic {basic}"
    assert metrics["llm"] == 5 and metrics["fallback"] == 0
    out = pd.read_csv(tmp_path / "desc" / "descriptions.csv", dtype=str, keep_default_na=False)
    assert all(f"reference {REDACTED} {REDACTED} " in d for d in out["description"])
    assert f"http://{REDACTED}@127.0.0.1" in out["description"][0]  # the echoed URL: credentials gone
    assert REDACTED in (tmp_path / "desc" / "cache.jsonl").read_text()

    run = mlflow.search_runs(experiment_names=["describe-secrets-test"], output_format="list")[0]
    assert run.data.params["base_url"] == server.url.replace("http://", "http://***@")
    assert run.data.tags["describe.endpoint"] == server.url
    db = Path(urlparse(os.environ["MLFLOW_TRACKING_URI"]).path)
    artifacts = Path(urlparse(run.info.artifact_uri).path)
    assert any(artifacts.rglob("examples.txt"))
    written = [p for p in [*tmp_path.rglob("*"), db, *artifacts.rglob("*")] if p.is_file()]
    assert any(p.name == "descriptions.csv" for p in written) and any(p.name == "describe.json" for p in written)
    for secret in (KEY, password, basic):
        for path in written:
            if path.suffix != ".png":
                assert secret.encode() not in path.read_bytes(), (secret, path)
        assert secret not in json.dumps(run.data.params) + json.dumps(run.data.tags) + json.dumps(run.data.metrics)
        assert secret not in caplog.text
        captured = capsys.readouterr()
        assert secret not in captured.out + captured.err
    assert "upstream failed" in caplog.text and "stored redacted" in caplog.text
    assert "describe.base_url carries credentials" in caplog.text


@pytest.mark.parametrize("where", ["params", "env"])
def test_a_failing_run_prints_no_secret(tmp_path, monkeypatch, capsys, where):
    password = "pw-" + uuid.uuid4().hex[:12]
    root = tmp_path / "real"
    make_dataset(root, {"mel": 2})
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "describe-secrets-fail")
    monkeypatch.chdir(tmp_path)
    with ChatServer() as server:
        server.default = "500_echo"  # every error body repeats the credentials
        base_url = server.url.replace("http://", f"http://svc:{password}@")
        if where == "env":
            monkeypatch.setenv("OPENAI_BASE_URL", base_url)
        params = tmp_path / "params.yaml"
        params.write_text(json.dumps({"describe": {
            "data_dir": str(root), "out_dir": str(tmp_path / "desc"), "metrics_file": str(tmp_path / "m.json"),
            "backend": "openai", "base_url": base_url if where == "params" else "", "max_retries": 0,
            "max_consecutive_failures": 1, "timeout_s": 2.0}}))
        with pytest.raises(SystemExit) as exit_info:
            describe_stage.main(["--params", str(params)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: describe: 2 of 2 image(s)" in err and "upstream failed for" in err  # the echo, redacted
    assert password not in err and KEY not in err
    assert not any(password.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
                   and p.name != "params.yaml")
