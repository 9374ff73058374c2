"""The ground floor every layer shares: registry, device resolver, file hashes, log-friendly progress bars."""
from __future__ import annotations

import hashlib
import io

import pytest
import torch

from components.data.importers import IMPORTERS
from components.describe.registry import DESCRIBERS
from components.device import resolve_device
from components.downstream.classifiers import CLASSIFIERS
from components.downstream.config import CLASSIFY_PRESETS, SEGMENT_PRESETS
from components.downstream.segmenters import SEGMENTERS
from components.errors import ConfigError, DataError, ModelError
from components.generator.presets import PRESETS
from components.hashing import bytes_digest, dvc_md5, file_digest
from components.progress import progress_bar
from components.quality.features import EXTRACTORS
from components.registry import Registry
from components.tuning.objectives import OBJECTIVES


# ------------------------------------------------------------------------------------------------ registry
def test_registry_create_names_and_errors():
    reg: Registry[int] = Registry("widget", hint="set section.widget")
    reg.register("b", 2)
    reg.register("a", 1)
    assert reg.create("a") == 1 and reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2
    assert "a" in reg and "c" not in reg
    with pytest.raises(ConfigError, match=r"^unknown widget 'c'; choose one of: a, b \(set section.widget\)$"):
        reg.create("c")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", 3)


def test_registry_decorator_add_and_error_class():
    reg: Registry[object] = Registry("thing", error=ModelError)

    @reg.decorator("f")
    def f():
        return 1

    class Named:
        name = "n"

    reg.add(Named)
    assert reg.create("f") is f and reg.create("n") is Named
    with pytest.raises(ModelError, match="choose one of: f, n"):
        reg.create("x")


@pytest.mark.parametrize("registry, expected, error", [
    (CLASSIFIERS, {"densenet121", "resnet34", "squeezenet1_1", "swin", "tiny_cnn"}, ModelError),
    (SEGMENTERS, {"unet_resnet34", "deeplabv3plus_resnet50", "tiny_unet"}, ModelError),
    (PRESETS, {"tiny", "sd2-base-random"}, ConfigError),
    (IMPORTERS, {"toy", "isic_gpt", "isic_archive", "ham10000"}, DataError),
    (EXTRACTORS, {"inception", "tv_inception", "vae"}, ConfigError),
    (OBJECTIVES, {"fd_vae"}, ConfigError),
    (DESCRIBERS, {"openai", "template"}, ConfigError),
    (CLASSIFY_PRESETS, {"cpu", "paper"}, ConfigError),
    (SEGMENT_PRESETS, {"cpu", "paper"}, ConfigError),
])
def test_every_family_is_one_registry_type(registry, expected, error):
    assert isinstance(registry, Registry)
    assert expected <= set(registry.names())
    with pytest.raises(error, match=f"unknown {registry.kind} 'nope'; choose one of: {', '.join(registry.names())}"):
        registry.create("nope")


# -------------------------------------------------------------------------------------------------- device
def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device("").type == expected
    assert resolve_device(None).type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available here; use device: auto or cpu"):
            resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="'gpu0' is not a torch device"):
        resolve_device("gpu0")


# -------------------------------------------------------------------------------------------------- hashes
def test_file_digest_known_values(tmp_path):
    f = tmp_path / "abc.bin"
    f.write_bytes(b"abc")
    assert file_digest(f) == "900150983cd24fb0d6963f7d28e17f72"           # md5("abc")
    assert file_digest(f, "sha256") == hashlib.sha256(b"abc").hexdigest()
    assert bytes_digest(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_file_digest_samples_large_files(tmp_path):
    mib = 1 << 20
    head, middle, tail = b"h" * mib, b"m" * mib, b"t" * mib
    f = tmp_path / "big.bin"
    f.write_bytes(head + middle + tail)
    expected = hashlib.sha256(str(3 * mib).encode() + head + tail).hexdigest()
    assert file_digest(f, "sha256", sample_above=2 * mib) == expected      # size + first and last MiB
    assert file_digest(f, "sha256", sample_above=3 * mib) == hashlib.sha256(head + middle + tail).hexdigest()
    g = tmp_path / "big2.bin"
    g.write_bytes(head + b"x" * mib + tail)                                  # only the middle differs
    assert file_digest(g, "sha256", sample_above=2 * mib) == expected


def test_dvc_md5_of_a_folder(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_bytes(b"abc")
    (tmp_path / "d" / "sub" / "b.txt").write_bytes(b"")
    entries = '[{"md5": "900150983cd24fb0d6963f7d28e17f72", "relpath": "a.txt"}, ' \
              '{"md5": "d41d8cd98f00b204e9800998ecf8427e", "relpath": "sub/b.txt"}]'
    assert dvc_md5(tmp_path / "d") == hashlib.md5(entries.encode()).hexdigest() + ".dir"
    assert dvc_md5(tmp_path / "d" / "a.txt") == "900150983cd24fb0d6963f7d28e17f72"


# ------------------------------------------------------------------------------------------------ progress
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_file_prints_whole_lines_every_few_percent():
    log = io.StringIO()
    for _ in progress_bar(range(1000), desc="steps", stream=log, mininterval=0):
        pass
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert 21 <= len(lines) <= 23                        # 0, 5, 10, ... 100 % (+ the closing line)
    assert lines[0].startswith("steps:   0%") and "1000/1000" in lines[-1]


def test_nested_progress_bars_in_a_log_file_carry_no_cursor_moves():
    log = io.StringIO()
    with progress_bar(total=2, desc="outer", stream=log, mininterval=0) as outer:
        for _ in range(2):
            for _ in progress_bar(range(20), desc="inner", stream=log, mininterval=0, leave=False):
                pass
            outer.update(1)
    text = log.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert any(line.startswith("inner") for line in text.splitlines())
    assert text.splitlines()[-1].startswith("outer: 100%")


def test_progress_in_a_log_file_waits_seconds_between_lines():
    log = io.StringIO()
    for _ in progress_bar(range(1000), desc="fast", stream=log):   # default: at least LOG_SECONDS apart
        pass
    lines = log.getvalue().splitlines()
    assert len(lines) <= 3 and "1000/1000" in lines[-1]


def test_progress_on_a_terminal_redraws_in_place():
    tty = _Tty()
    for _ in progress_bar(range(50), desc="tty", stream=tty, mininterval=0):
        pass
    assert tty.getvalue().count("\r") >= 50


def test_progress_disabled_prints_nothing():
    log = io.StringIO()
    for _ in progress_bar(range(10), stream=log, disable=True):
        pass
    assert log.getvalue() == ""
