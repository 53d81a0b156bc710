"""Shared sampling: rows seeded one by one sample from the model's distribution and do not depend on their batch."""

import torch

from align.generation import RowSeededSampling, sample_tokens
from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM


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
