"""Champion moves only to a better challenger (or when forced); the decision is recorded on the version."""
from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from components.errors import ConfigError
from components.tracking.mlflow_setup import configure
from components.tracking.promotion import is_better, promote
from components.tracking.registry import register, version_for_alias
from pipelines.promote import PromoteConfig, parse_target, run


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def _register(name: str, value: float) -> str:
    configure()
    with mlflow.start_run():
        mlflow.log_metric("score", value)
        info = mlflow.pyfunc.log_model(name="m", python_model=Constant())
    return register(info.model_uri, name, alias="challenger")


def test_is_better_directions():
    assert is_better(0.9, 0.8, True) and not is_better(0.8, 0.9, True)
    assert is_better(10.0, 12.0, False) and not is_better(12.0, 10.0, False)
    assert not is_better(0.81, 0.80, True, min_delta=0.05)
    assert not is_better(float("nan"), 1.0, True) and is_better(1.0, float("nan"), True)


def test_better_challenger_promoted_worse_kept(tmp_path):
    name = "unit-promote-model"
    v1 = _register(name, 0.70)
    first = promote(name, "score", greater_is_better=True)
    assert first.promoted and first.reason == "no champion yet"
    v2 = _register(name, 0.60)
    second = promote(name, "score", greater_is_better=True)
    assert not second.promoted and str(version_for_alias(name, "champion").version) == v1
    tags = MlflowClient().get_model_version(name, v2).tags
    assert tags["promotion.decision"] == "kept_champion"
    assert float(tags["promotion.challenger_value"]) == 0.60 and float(tags["promotion.champion_value"]) == 0.70
    v3 = _register(name, 0.90)
    third = promote(name, "score", greater_is_better=True)
    assert third.promoted and str(version_for_alias(name, "champion").version) == v3
    forced = _register(name, 0.10)
    assert promote(name, "score", greater_is_better=True, force=True).promoted
    assert str(version_for_alias(name, "champion").version) == forced


def test_version_tag_metric_wins_over_run_metric_and_pipeline_writes_decisions(tmp_path):
    from components.tracking.registry import record_version_metrics
    name = "unit-promote-tagged"
    v1 = _register(name, 5.0)
    record_version_metrics(name, v1, {"fd": 3.0}, source="quality")
    decisions = run(PromoteConfig(targets=[f"unit-promote-tag*:fd:min"], out=str(tmp_path / "p.json")))
    assert decisions[0].challenger_value == 3.0 and decisions[0].promoted
    assert (tmp_path / "p.json").is_file()


def test_missing_metric_and_bad_target():
    name = "unit-promote-nometric"
    _register(name, 1.0)
    with pytest.raises(ConfigError, match="no figure for 'absent'"):
        promote(name, "absent", greater_is_better=True)
    with pytest.raises(ConfigError, match="model:metric:max"):
        parse_target("x:y")
    with pytest.raises(ConfigError, match="has no '@challenger'"):
        configure()
        promote("never-registered", "score", True)


def test_a_model_without_its_figure_does_not_block_the_others(tmp_path):
    _register("unit-promote-blocked", 1.0)
    _register("unit-promote-free", 2.0)
    out = tmp_path / "p.json"
    with pytest.raises(ConfigError, match="unit-promote-blocked v1 has no figure for 'other'"):
        run(PromoteConfig(targets=["unit-promote-blocked:other:max", "unit-promote-free:score:max"], out=str(out)))
    assert str(version_for_alias("unit-promote-free", "champion").version) == "1"
    import json
    written = json.loads(out.read_text())
    assert len(written["errors"]) == 1 and written["decisions"][0]["model"] == "unit-promote-free"
