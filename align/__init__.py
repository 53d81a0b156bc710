"""align: the Llama 2 alignment pipeline on the Hugging Face stack.

Importing `align` registers the `align_llama` model type with transformers' Auto classes.
"""

from .modeling import (
    AlignLlamaConfig,
    AlignLlamaForCausalLM,
    AlignLlamaForSequenceClassification,
    convert_mha_to_gqa,
    export_to_llama,
)

__version__ = "0.1.0"

__all__ = [
    "AlignLlamaConfig",
    "AlignLlamaForCausalLM",
    "AlignLlamaForSequenceClassification",
    "convert_mha_to_gqa",
    "export_to_llama",
    "__version__",
]
