"""Chunked log-probabilities (align.logprobs) equal the whole-logits ones, values and gradients; an answer's mean
log-probability after its prompt (`answer_logprobs`) is that of the answer alone, for the tests' model and a
Llama 3-shaped user checkpoint."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from align.data import load_tokenizer
from align.generation import chat_prompt_texts, sample_tokens, sampled_logprobs
from align.logprobs import answer_logprobs, token_logprobs_and_entropy
from align.modeling.loading import load_causal_lm


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


PROMPTS = [
    [{"role": "user", "content": "What is 2 plus 3?"}],
    [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "Where does Mespin live?"}],
    [{"role": "user", "content": "Name three fruits."}],
]
ANSWERS = ["2 plus 3 is 5.", "Mespin lives in Tesk, a small town by the river.", "Plums"]


def one_answer_at_a_time(model, tokenizer, prompt, answer) -> float:
    """The reference: one unpadded forward, each answer token's log-softmax read position by position."""
    end = tokenizer.eos_token_id
    prompt_ids = tokenizer(chat_prompt_texts(tokenizer, [prompt])[0], add_special_tokens=False).input_ids
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids + [end]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0]
    steps = [torch.log_softmax(logits[len(prompt_ids) + i - 1].float(), -1)[t] for i, t in enumerate(answer_ids)]
    return torch.stack(steps).mean().item()


@pytest.mark.parametrize("family", ["tests", "llama3"])
def test_an_answers_mean_log_probability_is_that_of_the_answer_alone_after_its_prompt(family, chat_model):
    """Right-padded batches (the llama3 checkpoint has no pad token, tied embeddings and an eos list) give each
    answer's value from a forward of its own dialogue alone, whatever the batch size and the chunking."""
    if family == "tests":
        model, tokenizer = load_causal_lm(chat_model, "model").eval(), load_tokenizer(chat_model)
    else:
        from user_project import family_model, texts

        model, tokenizer = family_model(family, texts())
        model.eval()
        assert tokenizer.pad_token_id is None
    batched = answer_logprobs(model, tokenizer, PROMPTS, ANSWERS, batch_size=3)
    expected = [one_answer_at_a_time(model, tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS)]
    assert batched.tolist() == pytest.approx(expected, abs=1e-4)
    one_by_one = answer_logprobs(model, tokenizer, PROMPTS, ANSWERS, batch_size=1, chunk_tokens=3)
    assert one_by_one.tolist() == pytest.approx(expected, abs=1e-4)
