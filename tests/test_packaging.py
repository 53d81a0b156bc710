"""The distribution as users install it: the wheel built from this checkout, installed in a fresh virtual
environment outside the checkout, runs the commands with what it ships (the configs by name, the demo tokenizer),
and the version is written in one place."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import align

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "runs", "site", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".ruff_cache")  # fmt: skip


def build_wheel(out: Path) -> Path:
    """The sdist, then the wheel from it (as `python -m build` does), from a copy of the checkout."""
    source = out / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out / "dist"),
                           str(source)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (out / "dist").glob("*.whl")
    return wheel


def fresh_environment(folder: Path, wheel: Path) -> Path:
    """A new virtual environment holding the wheel (installed by pip, without its dependencies) and seeing this
    environment's third-party packages through a .pth file: every one of them except align itself, so that
    nothing of the checkout can be imported. Returns its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())  # fmt: skip
    borrowed = folder / "borrowed"
    borrowed.mkdir()
    ours = ("align", "align_rlhf", "__editable__", "_align")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.suffix != ".pth" and not entry.name.startswith(ours):
            (borrowed / entry.name).symlink_to(entry)
    (purelib / "borrowed.pth").write_text(f"{borrowed}\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "bin"


def test_the_version_is_written_once_and_the_wheel_ships_what_the_commands_read(tmp_path):
    wheel = build_wheel(tmp_path)
    assert wheel.name == f"align_rlhf-{align.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("align/configs/rlhf_round/world_small.yaml", "align/configs/rlhf_round/world_tiny.yaml",
                    "align/configs/sft/7b.yaml", "align/world/tokenizer/tokenizer.json", "align/annotation_page.html",
                    "align/templates/judge_prompt.txt"):  # fmt: skip
        assert shipped in names, shipped
    metadata = zipfile.ZipFile(wheel).read(f"align_rlhf-{align.__version__}.dist-info/METADATA").decode()
    assert f"Version: {align.__version__}" in metadata and "Name: align-rlhf" in metadata
    for extra in ("annotate", "eval", "gpu"):
        assert f"Provides-Extra: {extra}" in metadata
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    assert sdist.name == f"align_rlhf-{align.__version__}.tar.gz"


@pytest.mark.slow
def test_the_wheel_in_a_fresh_environment_runs_the_commands_outside_the_checkout(tmp_path):
    """`align --help`, `align sft --help` and `align round 1 --config world_tiny` (a config shipped in the
    package, found by name, with the demo tokenizer it ships) from a folder that is no checkout."""
    bin_folder = fresh_environment(tmp_path / "venv", build_wheel(tmp_path / "build"))
    work = tmp_path / "work"
    work.mkdir()
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_folder / "align"), *args], cwd=work, capture_output=True, text=True,
                              env=environment, timeout=900)  # fmt: skip

    where = subprocess.run([str(bin_folder / "python"), "-c", "import align; print(align.__file__)"], cwd=work,
                           capture_output=True, text=True, env=environment)  # fmt: skip
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout + where.stderr
    assert run("--version").stdout.strip() == f"align {align.__version__}"
    usage = run("--help")
    assert usage.returncode == 0 and "round" in usage.stdout and "annotate" in usage.stdout
    sft_help = run("sft", "--help")
    assert sft_help.returncode == 0 and "--lora" in sft_help.stdout
    missing = run("sft", "--config", "world_smal")
    assert missing.returncode == 2 and "world_small" in missing.stderr and len(missing.stderr.splitlines()) == 1
    bench = run("bench", "model")
    assert bench.returncode == 2 and "source" in bench.stderr
    done = run("round", "1", "--config", "world_tiny")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (work / "runs" / "tiny" / "report.md").read_text()
    assert "| 1 |" in report and "gold helpfulness" in report
    assert (work / "runs" / "tiny" / "round-1" / "ppo").is_dir()
