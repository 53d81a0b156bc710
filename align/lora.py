"""LoRA settings shared by every trainable stage (SFT, reward models, PPO): one `lora:` mapping in the config.

lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: [q_proj, v_proj]}    # YAML
--lora '{"r": 8}'                                                              # command line (JSON)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel

from .checkpoint import save_pretrained_atomic

LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_lora_setting(value: dict | str | None) -> dict[str, Any] | None:
    """The `lora:` config value as a checked mapping (None: LoRA off); ValueError naming the bad key."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError:
            raise ValueError(f"lora: expected a JSON mapping like '{{\"r\": 8}}', got {value!r}") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"lora: expected a mapping with keys {sorted(LORA_KEYS)}, got {value!r}")
    unknown = set(value) - LORA_KEYS
    if unknown:
        raise ValueError(f"lora: unknown keys {sorted(unknown)}, allowed: {sorted(LORA_KEYS)}")
    for key, test, expected in (
        ("r", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
        ("alpha", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a positive number"),
        ("dropout", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "in [0, 1)"),
        ("target_modules", lambda v: isinstance(v, list) and v and all(isinstance(m, str) for m in v),
         "a list of module names"),
    ):  # fmt: skip
        if key in value and not test(value[key]):
            raise ValueError(f"lora: {key}: expected {expected}, got {value[key]!r}")
    return value


def base_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (adapters in its layers), or `model` itself without one."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def lora_config(settings: dict[str, Any], task_type: str = "CAUSAL_LM") -> LoraConfig:
    """peft's `LoraConfig` from the `lora:` mapping (defaults: r 16, alpha 32, dropout 0.05, all projections).

    `task_type` "SEQ_CLS" keeps the reward model's fresh scalar head trainable next to the adapters."""
    return LoraConfig(
        r=int(settings.get("r", 16)),
        lora_alpha=int(settings.get("alpha", 32)),
        lora_dropout=float(settings.get("dropout", 0.05)),
        target_modules=list(settings.get("target_modules", DEFAULT_LORA_TARGETS)),
        task_type=task_type,
        **({"modules_to_save": ["score"]} if task_type == "SEQ_CLS" else {}),
    )


def adapter_finalizer(tokenizer: Any, adapter_dir: Path, merge: bool = True) -> Callable[[Any], Any]:
    """`run_trainer`'s `finalize` for a LoRA run: save the adapters alone to `adapter_dir` (to push or share),
    then return the model with the adapters merged (a full checkpoint) or, with `merge=False`, as is."""

    def finalize(trained: Any) -> Any:
        if not isinstance(trained, PeftModel):
            return trained
        save_pretrained_atomic(trained, tokenizer, adapter_dir)
        return trained.merge_and_unload() if merge else trained

    return finalize


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path, base: str | Path | None = None) -> Path:
    """Merge a saved LoRA adapter into its base model and save the full model (and tokenizer) atomically.

    The base is `base`, else the adapter's own `base_model_name_or_path`; the model class is chosen from the
    adapter's task type (causal LM or reward model)."""
    from peft import PeftConfig

    from .modeling import load_causal_lm, load_sequence_classifier

    adapter_dir = Path(adapter_dir)
    settings = PeftConfig.from_pretrained(str(adapter_dir))
    base = Path(base or settings.base_model_name_or_path)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"base model of {adapter_dir}: no checkpoint at {base}; pass base=...")
    if settings.task_type == "SEQ_CLS":
        base_model_ = load_sequence_classifier(base, f"base model of {adapter_dir}")
    else:
        base_model_ = load_causal_lm(base, f"base model of {adapter_dir}")
    model = PeftModel.from_pretrained(base_model_, str(adapter_dir)).merge_and_unload()
    tokenizer = None
    if (adapter_dir / "tokenizer_config.json").is_file() or (base / "tokenizer_config.json").is_file():
        from .data import load_tokenizer

        tokenizer = load_tokenizer(adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base)
    return save_pretrained_atomic(model, tokenizer, output_dir)
