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


def _as_param_string(value):
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return value


def test_mlproject_defaults_equal_params_yaml():
    params = _yaml("params.yaml")
    entry_points = _yaml("MLproject")["entry_points"]
    checked = 0
    for name, ep in entry_points.items():
        section = params.get(name)
        if not isinstance(section, dict):
            continue
        for key, spec in ep.get("parameters", {}).items():
            if key not in section:
                continue
            expected, default = _as_param_string(section[key]), spec["default"]
            if expected is None:
                assert str(default) in ("", "null"), f"MLproject {name}.{key}"
            elif isinstance(expected, bool):
                assert str(default).lower() == str(expected).lower(), f"MLproject {name}.{key}"
            elif spec["type"] == "float":
                assert float(default) == float(expected), f"MLproject {name}.{key}"
            else:
                assert str(default) == str(expected), f"MLproject {name}.{key}"
            checked += 1
    assert checked > 0


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
