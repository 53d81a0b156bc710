"""Chunked log-probabilities (align.logprobs) equal the whole-logits ones, values and gradients."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from align.generation import sample_tokens, sampled_logprobs
from align.logprobs import token_logprobs_and_entropy


def tiny_llama(vocab_size: int = 3000, **overrides) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128, **overrides)  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("chunk_tokens", [1, 7, 64])
def test_chunked_logprobs_and_gradients_equal_the_whole_logits(chunk_tokens):
    model = tiny_llama()
    ids = torch.randint(0, 3000, (3, 20))
    temperature = 0.7

    def run(chunk):
        model.zero_grad()
        hidden = model.model(input_ids=ids).last_hidden_state
        logprobs, entropy = token_logprobs_and_entropy(model, hidden[:, :-1], ids[:, 1:], temperature, chunk)
        logprobs.sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        return logprobs.detach(), entropy, grads

    whole, whole_entropy, whole_grads = run(0)
    logits = model(input_ids=ids).logits[:, :-1].float() / temperature
    log_distribution = torch.log_softmax(logits, -1)
    torch.testing.assert_close(whole, log_distribution.gather(-1, ids[:, 1:, None])[..., 0])
    torch.testing.assert_close(whole_entropy, -(log_distribution.exp() * log_distribution).sum(-1))
    chunked, chunked_entropy, chunked_grads = run(chunk_tokens)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-6)  # fp32 rounding of logits ~8
    torch.testing.assert_close(chunked_entropy, whole_entropy, atol=1e-5, rtol=1e-6)
    assert not chunked_entropy.requires_grad
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, atol=1e-5 * grad.abs().max().item(), rtol=1e-4, msg=name)


def test_tied_embeddings_and_logit_softcapping_are_the_models_own():
    """The LM head is the model's (a tied one included) and Gemma 2's final soft-capping is applied."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=3.0)  # fmt: skip
    torch.manual_seed(0)
    gemma = Gemma2ForCausalLM(config).eval()
    ids = torch.randint(0, 500, (2, 9))
    with torch.no_grad():
        hidden = gemma.model(input_ids=ids).last_hidden_state
        logprobs, _ = token_logprobs_and_entropy(gemma, hidden[:, :-1], ids[:, 1:], 1.0, chunk_tokens=4)
        expected = torch.log_softmax(gemma(input_ids=ids).logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])
    torch.testing.assert_close(logprobs, expected[..., 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("decode", ["dynamic", "generate"])
def test_generation_returns_the_sampled_tokens_logprobs_without_the_logits(decode):
    """`output_logprobs` gives what the stacked logits would (PPO no longer holds rows x T x vocab)."""
    model = tiny_llama(vocab_size=300).eval()
    ids = torch.randint(3, 300, (3, 6))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded row
    common = dict(pad_token_id=0, eos_token_id=2, max_new_tokens=8, temperature=0.8, row_seeds=[1, 2, 3], decode=decode)
    tokens, logits = sample_tokens(model, ids, mask, output_logits=True, **common)
    same_tokens, logprobs = sample_tokens(model, ids, mask, output_logprobs=True, **common)
    assert torch.equal(tokens, same_tokens)
    live = tokens != 0
    torch.testing.assert_close(logprobs[live], sampled_logprobs(logits, tokens, 0.8)[live], atol=1e-5, rtol=0)
