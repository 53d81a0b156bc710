"""`AlignLlamaConfig`: the Llama 2 architecture as a transformers config, with named presets.

Field names are those of transformers' `LlamaConfig` so that configs and checkpoints move between the two
unchanged. Our own validation runs before transformers' strict-dataclass validation, so a bad value gives a
`ValueError` that names the field and what it accepts (transformers would raise its own exception type).

Llama 2 uses plain RoPE; Llama 3.x checkpoints carry a scaled one. `rope_parameters` is transformers' dict
(`rope_type`, `rope_theta`, the scaling fields) and the model computes its frequencies with transformers' own
`ROPE_INIT_FUNCTIONS`, so every RoPE type transformers' Llama knows (`default`, `linear`, `dynamic`, `yarn`,
`longrope`, `llama3`) gives the same network as `LlamaForCausalLM`. An old config's top-level `rope_theta` or
`rope_scaling` is folded into `rope_parameters` by transformers on load. `attention_bias`, `mlp_bias`,
`hidden_act` and an explicit `head_dim` are those of `LlamaConfig` too.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from transformers import PretrainedConfig


def llama_intermediate_size(hidden_size: int, multiple_of: int = 256) -> int:
    """The SwiGLU width of Meta's reference code: int(2/3 * 4 * hidden_size) rounded up to `multiple_of`."""
    width = int(2 * 4 * hidden_size / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


# Model sizes are data (litgpt's `config.py` style). Source of the paper sizes: Touvron et al. 2023, Table 1 and
# the released params.json files; see docs/method.md §1. The CPU presets are ours.
# fmt: off
PRESETS: dict[str, dict[str, int]] = {
    # Paper sizes. vocab 32,000, context 4096, head_dim 128.
    "7b": dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, num_hidden_layers=32,
               intermediate_size=11008, vocab_size=32000),
    "13b": dict(hidden_size=5120, num_attention_heads=40, num_key_value_heads=40, num_hidden_layers=40,
                intermediate_size=13824, vocab_size=32000),
    "34b": dict(hidden_size=8192, num_attention_heads=64, num_key_value_heads=8, num_hidden_layers=48,
                intermediate_size=22016, vocab_size=32000),
    "70b": dict(hidden_size=8192, num_attention_heads=64, num_key_value_heads=8, num_hidden_layers=80,
                intermediate_size=28672, vocab_size=32000),
    # CPU presets: same architecture, GQA on so the grouped path is always exercised. intermediate_size follows
    # Meta's rule (2/3 of 4 x hidden, rounded up to `multiple_of`) with multiple_of 32, the block of bitsandbytes'
    # 4-bit CPU kernels; the vocabulary is that of the demo tokenizer shipped in `data/tokenizer` (1,146 tokens),
    # so no id decodes to nothing. Override vocab_size (and pad_token_id) for another tokenizer.
    "tiny": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                 intermediate_size=llama_intermediate_size(64, multiple_of=32), vocab_size=1146),
    "small": dict(hidden_size=256, num_attention_heads=8, num_key_value_heads=4, num_hidden_layers=6,
                  intermediate_size=llama_intermediate_size(256, multiple_of=32), vocab_size=1146),
}
# fmt: on

# The Hugging Face convention for custom code: auto class -> "<file in the checkpoint>.<class>".
AUTO_MAP = MappingProxyType(
    {
        "AutoConfig": "configuration_align_llama.AlignLlamaConfig",
        "AutoModel": "modeling_align_llama.AlignLlamaModel",
        "AutoModelForCausalLM": "modeling_align_llama.AlignLlamaForCausalLM",
        "AutoModelForSequenceClassification": "modeling_align_llama.AlignLlamaForSequenceClassification",
    }
)

_POSITIVE_INT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
)


class AlignLlamaConfig(PretrainedConfig):
    """Configuration of a Llama-2-style decoder (docs/method.md §1).

    Defaults are the 7B model. Use `AlignLlamaConfig.from_preset("70b")` for the paper sizes or `"tiny"` /
    `"small"` for CPU work; keyword overrides apply on top of a preset.
    """

    model_type = "align_llama"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 4096
    rope_parameters: dict | None = None  # transformers' form: {"rope_type": "default", "rope_theta": 10000.0, ...}
    rms_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    head_dim: int | None = None  # None: hidden_size // num_attention_heads

    def __post_init__(self, **kwargs: Any) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and isinstance(self.num_attention_heads, int) and self.num_attention_heads > 0:
            if isinstance(self.hidden_size, int) and self.hidden_size % self.num_attention_heads:
                allowed = [h for h in range(1, self.hidden_size + 1) if self.hidden_size % h == 0]
                raise ValueError(
                    f"num_attention_heads: must divide hidden_size={self.hidden_size} (or give head_dim); "
                    f"got {self.num_attention_heads}, allowed: {allowed}"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        for ignored in ("pretraining_tp",):  # Meta's tensor-parallel slicing of the old Llama code; no effect here
            kwargs.pop(ignored, None)
        # Where the classes live in a checkpoint: `save_pretrained` copies this file and the modeling file next to
        # config.json, so `trust_remote_code=True` loads the model without `align` installed. TRL's online
        # trainers also read it to pick `AutoModelForCausalLM` for an architecture transformers does not ship.
        kwargs["auto_map"] = dict(AUTO_MAP)
        self.validate_shapes()
        # transformers folds `rope_theta` / `rope_scaling` into `rope_parameters` here (and fills the defaults)
        super().__post_init__(**kwargs)
        self.validate_rope_parameters()

    @property
    def rope_theta(self) -> float:
        """The RoPE base (`rope_parameters["rope_theta"]`; transformers' default before it is set)."""
        return float((self.rope_parameters or {}).get("rope_theta", self.default_theta))

    def validate_rope_parameters(self) -> None:
        """Raise `ValueError` naming the field when `rope_parameters` is not a RoPE transformers can build."""
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        rope = self.rope_parameters or {}
        rope_type = rope.get("rope_type", "default")
        if rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS:
            allowed = ["default", *sorted(ROPE_INIT_FUNCTIONS)]
            raise ValueError(f"rope_parameters.rope_type: unknown RoPE type {rope_type!r}, allowed: {allowed}")
        theta = rope.get("rope_theta")
        if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not theta > 0:
            raise ValueError(f"rope_parameters.rope_theta: must be a positive number, got {theta!r}")
        if rope_type != "default":
            try:
                self.validate_rope()  # transformers' checks of the type's own fields (factor, low_freq_factor, ...)
            except (KeyError, TypeError) as error:
                raise ValueError(f"rope_parameters: {error.args[0] if error.args else error}") from None

    def validate_shapes(self) -> None:
        """Raise `ValueError` naming the first invalid field and the values it accepts."""
        for name in _POSITIVE_INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if not isinstance(self.head_dim, int) or isinstance(self.head_dim, bool) or self.head_dim <= 0:
            raise ValueError(f"head_dim: must be a positive integer, got {self.head_dim!r}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim: RoPE needs an even head dim, got {self.head_dim}")
        if self.num_attention_heads % self.num_key_value_heads:
            allowed = [k for k in range(1, self.num_attention_heads + 1) if self.num_attention_heads % k == 0]
            raise ValueError(
                f"num_key_value_heads: must divide num_attention_heads={self.num_attention_heads}; "
                f"got {self.num_key_value_heads}, allowed: {allowed}"
            )
        from transformers.activations import ACT2FN

        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act: unknown activation {self.hidden_act!r}, allowed: {sorted(ACT2FN)}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"rms_norm_eps: must be positive, got {self.rms_norm_eps!r}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> AlignLlamaConfig:
        """Build the config of a named size (`PRESETS`), with keyword overrides on top."""
        if name not in PRESETS:
            raise ValueError(f"preset: unknown preset {name!r}, allowed: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})
