"""Shared test set-up: offline Hugging Face, deterministic CPU torch, tiny models built in code."""

import os

# Without this a local path that does not exist is taken for a Hub repo id and retried for about a minute.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import align  # noqa: E402,F401  (registers the Auto classes)
from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM  # noqa: E402


@pytest.fixture
def tiny_config() -> AlignLlamaConfig:
    """The `tiny` preset with a small vocabulary: 2 layers, 4 query heads, 2 kv heads."""
    return AlignLlamaConfig.from_preset("tiny", vocab_size=256, max_position_embeddings=128)


@pytest.fixture
def tiny_model(tiny_config) -> AlignLlamaForCausalLM:
    torch.manual_seed(0)
    return AlignLlamaForCausalLM(tiny_config).eval()
