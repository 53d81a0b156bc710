"""Loading the user's checkpoints as they are: any transformers decoder as the policy, any sequence classifier
as a reward model, and the few parts of them the stages reach into.

Every stage loads through `load_causal_lm` / `load_sequence_classifier`, i.e. transformers' Auto classes: a
Llama 3.x, Qwen2/Qwen3, Mistral or Gemma checkpoint stays that architecture through SFT, the reward models,
rejection sampling, PPO and the rounds, and the stages write it back in the same architecture. `align_llama`
checkpoints load into align's classes (registered with the Auto classes on import). `as_align_llama=True` is the
one way to move a Llama checkpoint into align's model (for the paper's presets and GQA conversion).

Nothing from a model folder runs unless the user asks: every load passes `trust_remote_code` explicitly (so
transformers never prompts "Do you wish to run the custom code?"), False unless the command was given
`--trust_remote_code true` (`allow_remote_code`) or the caller passes `trust_remote_code=True`. align's own
checkpoints carry an `auto_map` too, but load through align's registered classes without running their copy.
A checkpoint whose architecture transformers does not ship is then refused with one line that says so.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, PretrainedConfig

from .configuration_align_llama import AlignLlamaConfig


class UnsupportedModelError(ValueError):
    """A checkpoint the stage cannot use as asked (message: one line naming the folder and what is missing)."""


_REMOTE_CODE_ALLOWED = False


def allow_remote_code(allowed: bool) -> None:
    """Let (or stop) every later load in this process run a model folder's own code (`auto_map`): what the
    commands' `--trust_remote_code true` does. Only for folders whose code the user has read and trusts."""
    global _REMOTE_CODE_ALLOWED
    _REMOTE_CODE_ALLOWED = bool(allowed)


def remote_code_allowed(trust_remote_code: bool | None = None) -> bool:
    """`trust_remote_code` as given, or the process's setting (`allow_remote_code`) when None."""
    return _REMOTE_CODE_ALLOWED if trust_remote_code is None else bool(trust_remote_code)


def load_model_config(
    path: str | os.PathLike, what: str = "model", trust_remote_code: bool | None = None
) -> PretrainedConfig:
    """The checkpoint's transformers config; `UnsupportedModelError` naming `what` when transformers does not know
    its `model_type` (or would need the folder's own code, which is not allowed: `remote_code_allowed`)."""
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=remote_code_allowed(trust_remote_code))
    except ValueError as error:
        text = str(error)
        if "trust_remote_code" in text:
            raise UnsupportedModelError(
                f"{what}: {path} needs the code in its folder (auto_map) to load, and align runs a model folder's "
                "code only when asked: read that code, then add --trust_remote_code true if you trust it"
            ) from None
        raise UnsupportedModelError(f"{what}: {path}: {text.splitlines()[0]}") from None


def _checked_class(config: PretrainedConfig, auto_class: type, what: str, path: Any, kind: str) -> None:
    if type(config) not in auto_class._model_mapping and not getattr(config, "auto_map", None):
        raise UnsupportedModelError(
            f"{what}: {path} is a {config.model_type!r} model, which transformers has no {kind} class for; "
            f"expected a decoder-only language model (Llama, Qwen2/Qwen3, Mistral, Gemma, ...)"
        )


def load_causal_lm(
    path: str | os.PathLike,
    what: str = "model",
    *,
    as_align_llama: bool = False,
    trust_remote_code: bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The checkpoint as transformers' `AutoModelForCausalLM` loads it (its own architecture), or as align's
    `AlignLlamaForCausalLM` with `as_align_llama=True` (Llama-family configs only)."""
    trust_remote_code = remote_code_allowed(trust_remote_code)
    config = load_model_config(path, what, trust_remote_code)
    if as_align_llama:
        from .conversion import from_llama_config
        from .modeling_align_llama import AlignLlamaForCausalLM

        require_llama_family(config, what, path)
        if not isinstance(config, AlignLlamaConfig):
            config = from_llama_config(config)  # the same network, said in align's config (no type-mismatch warning)
        return _from_pretrained(AlignLlamaForCausalLM, path, what, config=config, **kwargs)
    _checked_class(config, AutoModelForCausalLM, what, path, "causal-LM")
    return _from_pretrained(
        AutoModelForCausalLM, path, what, config=config, trust_remote_code=trust_remote_code, **kwargs
    )


def load_sequence_classifier(
    path: str | os.PathLike, what: str = "reward model", *, num_labels: int | None = 1,
    trust_remote_code: bool | None = None, **kwargs: Any,
) -> nn.Module:  # fmt: skip
    """The checkpoint as `AutoModelForSequenceClassification` with `num_labels` outputs (None: as saved): a reward
    model as it was saved, or a fresh scalar head on a causal LM's decoder (the paper's reward-model init,
    docs/method.md §5)."""
    trust_remote_code = remote_code_allowed(trust_remote_code)
    config = load_model_config(path, what, trust_remote_code)
    _checked_class(config, AutoModelForSequenceClassification, what, path, "sequence-classification")
    if num_labels is not None:
        config.num_labels = num_labels
    return _from_pretrained(
        AutoModelForSequenceClassification, path, what, config=config, trust_remote_code=trust_remote_code, **kwargs
    )


def _from_pretrained(model_class: Any, path: Any, what: str, **kwargs: Any) -> nn.Module:
    """`model_class.from_pretrained(path, **kwargs)`, after checking that the folder's weights have the shapes its
    config.json gives them: an edited config or weights of another model is `UnsupportedModelError` naming the
    first such weight, instead of transformers' multi-line report and traceback."""
    config = kwargs["config"]
    quantized = getattr(config, "quantization_config", None) or kwargs.get("quantization_config")
    # A quantized checkpoint stores packed weights of other shapes: transformers' quantizer checks those.
    mismatch = (
        "" if quantized else _first_shape_mismatch(model_class, path, config, kwargs.get("trust_remote_code", False))
    )
    if mismatch:
        raise UnsupportedModelError(f"{what}: {path}: {mismatch}; the config does not belong to these weights")
    return model_class.from_pretrained(path, **kwargs)


def _first_shape_mismatch(model_class: Any, path: Any, config: PretrainedConfig, trust_remote_code: bool) -> str:
    """Which weight of the folder (read from the safetensors headers) has another shape than the model `config`
    describes, or "" (also when the folder cannot be read this way: loading then says what is wrong)."""
    from pathlib import Path

    from safetensors import safe_open

    try:
        with torch.device("meta"):
            if model_class.__name__.startswith("Auto"):
                model = model_class.from_config(config, trust_remote_code=trust_remote_code)
            else:
                model = model_class._from_config(config)
            expected = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
        for file in sorted(Path(path).glob("*.safetensors")):
            with safe_open(str(file), "pt") as weights:
                for name in weights.keys():
                    shape = list(weights.get_slice(name).get_shape())
                    match = next(
                        (k for k in expected if k == name or k.endswith("." + name) or name.endswith("." + k)), None
                    )  # fmt: skip  (a base model's names lack or add the architecture's prefix)
                    if match is not None and expected[match] != shape:
                        return f"{file.name} holds {name} of shape {shape}, but config.json gives it {expected[match]}"
    except Exception:  # noqa: BLE001  (a check before loading; never the reason a load fails)
        return ""
    return ""


def require_llama_family(config: PretrainedConfig, what: str, path: Any) -> None:
    """`UnsupportedModelError` unless `config` is a Llama or align_llama config (what align's own model holds)."""
    if config.model_type not in ("llama", AlignLlamaConfig.model_type):
        raise UnsupportedModelError(
            f"{what}: {path} is a {config.model_type!r} model, already loadable by transformers' Auto classes; "
            f"align's own model (align_llama) holds Llama checkpoints only"
        )


# ---- the parts of a transformers decoder the stages use ------------------------------------------------------


def decoder_trunk(model: nn.Module) -> nn.Module:
    """The decoder stack without its head (`model.model` in Llama, Qwen2, Mistral, Gemma and align_llama)."""
    trunk = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if not isinstance(trunk, nn.Module):
        raise UnsupportedModelError(
            f"{type(model).__name__} has no decoder trunk under `{getattr(model, 'base_model_prefix', 'model')}`"
        )
    return trunk


def final_norm(model: nn.Module) -> nn.Module:
    """The decoder's last normalisation layer (its output is the hidden state the heads read)."""
    norm = getattr(decoder_trunk(model), "norm", None)
    if not isinstance(norm, nn.Module):
        raise UnsupportedModelError(
            f"{type(model).__name__}: its decoder has no final `norm` layer to read values from"
        )
    return norm


def logits_from_hidden(causal_lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head applied to final hidden states, as the model's own forward does it (Gemma 2's final logit
    soft-capping included)."""
    logits = causal_lm.get_output_embeddings()(hidden)
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def score_head(model: nn.Module) -> nn.Module:
    """The linear head of a sequence classifier (`score` in transformers' decoder classifiers and align_llama)."""
    head = getattr(model, "score", None)
    if not isinstance(head, nn.Module):
        raise UnsupportedModelError(f"{type(model).__name__}: a value model needs a linear `score` head")
    return head
