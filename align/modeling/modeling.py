"""The Llama 2 decoder (PIPELINE.md §1) as transformers `PreTrainedModel`s.

One file you can hold in your head, in the spirit of nanoGPT's `model.py`, with the parameter names of
transformers' `modeling_llama.py` so that Llama checkpoints load unchanged:

    AlignLlamaModel                      embed_tokens -> N x AlignLlamaDecoderLayer -> norm
    AlignLlamaForCausalLM                + lm_head (untied), generate() via GenerationMixin
    AlignLlamaForSequenceClassification  + score head read at the last non-padding token (reward / value model)

Differences from transformers' Llama that users can rely on:
- attention always goes through `scaled_dot_product_attention` with `enable_gqa`, so grouped kv heads are never
  materialised as repeated copies, and the KV cache (a transformers `DynamicCache`) holds `num_key_value_heads`;
- with an `attention_mask` and no `position_ids`, positions are counted from the first real token of each row,
  so left-padded batches (generation, reward scoring, PPO) get the same positions as unpadded ones;
- a padded query position attends to itself, so its output is finite (it is garbage and must be ignored, as in
  every padded model) and no NaN leaks into gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)

from .configuration import AlignLlamaConfig


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


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos and sin of the rotary angles, each (B or 1, T, head_dim), for integer positions (B or 1, T).

    Computed on the fly (a few hundred flops per position) rather than kept in a buffer: nothing to
    re-initialise when transformers builds the model on the meta device and loads weights into it.
    """
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float) / head_dim)
    )
    angles = position_ids[..., None].float() * inv_freq  # (B, T, hd/2)
    angles = torch.cat((angles, angles), dim=-1)  # (B, T, hd): the "rotate half" layout of HF Llama checkpoints
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, T, hd) by the position angles (B or 1, T, hd)."""
    cos, sin = cos[:, None], sin[:, None]  # (B or 1, 1, T, hd)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class AlignLlamaAttention(nn.Module):
    """Causal self-attention with grouped-query heads (Ainslie et al. 2023) and RoPE on q and k."""

    def __init__(self, config: AlignLlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        past_key_values: Cache | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hd)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hd)
        q, k = apply_rope(q, *cos_sin), apply_rope(k, *cos_sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)  # (B, n_kv, T_past + T, hd)
        # Without a mask, causal attention is only right when queries and keys start together (no cache, or a
        # single new token that may see everything); `_attention_mask` returns a mask in every other case.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and T > 1, enable_gqa=self.num_kv_heads != self.num_heads
        )  # (B, nh, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class AlignLlamaMLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: AlignLlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class AlignLlamaDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: AlignLlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = AlignLlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = AlignLlamaAttention(config, layer_idx)
        self.post_attention_layernorm = AlignLlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = AlignLlamaMLP(config)

    def forward(self, x, cos_sin, mask=None, past_key_values=None):
        x = x + self.self_attn(self.input_layernorm(x), cos_sin, mask, past_key_values)
        return x + self.mlp(self.post_attention_layernorm(x))


class AlignLlamaPreTrainedModel(PreTrainedModel):
    """Shared plumbing: config class, weight init (transformers' default: normal(0, initializer_range)), flags."""

    config_class = AlignLlamaConfig
    config: AlignLlamaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["AlignLlamaDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    # Old Llama checkpoints carry a RoPE buffer we compute on the fly instead.
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]


def _positions_and_mask(
    attention_mask: torch.Tensor | None, T: int, past_length: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Default position ids (B or 1, T) and the SDPA boolean mask (B, 1, T, past_length + T) or None.

    `attention_mask` (B, past_length + T) marks real tokens with 1. None is returned for the mask when plain
    causal attention is exact, which lets SDPA take its fastest kernel.
    """
    if attention_mask is None or bool(attention_mask.all()):
        positions = torch.arange(past_length, past_length + T, device=device)[None]  # (1, T)
        if past_length == 0 or T == 1:
            return positions, None
        padding = None
    else:
        attention_mask = attention_mask.bool()
        # Count positions from each row's first real token, as if the row had no left padding.
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]  # (B, T)
        padding = attention_mask[:, None, None, :]  # (B, 1, 1, S)
    S = past_length + T
    query_index = torch.arange(past_length, S, device=device)[:, None]  # (T, 1)
    key_index = torch.arange(S, device=device)[None, :]  # (1, S)
    mask = (key_index <= query_index)[None, None]  # (1, 1, T, S)
    if padding is not None:
        # A query always sees itself, so rows of padding are not all -inf (which would give NaN).
        mask = mask & (padding | (key_index == query_index))  # (B, 1, T, S)
    return positions, mask


class AlignLlamaModel(AlignLlamaPreTrainedModel):
    """The decoder stack without a head: returns the final normalised hidden states (B, T, hidden_size)."""

    def __init__(self, config: AlignLlamaConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(AlignLlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = AlignLlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("AlignLlamaModel.forward: pass exactly one of input_ids or inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T, _ = x.shape
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(f"attention_mask: expected a 2D (batch, length) 0/1 tensor, got {attention_mask.dim()}D")

        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False  # a cache would be filled twice by the recomputed forward
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if not use_cache:
            past_key_values = None
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past_length + T > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {past_length + T} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}"
            )

        default_positions, mask = _positions_and_mask(attention_mask, T, past_length, x.device)
        if position_ids is None:
            position_ids = default_positions
        if position_ids.dim() == 1:
            position_ids = position_ids[None]
        # Shared positions stay (1, T): the cos/sin tables are broadcast, not stored once per row.
        cos_sin = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)

        all_hidden_states = (x,) if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, cos_sin, mask, past_key_values)
            if output_hidden_states:
                all_hidden_states += (x,)
        x = self.norm(x)
        return BaseModelOutputWithPast(
            last_hidden_state=x, past_key_values=past_key_values, hidden_states=all_hidden_states
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

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (B, T, vocab); with `labels` (B, T, -100 = ignored) also the mean next-token cross-entropy.

        `logits_to_keep=k` computes logits for the last k positions only (generation needs one).
        `num_items_in_batch` (from transformers' Trainer) is forwarded to the loss so gradient accumulation
        averages over tokens, not over micro-batches.
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
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
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, hidden_states=outputs.hidden_states
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

    With `num_labels=1` (the reward models of PIPELINE.md §5), `logits` is (B, 1): the scalar reward.
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

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        """Scores (B, num_labels) read at each row's last real token; optional loss against `labels`."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state  # (B, T, C)
        B, T, _ = hidden.shape
        last = last_token_index(attention_mask, input_ids, self.config.pad_token_id, T)
        logits = self.score(hidden[torch.arange(B, device=hidden.device), last])  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, hidden_states=outputs.hidden_states
        )
