"""`align.hub_kernels`: importing bitsandbytes after align fetches no kernel from the Hub unless the user asked."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# A stand-in for bitsandbytes' CPU backend, which calls kernels.get_kernel while the package is imported (on a CPU
# with AVX512-BF16), so that the test holds on any CPU.
FAKE_BITSANDBYTES = '''
from kernels import get_kernel
try:
    get_kernel("kernels-community/quantization-bitsandbytes", version=1)
    OUTCOME = "fetched"
except Exception as error:
    OUTCOME = f"{type(error).__name__}: {error}"
'''


def import_fake_bitsandbytes(tmp_path: Path, **env: str) -> str:
    (tmp_path / "bitsandbytes").mkdir()
    (tmp_path / "bitsandbytes" / "__init__.py").write_text(FAKE_BITSANDBYTES)
    code = "import align, bitsandbytes, kernels; print(bitsandbytes.OUTCOME); print(kernels.get_kernel.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tmp_path), **env})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bitsandbytes_imported_after_align_fetches_no_kernel(tmp_path):
    pytest.importorskip("kernels")
    outcome, get_kernel = import_fake_bitsandbytes(tmp_path).splitlines()
    assert outcome.startswith("RuntimeError: align fetches no kernel from the Hub")
    assert get_kernel == "get_kernel"  # kernels' own function again once bitsandbytes is imported


def test_hub_kernels_turned_on_reach_kernels(tmp_path):
    pytest.importorskip("kernels")
    outcome, _ = import_fake_bitsandbytes(tmp_path, USE_HUB_KERNELS="YES").splitlines()
    assert "align fetches no kernel" not in outcome  # kernels' own answer (offline here: not in the cache)


def test_importing_align_and_peft_prints_nothing():
    done = subprocess.run([sys.executable, "-c", "import align, peft"], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
