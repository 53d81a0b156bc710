"""Shared sampling: rows seeded one by one sample from the model's distribution and do not depend on their batch."""

import pytest
import torch
from transformers import LlamaForCausalLM

from align.data import load_tokenizer
from align.generation import RowSeededSampling, complete, sample_tokens
from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM, to_llama_config
from align.ppo import response_mask


def test_row_seeded_sampling_draws_from_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    draws = torch.tensor([RowSeededSampling([seed])(None, logits).argmax().item() for seed in range(4000)])
    frequencies = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(frequencies, logits.softmax(-1)[0], atol=0.025, rtol=0)


def test_a_seeded_row_samples_the_same_answer_in_any_batch():
    torch.manual_seed(0)
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=64, max_position_embeddings=64)
    model = AlignLlamaForCausalLM(config).eval()
    input_ids = torch.randint(3, 64, (4, 6))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :2] = 0  # a left-padded prompt

    def sample(rows, seeds, **kwargs):
        return sample_tokens(
            model, input_ids[rows], attention_mask[rows], pad_token_id=0, eos_token_id=2, max_new_tokens=10,
            temperature=1.0, row_seeds=seeds, **kwargs,
        )  # fmt: skip

    def same_answer(a, b):
        width = min(len(a), len(b))
        return torch.equal(a[:width], b[:width])

    together = sample([0, 1, 2, 3], [10, 11, 12, 13])
    assert same_answer(together[1], sample([1], [11])[0])  # alone, without the left padding
    assert same_answer(together[3], sample([3, 2], [13, 12])[0])  # other batch mates, another order
    assert not torch.equal(sample([0, 1, 2, 3], [20, 21, 22, 23]), together)  # other seeds, other answers
    greedy = sample_tokens(
        model, input_ids, attention_mask, pad_token_id=0, eos_token_id=2, max_new_tokens=10, temperature=0.0
    )
    assert torch.equal(sample([0, 1, 2, 3], [10, 11, 12, 13], top_p=1e-6), greedy)  # a nucleus of one token


def tiny_model_and_prompts():
    torch.manual_seed(0)
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=64, max_position_embeddings=128)
    model = AlignLlamaForCausalLM(config).eval()
    input_ids = torch.randint(3, 64, (6, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :2] = 0  # left-padded prompts
    attention_mask[4, :5] = 0
    return model, input_ids, attention_mask


def test_align_loops_match_transformers_generate_token_for_token():
    """The dynamic loop (finished rows dropped) and the static compiled loop give generate's tokens, and its
    logits wherever a row is still going, greedy and sampled from row seeds, with early ends."""
    model, input_ids, attention_mask = tiny_model_and_prompts()
    free = sample_tokens(model, input_ids, attention_mask, pad_token_id=0, eos_token_id=1, max_new_tokens=12)
    eos = [int(free[0, 3]), int(free[2, 6])]  # tokens the model emits early: rows end at different steps
    settings = [{}, {"temperature": 1.0, "row_seeds": [5, 6, 7, 8, 9, 10]},
                {"temperature": 0.8, "top_p": 0.9, "row_seeds": [1, 2, 3, 4, 5, 6]}, {"min_new_tokens": 5}]  # fmt: skip
    for setting in settings:
        runs = {
            decode: sample_tokens(model, input_ids, attention_mask, pad_token_id=0, eos_token_id=eos,
                                  max_new_tokens=12, decode=decode, output_logits=True, **setting)
            for decode in ("generate", "dynamic", "static")
        }  # fmt: skip
        tokens, logits = runs["generate"]
        going = response_mask(tokens, eos)
        assert (~going).any(), "no row ended early: the test would not see rows dropped"
        for decode in ("dynamic", "static"):
            assert torch.equal(runs[decode][0], tokens), (decode, setting)
            difference = (runs[decode][1] - logits).abs().amax(dim=-1)
            assert difference[going].max() < 1e-5, (decode, setting)


def test_step_rows_name_the_rows_of_each_forward():
    model, input_ids, attention_mask = tiny_model_and_prompts()
    free = sample_tokens(model, input_ids, attention_mask, pad_token_id=0, eos_token_id=1, max_new_tokens=8)
    eos = int(free[2, 2])
    step_rows: list[torch.Tensor] = []
    tokens = sample_tokens(model, input_ids, attention_mask, pad_token_id=0, eos_token_id=eos, max_new_tokens=8,
                           step_rows=step_rows)  # fmt: skip
    assert len(step_rows) == tokens.shape[1]
    going = response_mask(tokens, eos)
    for t, rows in enumerate(step_rows):  # exactly the rows that had not ended before step t
        assert sorted(rows.tolist()) == going[:, t].nonzero()[:, 0].tolist()


def test_complete_sorts_by_length_and_returns_answers_in_order():
    tokenizer = load_tokenizer("data/tokenizer")
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=-(-len(tokenizer) // 64) * 64)
    torch.manual_seed(0)
    model = AlignLlamaForCausalLM(config).eval()
    texts = ["a", "a much longer prompt with many more words in it", "mid length text", "b c"]
    seeds = [11, 12, 13, 14]
    together = complete(model, tokenizer, texts, max_new_tokens=6, temperature=1.0, batch_size=2, row_seeds=seeds)
    alone = [complete(model, tokenizer, [t], max_new_tokens=6, temperature=1.0, row_seeds=[s])[0]
             for t, s in zip(texts, seeds)]  # fmt: skip
    assert together == alone
    greedy = complete(model, tokenizer, texts, max_new_tokens=6, batch_size=3)
    assert greedy == [complete(model, tokenizer, [t], max_new_tokens=6)[0] for t in texts]
    with pytest.raises(ValueError, match="row_seeds: 1 seeds for 4 texts"):
        complete(model, tokenizer, texts, row_seeds=[1])
    with pytest.raises(ValueError, match="decode: expected one of dynamic, static, generate, got 'fast'"):
        complete(model, tokenizer, texts, decode="fast")


def test_the_loops_decode_a_plain_transformers_llama_too():
    """A user's model that is not align's (transformers' LlamaForCausalLM, which names its cache argument as its
    transformers version does) decodes in align's loops with generate's tokens."""
    model, input_ids, attention_mask = tiny_model_and_prompts()
    llama = LlamaForCausalLM(to_llama_config(model.config)).eval()
    llama.load_state_dict(model.state_dict())
    runs = [sample_tokens(llama, input_ids, attention_mask, pad_token_id=0, eos_token_id=1, max_new_tokens=8,
                          temperature=1.0, row_seeds=[1, 2, 3, 4, 5, 6], decode=decode)
            for decode in ("generate", "dynamic", "static")]  # fmt: skip
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


def test_token_counts_are_the_generated_tokens_and_say_which_answers_hit_the_limit():
    """`complete(token_counts=...)`: the tokens each answer generated before the token that ended it (what the
    report's "answer tokens" is), `max_new_tokens` for one cut at the limit; counted from the generated ids,
    not by re-tokenizing the decoded text."""
    from align.data import answer_end_token_ids
    from align.generation import generated_token_counts

    stop = [2, 5]
    new_tokens = torch.tensor([[7, 8, 2, 0, 0], [7, 5, 9, 0, 0], [7, 8, 9, 9, 9], [2, 0, 0, 0, 0]])
    assert generated_token_counts(new_tokens, stop).tolist() == [2, 1, 5, 0]

    tokenizer = load_tokenizer("data/tokenizer")
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=-(-len(tokenizer) // 64) * 64)
    torch.manual_seed(0)
    model = AlignLlamaForCausalLM(config).eval()
    # An untrained model rarely ends an answer: raise the end-of-answer token's logit so that some end early.
    end = answer_end_token_ids(tokenizer)[0]
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits.index_add(
        -1, torch.tensor([end]), torch.full((*logits.shape[:-1], 1), 3.5)))  # fmt: skip
    texts = ["a", "a much longer prompt with many more words in it", "mid length text", "b c", "d", "e f g"]
    counts: list[int] = []
    complete(model, tokenizer, texts, max_new_tokens=12, temperature=1.0, row_seeds=range(6), batch_size=4,
             token_counts=counts)  # fmt: skip
    for text, seed, count in zip(texts, range(6), counts):
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        alone = sample_tokens(model, ids.input_ids, ids.attention_mask, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=answer_end_token_ids(tokenizer), max_new_tokens=12, temperature=1.0,
                              row_seeds=[seed])[0].tolist()  # fmt: skip
        ended = [i for i, token in enumerate(alone) if token in answer_end_token_ids(tokenizer)]
        assert count == (ended[0] if ended else 12), (text, alone, count)
    assert min(counts) < 12 and max(counts) == 12, counts  # both kinds: ended, and cut at the limit
