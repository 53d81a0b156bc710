"""No kernels from the Hub unless the user turned them on (`USE_HUB_KERNELS=YES`).

transformers' own hub kernels are off through `USE_HUB_KERNELS=NO` (align/__init__.py). bitsandbytes does not read
that variable: on a CPU with AVX512-BF16 its import (peft imports it whenever it is installed) calls
`kernels.get_kernel("kernels-community/quantization-bitsandbytes")`, which downloads a kernel and runs its code,
or, offline, prints a line on stderr. `guard_bitsandbytes_import` makes that call refuse while bitsandbytes is
imported, so it falls back to its own CPU kernels, as it does where `kernels` is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Iterator

TRUE_VALUES = ("1", "ON", "YES", "TRUE")


def hub_kernels_allowed() -> bool:
    """Whether the user turned hub kernels on (`USE_HUB_KERNELS`, read as transformers reads it)."""
    return os.environ.get("USE_HUB_KERNELS", "NO").upper() in TRUE_VALUES


@contextlib.contextmanager
def hub_kernels_refused() -> Iterator[None]:
    """While inside, `kernels.get_kernel` raises instead of fetching from the Hub (nothing to do without `kernels`)."""
    try:
        import kernels
    except ImportError:
        yield
        return

    def refuse(repo_id: str, *args, **kwargs):
        raise RuntimeError(f"align fetches no kernel from the Hub ({repo_id}) unless USE_HUB_KERNELS=YES")

    original = kernels.get_kernel
    kernels.get_kernel = refuse
    try:
        yield
    finally:
        kernels.get_kernel = original


class _BitsandbytesImportGuard(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first import of bitsandbytes, it wraps the package's loading in
    `hub_kernels_refused` (its submodules, the CPU backend among them, load inside) and steps aside."""

    def find_spec(self, name: str, path=None, target=None):
        if name != "bitsandbytes":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_without_hub_kernels(module) -> None:
                with hub_kernels_refused():
                    exec_module(module)

            spec.loader.exec_module = exec_without_hub_kernels
        return spec


def guard_bitsandbytes_import() -> None:
    """Unless hub kernels are allowed, make bitsandbytes' first import fetch no kernel from the Hub (a no-op where
    it is already imported)."""
    if hub_kernels_allowed() or "bitsandbytes" in sys.modules:
        return
    if not any(isinstance(finder, _BitsandbytesImportGuard) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BitsandbytesImportGuard())
