"""The lent GPU machine's Python packages, and a clean environment on this machine that holds only those.

The lent machine (/work/.library/device/KINDS.md, `nvidia-h200`) has an image-wide python3 with torch,
torchvision, transformers, peft, accelerate, timm, safetensors, pytest, ... but not diffusers, mlflow, ray, dvc,
albumentations or segmentation-models-pytorch, and no package registry. What the GPU check needs beyond the
image travels as wheels in `.whl/` (`make gpu-wheels`, `python -m benchmarks.gpu_wheels`).

`python -m benchmarks.lent_env [--root DIR] [--wheels .whl] -- COMMAND ...` rehearses a device call here:

1. a virtual environment without pip whose site-packages links only the distributions of this checkout's
   .venv that the lent machine has too (LENT_PACKAGES; versions are this machine's, not the image's);
2. the carried wheels installed with `pip install --no-index --no-deps --target DIR/site .whl/*.whl`, exactly
   as the device command does, DIR/site and the repository first on PYTHONPATH;
3. an import guard: each of NOT_THERE must fail to import in that environment (it would on the lent machine);
4. COMMAND run with that environment's python3 first on PATH (`python3 -m benchmarks.gpu_check --rehearse`).

Anything the GPU check or its tests import beyond the lent machine's packages then fails here, on the CPU,
instead of costing device minutes.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]

# KINDS.md, "Python packages already there" (the image 'cuda', read on 2026-11-17), distribution names.
LENT_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())

# Import names that exist in this checkout's .venv but not on the lent machine: the GPU check must not need them.
NOT_THERE = ("mlflow", "ray", "dvc", "albumentations", "segmentation_models_pytorch", "great_expectations",
             "optuna", "openai", "captum", "importlinter")

# What benchmarks/gpu_wheels.py carries (diffusers and its one requirement the image lacks; peft at the tested
# version): imports of these are expected outside the image.
CARRIED = frozenset({"diffusers", "importlib-metadata", "peft"})

# Needed here only because a package's version here differs from the image's: pandas 2.x (here) imports pytz
# and tzdata, pandas 3 (which an image without them must hold) does not.
REHEARSAL_ONLY = frozenset({"pytz", "tzdata"})

DEFAULT_ROOT = Path(os.environ.get("TMPDIR", "/tmp")) / "skindualgen-lent-env"


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_distribution(path: Path) -> str:
    """Normalised distribution name of a wheel file (NAME-VERSION-...whl)."""
    return normalize(path.name.split("-", 1)[0])


def carried_wheels(wheels: Path) -> list[Path]:
    return sorted(wheels.glob("*.whl")) if wheels.is_dir() else []


def _top_level_entries(dist: md.Distribution) -> set[str]:
    """First path components (relative to site-packages) of the files a distribution installed."""
    out: set[str] = set()
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
            continue
        out.add(parts[0])
    return out


def link_distributions(dest: Path, allowed: Iterable[str], skip: Iterable[str] = ()) -> list[str]:
    """Symlink into `dest` the files of every installed distribution whose name is in `allowed` (not `skip`);
    returns the linked distribution names."""
    allowed, skip = {normalize(a) for a in allowed}, {normalize(s) for s in skip}
    dest.mkdir(parents=True, exist_ok=True)
    linked: list[str] = []
    for dist in md.distributions():
        name = normalize(dist.metadata["Name"] or "")
        if name not in allowed or name in skip or name in linked:
            continue
        base = Path(str(dist.locate_file("")))
        for entry in _top_level_entries(dist):
            target, link = base / entry, dest / entry
            if target.exists() and not link.exists():
                link.symlink_to(target)
        linked.append(name)
    return sorted(linked)


def build(root: Path, wheels: Path) -> dict[str, str]:
    """Create the clean environment under `root` (rebuilt each time); returns the environment variables."""
    if root.exists():
        shutil.rmtree(root)
    venv, lent, site = root / "venv", root / "lent", root / "site"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    whl = carried_wheels(wheels)
    carried = {wheel_distribution(w) for w in whl}
    # Carried wheels shadow the image's copy on the lent machine (PYTHONPATH first); here they replace it.
    linked = link_distributions(lent, (LENT_PACKAGES | REHEARSAL_ONLY) - {"pip"}, skip=carried)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "lent-machine-packages.pth").write_text(str(lent) + "\n")
    if whl:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, whl)], check=True)
    missing = sorted(normalize(p) for p in LENT_PACKAGES if normalize(p) not in linked and normalize(p) not in carried)
    print(f"lent-machine environment in {root}: {len(linked)} distributions linked from {sys.prefix}, "
          f"{len(whl)} carried wheel(s) in {site}: {', '.join(w.name for w in whl) or 'none'}")
    print(f"  (not installed here, so not rehearsed: {len(missing)} of the image's packages)")
    env = dict(os.environ)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    env["VIRTUAL_ENV"] = str(venv)
    env["SKINDUALGEN_LENT_ENV"] = str(root)
    env.pop("PYTHONHOME", None)
    return env


def import_guard(env: dict[str, str]) -> list[str]:
    """Names of NOT_THERE that can still be imported in the environment (should be none)."""
    code = ("import importlib, sys\nbad = []\nfor n in sys.argv[1:]:\n    try:\n        importlib.import_module(n)\n"
            "    except ModuleNotFoundError:\n        continue\n    bad.append(n)\nprint(' '.join(bad))")
    out = subprocess.run(["python3", "-c", code, *NOT_THERE], env=env, check=True, capture_output=True, text=True)
    return out.stdout.split()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m benchmarks.lent_env", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"environment folder (default {DEFAULT_ROOT})")
    p.add_argument("--wheels", type=Path, default=REPO / ".whl", help="carried wheels (default .whl/)")
    args = p.parse_args(argv)
    if not carried_wheels(args.wheels):
        print(f"{args.wheels}: no wheels to carry; run `make gpu-wheels` first", file=sys.stderr)
        return 2
    env = build(args.root, args.wheels)
    leaked = import_guard(env)
    if leaked:
        print(f"import guard FAILED: {', '.join(leaked)} importable in the lent-machine environment", file=sys.stderr)
        return 1
    print(f"import guard: {', '.join(NOT_THERE)} are not importable there (ModuleNotFoundError), as on the lent "
          f"machine")
    if not command:
        return 0
    print("running:", " ".join(command), flush=True)
    return subprocess.run(command, env=env, cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
