"""The registered generator is portable and servable: its artifacts carry the base model (or a pointer that
resolves anywhere), predictions are base64 PNGs, and `mlflow models serve` answers real HTTP requests."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from PIL import Image

from components.generator import base_models
from components.generator import lora as lora_lib
from components.generator.vae_surgery import expand_to_dual
from components.tracking.generator_model import decode_png, log_generator, portable_base
from components.tracking.registry import GENERATOR_MODEL, register

SIZE = 16     # tiny preset: VAE factor 4 → 4x4 latents


def _tiny_generator(root: Path) -> dict[str, Path]:
    """A tiny random base (diffusers folder behind a base.json pointer), its adapted VAE and a rank-2 LoRA."""
    model = base_models.build_preset("tiny", resolution=SIZE, seed=0)
    base_models.save_base(model, root / "weights")
    base_models.write_pointer(root / "base", str(root / "weights"))
    expand_to_dual(model.vae).save_pretrained(root / "vae4")
    lora_lib.add_lora(model.unet, 2, 2.0, 0.0, ["to_q", "to_k", "to_v", "to_out.0"])
    lora_lib.save_lora(model.unet, root / "lora", {"resolution": SIZE})
    return {"weights": root / "weights", "base": root / "base", "vae": root / "vae4", "lora": root / "lora"}


def _log_and_register(paths: dict[str, Path], alias: str) -> str:
    with mlflow.start_run(run_name="serving-test"):
        info = log_generator(paths["base"], paths["vae"], paths["lora"])
    return register(info.model_uri, GENERATOR_MODEL, alias=alias)


def test_portable_base_carries_folders_and_points_at_hub_ids_and_presets(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    base_models.save_base(base_models.build_preset("tiny", resolution=SIZE), weights)
    base_models.write_pointer(tmp_path / "pointer", str(weights))
    assert portable_base(tmp_path / "pointer", tmp_path / "s1") == (weights.resolve(), "folder")

    folder, kind = portable_base("sd2-base-random", tmp_path / "s2")
    assert kind == "preset" and json.loads((folder / "base.json").read_text()) == {"base_model": "sd2-base-random"}

    # a hub id in the local HF cache is pinned to its cached commit (no network: HF_HUB_OFFLINE=1)
    cache = tmp_path / "hf"
    snap = cache / "models--someone--sd2" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (cache / "models--someone--sd2" / "refs").mkdir()
    (cache / "models--someone--sd2" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    folder, kind = portable_base("someone/sd2", tmp_path / "s3")
    assert kind == "hub"
    assert json.loads((folder / "base.json").read_text()) == {"base_model": "someone/sd2", "revision": "a" * 40}
    assert base_models.resolve_pointer(folder) == ("someone/sd2", "a" * 40)
    folder, _ = portable_base("someone/uncached", tmp_path / "s4")
    assert json.loads((folder / "base.json").read_text()) == {"base_model": "someone/uncached"}


def test_registered_generator_runs_without_its_source_folders(tmp_path):
    paths = _tiny_generator(tmp_path)
    version = _log_and_register(paths, alias="portable")
    for p in paths.values():                      # nothing outside the registered model is left
        shutil.rmtree(p)
    model = mlflow.pyfunc.load_model(f"models:/{GENERATOR_MODEL}@portable")
    out = model.predict(pd.DataFrame({"category": ["mel", "nevus"]}),
                        params={"num_inference_steps": 2, "seed": 5})        # seeds from the param: 5, 6
    assert list(out.columns) == ["prompt", "seed", "image", "mask", "generator_version"]
    assert list(out["seed"]) == [5, 6] and out["generator_version"].str.startswith("gen-").all()
    image, mask = decode_png(out["image"][0]), decode_png(out["mask"][0])
    assert image.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
    assert version


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def test_mlflow_models_serve_answers_with_png_pairs(tmp_path):
    """`mlflow models serve -m models:/skindualgen-generator@champion` on loopback: a real POST, real PNGs."""
    paths = _tiny_generator(tmp_path / "src")
    _log_and_register(paths, alias="champion")
    shutil.rmtree(tmp_path / "src")                # the server must get everything from the registry
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"], "HF_HUB_OFFLINE": "1",
           "SKINDUALGEN_DEVICE": "cpu", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", f"models:/{GENERATOR_MODEL}@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not answer /ping in 180 s"
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        params = {"num_inference_steps": 2, "guidance_scale": 1.5}
        by_category = _post(f"{base}/invocations", {"dataframe_records": [{"category": "mel", "seed": 1}],
                                                    "params": params})["predictions"]
        prompt = by_category[0]["prompt"]
        assert prompt == "a dermoscopic lesion photo of melanoma for skin cancer diagnosis"
        by_prompt = _post(f"{base}/invocations", {"dataframe_records": [{"prompt": prompt, "seed": 1}],
                                                  "params": params})["predictions"]
        other_seed = _post(f"{base}/invocations", {"dataframe_records": [{"prompt": prompt, "seed": 2}],
                                                   "params": params})["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()

    row = by_category[0]
    assert set(row) == {"prompt", "seed", "image", "mask", "generator_version"} and row["seed"] == 1
    image, mask = decode_png(row["image"]), decode_png(row["mask"])
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
    assert Image.open(io.BytesIO(base64.b64decode(row["image"]))).mode == "RGB"
    assert Image.open(io.BytesIO(base64.b64decode(row["mask"]))).mode == "L"
    # the same prompt and seed give the same bytes, whether the prompt came from the category or was given
    assert (by_prompt[0]["image"], by_prompt[0]["mask"]) == (row["image"], row["mask"])
    assert other_seed[0]["image"] != row["image"]
