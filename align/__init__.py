"""align: the Llama 2 alignment pipeline on the Hugging Face stack.

Importing `align` registers the `align_llama` model type with transformers' Auto classes, and turns transformers'
hub kernels off unless the user turned them on (`USE_HUB_KERNELS=YES`): from transformers 5.25 on, every
`from_pretrained` would otherwise replace layers with kernels downloaded from the Hub (code from the network at run
time, which align never runs unasked) and, without the `kernels` package, fail. bitsandbytes, which does not read
that variable, is kept from fetching its CPU kernel from the Hub when it is imported (`align.hub_kernels`).
See docs/install.md.
"""

import logging
import os

os.environ.setdefault("USE_HUB_KERNELS", "NO")

from .hub_kernels import guard_bitsandbytes_import
from .modeling import (
    AlignLlamaConfig,
    AlignLlamaForCausalLM,
    AlignLlamaForSequenceClassification,
    convert_mha_to_gqa,
    export_to_llama,
)

guard_bitsandbytes_import()

# bitsandbytes (optional; peft imports it whenever it is installed) logs a warning when imported on a CPU with
# AVX512-BF16 and no `kernels` package (or, here, a refused one): it would fetch a faster 4-bit kernel from the Hub,
# which align never does (no network at run time). Keep that line out of every command's output, where errors are
# one line.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__version__ = "0.1.0"

__all__ = [
    "AlignLlamaConfig",
    "AlignLlamaForCausalLM",
    "AlignLlamaForSequenceClassification",
    "convert_mha_to_gqa",
    "export_to_llama",
    "__version__",
]
