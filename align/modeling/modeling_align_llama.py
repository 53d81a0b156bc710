"""The Llama 2 decoder (docs/method.md §1) as transformers `PreTrainedModel`s.

One file you can hold in your head, in the spirit of nanoGPT's `model.py`, written the way transformers' own
`modeling_llama.py` is (parameter names, the `cache` argument, the attention interface, `create_causal_mask`), so
that Llama checkpoints load unchanged and tools that run transformers models run this one:

    AlignLlamaModel                      embed_tokens -> N x AlignLlamaDecoderLayer -> norm
    AlignLlamaForCausalLM                + lm_head (untied), generate() via GenerationMixin
    AlignLlamaForSequenceClassification  + score head read at the last non-padding token (reward / value model)

This file and `configuration_align_llama.py` import nothing but torch and transformers: `save_pretrained` copies
both into every checkpoint (with `auto_map` in its config.json), so a checkpoint loads with
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` where `align` is not installed.

- Attention goes through transformers' attention interface: `attn_implementation="sdpa"` (the default;
  `scaled_dot_product_attention`, grouped kv heads never materialised where the kernel allows), `"eager"`
  (returns attention weights with `output_attentions=True`), `"flash_attention_2"` / `"flex_attention"` where
  the machine has them. Masks come from `create_causal_mask` in the form each implementation needs, so packed
  sequences (no attention mask, `position_ids` restarting at 0 per sequence) stay apart.
- The KV cache (a transformers `DynamicCache`) holds `num_key_value_heads` heads: the 70B preset's 8 cut it 8x.
- With an `attention_mask` and no `position_ids`, positions count from the first real token of each row, so
  left-padded batches (generation, reward scoring, PPO) get the positions of unpadded rows.
- An argument the model does not know raises `TypeError` naming it instead of being swallowed by `**kwargs`.

transformers renamed the KV cache argument and output field from `past_key_values` to `cache` in 5.24; the
forwards take both names (the old one while the oldest supported transformers passes it) and return the cache
under the name the installed version uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import TransformersKwargs, can_return_tuple

from .configuration_align_llama import AlignLlamaConfig

# The output field that holds the KV cache in the installed transformers ("cache" from 5.24 on).
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"

# Keyword arguments transformers' trainers, `generate` and peft pass to a model's forward (`TransformersKwargs`:
# loss normalisation, output flags, flash-attention varlen metadata). Anything else is a caller's mistake.
_MODEL_KWARGS = frozenset(TransformersKwargs.__annotations__)


def check_kwargs(method: str, kwargs: dict) -> None:
    """Raise TypeError for a keyword argument `method` does not take, as Python would without `**kwargs`."""
    unknown = sorted(set(kwargs) - _MODEL_KWARGS)
    if unknown:
        raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}")


def one_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The KV cache passed under its current name (`cache`) or the name of transformers < 5.24."""
    if cache is not None and past_key_values is not None:
        raise ValueError("pass the KV cache as `cache` or as `past_key_values`, not both")
    return cache if cache is not None else past_key_values


class AlignLlamaRMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019), computed in float32 as Llama does."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(input_dtype)


class AlignLlamaRotaryEmbedding(nn.Module):
    """cos and sin of the rotary angles for integer positions, with transformers' RoPE types.

    The inverse frequencies come from transformers' own `ROPE_INIT_FUNCTIONS` (`linear`, `dynamic`, `yarn`,
    `longrope`, `llama3`; `default` is Su et al.'s), and `dynamic_rope_update` recomputes them for the dynamic and
    longrope types past the original context, exactly as `LlamaRotaryEmbedding` does: a Llama 3.x checkpoint keeps
    its long-context behaviour. The buffers are not saved; transformers' weight init refills them after a
    meta-device build (it recognises the `original_inv_freq` of a "RotaryEmbedding").
    """

    def __init__(self, config: AlignLlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.rope_type = config.rope_parameters["rope_type"]
        rope_init_fn = (
            self.compute_default_rope_parameters if self.rope_type == "default" else ROPE_INIT_FUNCTIONS[self.rope_type]
        )
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: AlignLlamaConfig, device=None, **kwargs) -> tuple[torch.Tensor, float]:
        """Su et al. 2021: inv_freq[i] = theta^(-2i / head_dim); no scaling of cos and sin."""
        dim = config.head_dim
        exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
        return 1.0 / (config.rope_parameters["rope_theta"] ** exponents), 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin, each (B or 1, T, head_dim) in x's dtype, for positions (B or 1, T)."""
        angles = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)  # (B, T, hd/2)
        angles = torch.cat((angles, angles), dim=-1)  # the "rotate half" layout of HF Llama checkpoints
        cos, sin = angles.cos() * self.attention_scaling, angles.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, T, hd) by the position angles (B or 1, T, hd)."""
    cos, sin = cos[:, None], sin[:, None]  # (B or 1, 1, T, hd)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def eager_attention_forward(
    module: AlignLlamaAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out: softmax(q k^T * scaling + mask) v, returning the weights too.

    query (B, nh, T, hd), key / value (B, n_kv, S, hd), attention_mask additive (B, 1, T, S) or None;
    returns the output (B, T, nh, hd) and the weights (B, nh, T, S), the signature of transformers' interface.
    """
    key = key.repeat_interleave(module.num_key_value_groups, dim=1)  # (B, nh, S, hd)
    value = value.repeat_interleave(module.num_key_value_groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, T, S)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class AlignLlamaAttention(nn.Module):
    """Causal self-attention with grouped-query heads (Ainslie et al. 2023) and RoPE on q and k."""

    def __init__(self, config: AlignLlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config  # the attention interface reads `config._attn_implementation`
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_kv_heads  # read by transformers' kernels for GQA
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.attention_dropout = config.attention_dropout
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hd)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hd)
        q, k = apply_rope(q, *position_embeddings), apply_rope(k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, n_kv, T_past + T, hd)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        y, weights = attention(
            self,
            q,
            k,
            v,
            attention_mask,
            scaling=self.scaling,
            dropout=self.attention_dropout if self.training else 0.0,
            **kwargs,
        )  # y (B, T, nh, hd)
        return self.o_proj(y.reshape(B, T, self.num_heads * self.head_dim)), weights


class AlignLlamaMLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): down(silu(gate(x)) * up(x)); `hidden_act` as in `LlamaConfig`."""

    def __init__(self, config: AlignLlamaConfig) -> None:
        super().__init__()
        bias = config.mlp_bias
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class AlignLlamaDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)). Returns (x, attention weights)."""

    def __init__(self, config: AlignLlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = AlignLlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = AlignLlamaAttention(config, layer_idx)
        self.post_attention_layernorm = AlignLlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = AlignLlamaMLP(config)

    def forward(self, x, position_embeddings, attention_mask=None, cache=None, **kwargs):
        attended, weights = self.self_attn(
            self.input_layernorm(x), position_embeddings, attention_mask, cache, **kwargs
        )
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), weights


class AlignLlamaPreTrainedModel(PreTrainedModel):
    """Shared plumbing: config class, weight init (transformers' default: normal(0, initializer_range)), flags."""

    config_class = AlignLlamaConfig
    config: AlignLlamaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["AlignLlamaDecoderLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    # The attention implementations this model runs through transformers' attention interface.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Old Llama checkpoints saved the RoPE buffer, which is recomputed from the config (not persistent) here.
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]


def default_position_ids(attention_mask: torch.Tensor | None, T: int, past_length: int, device) -> torch.Tensor:
    """Position ids (B or 1, T) of the T new tokens: counted from each row's first real token when a 2D
    `attention_mask` (B, past_length + T) marks left padding, else past_length, ..., past_length + T - 1."""
    if attention_mask is None or attention_mask.dim() != 2 or bool(attention_mask.all()):
        return torch.arange(past_length, past_length + T, device=device)[None]  # (1, T)
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]  # (B, T)


class AlignLlamaModel(AlignLlamaPreTrainedModel):
    """The decoder stack without a head: returns the final normalised hidden states (B, T, hidden_size)."""

    def __init__(self, config: AlignLlamaConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(AlignLlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = AlignLlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = AlignLlamaRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Hidden states (B, T, C); `cache` (or the former `past_key_values`) continues a KV cache.

        `**kwargs` takes transformers' model keywords only (`num_items_in_batch`, flash-attention's varlen
        `cu_seq_lens_*` / `max_length_*`, ...), passed on to the attention function.
        """
        check_kwargs(f"{type(self).__name__}.forward", kwargs)
        kwargs.pop("num_items_in_batch", None)  # for the loss, not the attention
        cache = one_cache(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("AlignLlamaModel.forward: pass exactly one of input_ids or inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T, _ = x.shape
        if output_attentions is None:
            output_attentions = getattr(self.config, "output_attentions", False)
        if output_attentions and self.config._attn_implementation != "eager":
            raise ValueError(
                f"output_attentions: attention weights need attn_implementation='eager', this model runs "
                f"{self.config._attn_implementation!r}"
            )

        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            use_cache = False  # a cache would be filled twice by the recomputed forward
        fresh_cache = use_cache and cache is None
        if fresh_cache:
            cache = DynamicCache(config=self.config)
        if not use_cache:
            cache = None
        past_length = cache.get_seq_length() if cache is not None else 0
        # A static cache counts its length in a tensor: a compiled decode step does not branch on it.
        # Dynamic NTK RoPE exists to run past the trained context; every other type stops at the configured one.
        if (
            not torch.compiler.is_compiling()
            and self.rotary_emb.rope_type != "dynamic"
            and past_length + T > self.config.max_position_embeddings
        ):
            raise ValueError(
                f"sequence length {past_length + T} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}"
            )

        # The mask in the form the attention implementation wants (None where plain causal attention is exact).
        # An empty new cache changes nothing in it, so it is left out: without a cache and an attention mask,
        # `position_ids` that restart at 0 mark packed sequences, which the mask then keeps apart. The cache is
        # passed by position: its keyword is `past_key_values` before transformers 5.24 and `cache` after.
        mask = create_causal_mask(self.config, x, attention_mask, None if fresh_cache else cache, position_ids)
        if position_ids is None:
            position_ids = default_position_ids(attention_mask, T, past_length, x.device)
        if position_ids.dim() == 1:
            position_ids = position_ids[None]
        # Shared positions stay (1, T): the cos/sin tables are broadcast, not stored once per row.
        position_embeddings = self.rotary_emb(x, position_ids)

        all_hidden_states = (x,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            x, weights = layer(x, position_embeddings, attention_mask=mask, cache=cache, **kwargs)
            if output_hidden_states:
                all_hidden_states += (x,)
            if output_attentions:
                all_attentions += (weights,)
        x = self.norm(x)
        return BaseModelOutputWithPast(
            last_hidden_state=x, hidden_states=all_hidden_states, attentions=all_attentions, **{CACHE_FIELD: cache}
        )


class AlignLlamaForCausalLM(AlignLlamaPreTrainedModel, GenerationMixin):
    """Decoder with an untied next-token head; the policy model of every stage."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # used only if tie_word_embeddings=True

    def __init__(self, config: AlignLlamaConfig) -> None:
        super().__init__(config)
        self.model = AlignLlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (B, T, vocab); with `labels` (B, T, -100 = ignored) also the mean next-token cross-entropy.

        `logits_to_keep=k` computes logits for the last k positions only (generation needs one).
        `num_items_in_batch` (from transformers' Trainer) is forwarded to the loss so gradient accumulation
        averages over tokens, not over micro-batches.
        """
        check_kwargs(f"{type(self).__name__}.forward", kwargs)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=one_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)  # (B, T, vocab)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                vocab_size=self.config.vocab_size,
                num_items_in_batch=kwargs.get("num_items_in_batch"),
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )


def last_token_index(
    attention_mask: torch.Tensor | None, input_ids: torch.Tensor | None, pad_token_id: int | None, length: int
) -> torch.Tensor | int:
    """Index of the last real token of each row (B,), for left or right padding.

    The attention mask is the reliable signal (Llama tokenizers often pad with `</s>`, which also ends every
    answer); the pad id is the fallback, as in transformers' `LlamaForSequenceClassification`.
    """
    if attention_mask is not None:
        marks = attention_mask.to(torch.long)
    elif input_ids is not None and pad_token_id is not None:
        marks = (input_ids != pad_token_id).to(torch.long)
    else:
        return length - 1
    index = torch.arange(length, device=marks.device)
    return (index * marks).argmax(-1)


class AlignLlamaForSequenceClassification(AlignLlamaPreTrainedModel):
    """Decoder with a linear head on the last non-padding token: the reward model and the PPO value model.

    With `num_labels=1` (the reward models of docs/method.md §5), `logits` is (B, 1): the scalar reward.
    """

    def __init__(self, config: AlignLlamaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = AlignLlamaModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        margin: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        """Scores (B, num_labels) read at each row's last real token; optional loss against `labels`.

        `margin` is accepted and ignored: TRL's `RewardTrainer` passes its batch's margin column to the model
        along with the inputs and applies it in its own loss.
        """
        check_kwargs(f"{type(self).__name__}.forward", kwargs)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=one_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state  # (B, T, C)
        B, T, _ = hidden.shape
        last = last_token_index(attention_mask, input_ids, self.config.pad_token_id, T)
        logits = self.score(hidden[torch.arange(B, device=hidden.device), last])  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
