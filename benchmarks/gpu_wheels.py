"""Download the wheels the GPU check carries to the lent machine into `.whl/` (`make gpu-wheels`).

The lent machine has no package registry. Carried, at the versions installed in this checkout's .venv (the
versions the rehearsal and the CPU tests ran with):
- diffusers (not in the image);
- peft (in the image, at a version nobody has recorded; the project pins peft<0.23, so the tested one travels);
- every requirement of those two that the image lacks (benchmarks.lent_env.LENT_PACKAGES), recursively:
  importlib-metadata for diffusers.
Each is fetched with the pip flags of /work/.library/device/README.md (CPython 3.12, manylinux x86-64, no
dependencies resolved by pip); wheels of other versions of the same distributions are removed from `.whl/`
(two versions of one distribution stop the whole install there). `.whl/` is git-ignored.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from packaging.requirements import Requirement

from benchmarks.lent_env import LENT_PACKAGES, REPO, normalize, wheel_distribution

CARRY = ("diffusers", "peft")
# The lent machine's interpreter and platform (KINDS.md: Python 3.12.3, x86-64 Linux).
TARGET_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
LENT = {normalize(p) for p in LENT_PACKAGES}


def requirements_missing_there(name: str) -> list[str]:
    """Requirements of installed distribution `name` (markers evaluated for the lent machine) not in the image."""
    out = []
    for text in md.requires(name) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(TARGET_ENV):
            continue
        if normalize(req.name) not in LENT:
            out.append(normalize(req.name))
    return out


def plan(carry: Sequence[str] = CARRY) -> dict[str, str]:
    """{distribution: version installed here} for everything to carry."""
    todo, pins = [normalize(c) for c in carry], {}
    while todo:
        name = todo.pop(0)
        if name in pins:
            continue
        try:
            pins[name] = md.version(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{name} is not installed in {sys.prefix}; `make install` first") from None
        todo.extend(requirements_missing_there(name))
    return pins


def download(pins: dict[str, str], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob("*.whl"):
        dist = wheel_distribution(stale)
        if dist in pins and f"-{pins[dist]}-" not in stale.name:
            stale.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["-d", str(dest), *(f"{n}=={v}" for n, v in sorted(pins.items()))]
    subprocess.run(cmd, check=True)
    return sorted(w for w in dest.glob("*.whl") if wheel_distribution(w) in pins)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_wheels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", type=Path, default=REPO / ".whl")
    p.add_argument("--dry-run", action="store_true", help="print what would be carried")
    args = p.parse_args(argv)
    pins = plan()
    print("carry:", ", ".join(f"{n}=={v}" for n, v in sorted(pins.items())))
    if args.dry_run:
        return 0
    wheels = download(pins, args.dest)
    size = sum(w.stat().st_size for w in wheels)
    print(f"{args.dest}: {', '.join(w.name for w in wheels)} ({size / 2**20:.1f} MiB; the device call's working "
          f"tree may hold 64 MiB in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
