"""Moving weights between `align_llama` and the Llama checkpoints people already have.

- Hugging Face `LlamaForCausalLM` directories load directly with `AlignLlamaForCausalLM.from_pretrained(dir)`:
  the parameter names are the same and `AlignLlamaConfig` folds a `model_type: llama` config into its own.
- `export_to_llama(model, dir)` writes a plain `LlamaForCausalLM` directory (weights, config and the tokenizer)
  for tools that only know Llama.
- `convert_mha_to_gqa(model, n)` is the checkpoint conversion of Ainslie et al. 2023 (docs/method.md §1).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from .configuration_align_llama import AlignLlamaConfig
from .modeling_align_llama import AlignLlamaForCausalLM, AlignLlamaForSequenceClassification

logger = logging.getLogger(__name__)

_SHARED_CONFIG_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
    "initializer_range",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
    "hidden_act",
    "attention_bias",
    "attention_dropout",
    "mlp_bias",
    "head_dim",
)


def to_llama_config(config: AlignLlamaConfig) -> LlamaConfig:
    """The transformers `LlamaConfig` describing the same network."""
    fields = {name: getattr(config, name) for name in _SHARED_CONFIG_FIELDS}
    return LlamaConfig(**fields, rope_parameters=copy.deepcopy(config.rope_parameters), num_labels=config.num_labels)


def from_llama_config(config: LlamaConfig) -> AlignLlamaConfig:
    """The `AlignLlamaConfig` describing the same network as a transformers `LlamaConfig`."""
    fields = config.to_dict()
    for transformers_own in ("model_type", "architectures", "transformers_version", "auto_map"):
        fields.pop(transformers_own, None)
    return AlignLlamaConfig(**fields)


def export_to_llama(
    model: AlignLlamaForCausalLM | AlignLlamaForSequenceClassification,
    save_directory: str | os.PathLike,
    tokenizer: Any = None,
) -> None:
    """Save `model` as a plain transformers Llama checkpoint (`model_type: llama`), weights unchanged, with its
    tokenizer: `tokenizer` if given, else the one saved beside the model's weights (the directory it was loaded
    from). A model built in code with no tokenizer given is exported without one, with a warning."""
    llama_class = LlamaForCausalLM if isinstance(model, AlignLlamaForCausalLM) else LlamaForSequenceClassification
    with torch.device("meta"):
        llama = llama_class(to_llama_config(model.config))
    llama.load_state_dict(model.state_dict(), assign=True, strict=True)
    llama.save_pretrained(save_directory)
    source = Path(model.name_or_path or "")
    if tokenizer is None and (source / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)  # align's own checkpoint
    if tokenizer is None:
        logger.warning("export_to_llama: no tokenizer given or found beside the model; %s has none", save_directory)
    else:
        tokenizer.save_pretrained(save_directory)


def convert_mha_to_gqa(model: AlignLlamaForCausalLM, num_key_value_heads: int) -> AlignLlamaForCausalLM:
    """Return a copy of `model` with `num_key_value_heads` kv heads, each the mean of its group's heads.

    Ainslie et al. 2023, §2.1: the k and v projections of the heads in a group are mean-pooled; query head i
    then reads kv head i // (num_attention_heads / num_key_value_heads). The result should be uptrained
    (about 5% of the original pretraining compute) to recover quality. `model` is left unchanged.
    """
    config = model.config
    if config.num_attention_heads % num_key_value_heads:
        raise ValueError(
            f"num_key_value_heads: must divide num_attention_heads={config.num_attention_heads}, "
            f"got {num_key_value_heads}"
        )
    if config.num_key_value_heads % num_key_value_heads:
        raise ValueError(
            f"num_key_value_heads: the model has {config.num_key_value_heads} kv heads; the new count must divide "
            f"it, got {num_key_value_heads}"
        )
    new_config = copy.deepcopy(config)
    new_config.num_key_value_heads = num_key_value_heads
    converted = type(model)(new_config).to(dtype=model.dtype, device=model.device)
    state = model.state_dict()
    head_dim, group = config.head_dim, config.num_key_value_heads // num_key_value_heads
    for name, weight in state.items():
        if name.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight")):
            # (n_kv * hd, C) -> (new_kv, group, hd, C) -> mean over the group
            state[name] = (
                weight.view(num_key_value_heads, group, head_dim, -1).mean(dim=1).reshape(-1, weight.shape[-1])
            )
    converted.load_state_dict(state, strict=True)
    return converted
