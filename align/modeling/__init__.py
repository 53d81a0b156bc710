"""The Llama 2 model family of `align`, registered with transformers' Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from .configuration import PRESETS, AlignLlamaConfig
from .conversion import convert_mha_to_gqa, export_to_llama, from_llama_config, to_llama_config
from .modeling import (
    AlignLlamaForCausalLM,
    AlignLlamaForSequenceClassification,
    AlignLlamaModel,
    AlignLlamaPreTrainedModel,
)

AutoConfig.register(AlignLlamaConfig.model_type, AlignLlamaConfig, exist_ok=True)
AutoModel.register(AlignLlamaConfig, AlignLlamaModel, exist_ok=True)
AutoModelForCausalLM.register(AlignLlamaConfig, AlignLlamaForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(AlignLlamaConfig, AlignLlamaForSequenceClassification, exist_ok=True)

__all__ = [
    "PRESETS",
    "AlignLlamaConfig",
    "AlignLlamaModel",
    "AlignLlamaPreTrainedModel",
    "AlignLlamaForCausalLM",
    "AlignLlamaForSequenceClassification",
    "convert_mha_to_gqa",
    "export_to_llama",
    "from_llama_config",
    "to_llama_config",
]
