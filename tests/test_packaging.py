"""Project wiring stays consistent: conda.yaml ≡ pyproject, MLproject defaults ≡ params.yaml, DVC stages resolve."""
from __future__ import annotations

import importlib.util
import tomllib

import yaml

from tests.conftest import REPO_ROOT


def _yaml(name):
    return yaml.safe_load((REPO_ROOT / name).read_text())


def test_conda_env_declares_the_pyproject_dependencies():
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pip_section = next(d["pip"] for d in _yaml("conda.yaml")["dependencies"] if isinstance(d, dict))
    assert sorted(pip_section) == sorted(deps)


STAGE_CONFIGS = {"prepare": "PrepareConfig", "describe": "DescribeConfig", "corpus": "CorpusConfig",
                 "pretrain": "PretrainConfig",
                 "adapt_vae": "AdaptVaeConfig", "finetune": "FinetuneConfig", "synthesize": "SynthesizeConfig",
                 "quality": "QualityConfig", "classify": "DownstreamConfig", "segment": "DownstreamConfig",
                 "report": "ReportConfig", "tune": "TuneConfig", "promote": "PromoteConfig"}


def _entry_point(name):
    from mlflow.projects import _project_spec

    return _project_spec.load_project(str(REPO_ROOT)).get_entry_point(name)


def _stage_config(name, user_parameters):
    """The typed config a stage builds from the command `mlflow run -e <name>` would run with these -P values."""
    import dataclasses
    import importlib
    import shlex

    from pipelines.cli import load_stage_config, parse_stage_args, stage_parser

    command = shlex.split(_entry_point(name).compute_command(user_parameters, storage_dir=None))
    assert command[:3] == ["python", "-m", f"pipelines.{name}"]
    args = parse_stage_args(stage_parser(name, ""), command[3:])
    cls = getattr(importlib.import_module(f"pipelines.{name}"), STAGE_CONFIGS[name])
    return load_stage_config(cls, name, args), args, [f.name for f in dataclasses.fields(cls)]


def test_entry_points_declare_only_the_params_file():
    entry_points = _yaml("MLproject")["entry_points"]
    assert set(STAGE_CONFIGS) | {"main"} == set(entry_points)
    for name in STAGE_CONFIGS:
        assert entry_points[name]["parameters"] == {"params": {"type": "path", "default": "params.yaml"}}, name
        assert entry_points[name]["command"] == f"python -m pipelines.{name} --params {{params}}", name


def _changed_value(value):
    """A -P string for a scalar config value and what the stage should then hold (None: not a scalar)."""
    if isinstance(value, bool):
        return str(not value).lower(), not value
    if isinstance(value, int):
        return str(value + 3), value + 3
    if isinstance(value, float):
        return str(value + 0.5), value + 0.5
    if isinstance(value, str):
        return value + "x", value + "x"
    return None


def test_entry_points_never_shadow_params_yaml(monkeypatch):
    """Without -P every key comes from params.yaml; with -P key=value exactly that key changes, for every scalar
    key of every entry point's section (a made-up value a config check refuses must be refused naming the key)."""
    import dataclasses

    from components.config import load_section
    from components.errors import SkinDualGenError

    monkeypatch.chdir(REPO_ROOT)
    for name in STAGE_CONFIGS:
        cfg, args, keys = _stage_config(name, {})
        assert args.overrides == [], name
        assert cfg == load_section(type(cfg), name, "params.yaml"), name
        checked = 0
        for key in keys:
            change = _changed_value(getattr(cfg, key))
            if change is None:
                continue
            try:
                changed, _, _ = _stage_config(name, {key: change[0]})
            except SkinDualGenError as exc:          # e.g. 'autox' is not a backend
                assert key in str(exc), (name, key, str(exc))
                continue
            assert getattr(changed, key) == change[1], (name, key)
            others = {f.name: getattr(changed, f.name) for f in dataclasses.fields(changed) if f.name != key}
            assert others == {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != key}, \
                (name, key)
            checked += 1
        assert checked >= 3, (name, checked)


def test_an_unknown_P_key_is_named():
    import pytest

    from components.errors import ConfigError

    with pytest.raises(ConfigError, match="lora_rnk"):
        _stage_config("finetune", {"lora_rnk": "8"})


def test_main_entry_point_forwards_stages_and_force():
    import shlex

    command = shlex.split(_entry_point("main").compute_command({"stages": "prepare,describe"}, storage_dir=None))
    assert command[3:] == ["--params", "params.yaml", "--stages", "prepare,describe", "--force", "false"]


def test_every_dvc_stage_runs_its_own_module_and_section():
    stages = _yaml("dvc.yaml")["stages"]
    params = _yaml("params.yaml")
    for name, stage in stages.items():
        module = stage["cmd"].split()[2]
        assert stage["cmd"].startswith("python -m pipelines."), name
        assert importlib.util.find_spec(module) is not None, f"{name}: {module} missing"
        assert f"{module.replace('.', '/')}.py" in stage["deps"], f"{name}: its own code is not a dep"
        for p in stage.get("params", []):
            section = p if isinstance(p, str) else next(iter(p))
            assert section in params, f"{name}: params section {section} missing"


def test_every_entry_point_runs_a_module_that_exists():
    for name, ep in _yaml("MLproject")["entry_points"].items():
        module = ep["command"].split()[2]
        assert importlib.util.find_spec(module) is not None, f"entry point {name}: {module} missing"
