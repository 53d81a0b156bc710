"""The Llama 2 model family of `align`, registered with transformers' Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from .configuration_align_llama import AUTO_MAP, PRESETS, AlignLlamaConfig, llama_intermediate_size
from .conversion import convert_mha_to_gqa, export_to_llama, from_llama_config, to_llama_config
from .loading import (
    UnsupportedModelError,
    allow_remote_code,
    decoder_trunk,
    final_norm,
    load_causal_lm,
    load_model_config,
    load_sequence_classifier,
    logits_from_hidden,
    remote_code_allowed,
    score_head,
)
from .modeling_align_llama import (
    AlignLlamaForCausalLM,
    AlignLlamaForSequenceClassification,
    AlignLlamaModel,
    AlignLlamaPreTrainedModel,
)

AutoConfig.register(AlignLlamaConfig.model_type, AlignLlamaConfig, exist_ok=True)
AutoModel.register(AlignLlamaConfig, AlignLlamaModel, exist_ok=True)
AutoModelForCausalLM.register(AlignLlamaConfig, AlignLlamaForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(AlignLlamaConfig, AlignLlamaForSequenceClassification, exist_ok=True)
# `save_pretrained` then copies the configuration and modeling files into every checkpoint (see AUTO_MAP).
AlignLlamaConfig.register_for_auto_class()
for _auto_class, _model_class in (
    ("AutoModel", AlignLlamaModel),
    ("AutoModelForCausalLM", AlignLlamaForCausalLM),
    ("AutoModelForSequenceClassification", AlignLlamaForSequenceClassification),
):
    _model_class.register_for_auto_class(_auto_class)

__all__ = [
    "AUTO_MAP",
    "PRESETS",
    "AlignLlamaConfig",
    "AlignLlamaModel",
    "AlignLlamaPreTrainedModel",
    "AlignLlamaForCausalLM",
    "AlignLlamaForSequenceClassification",
    "UnsupportedModelError",
    "allow_remote_code",
    "remote_code_allowed",
    "convert_mha_to_gqa",
    "decoder_trunk",
    "final_norm",
    "load_causal_lm",
    "load_model_config",
    "load_sequence_classifier",
    "logits_from_hidden",
    "score_head",
    "llama_intermediate_size",
    "export_to_llama",
    "from_llama_config",
    "to_llama_config",
]
