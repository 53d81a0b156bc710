"""Reward math: the paper's margins, the margin ranking loss on hand-computed values, batched scoring."""

import math

import pytest
import torch

from align.modeling import AlignLlamaConfig, AlignLlamaForSequenceClassification
from align.rewards import MARGINS, margin_for_strength, ranking_loss, score


def test_margins_are_the_papers_table():
    assert [
        margin_for_strength(s, "small")
        for s in ("significantly_better", "better", "slightly_better", "negligibly_better", "unsure")
    ] == [1, 2 / 3, 1 / 3, 0, 0]
    assert [
        margin_for_strength(s, "large")
        for s in ("significantly_better", "better", "slightly_better", "negligibly_better", "unsure")
    ] == [3, 2, 1, 0, 0]
    assert set(MARGINS["none"].values()) == {0.0}


def test_unknown_strength_or_scheme():
    with pytest.raises(ValueError, match="strength: unknown strength 'much_better'"):
        margin_for_strength("much_better", "small")
    with pytest.raises(ValueError, match="scheme: unknown margin scheme 'huge'"):
        margin_for_strength("better", "huge")


def test_ranking_loss_on_hand_computed_examples():
    chosen = torch.tensor([2.0, 0.5, -1.0])
    rejected = torch.tensor([1.0, 0.5, 0.0])
    margin = torch.tensor([1.0, 2 / 3, 0.0])
    by_hand = [
        -math.log(1 / (1 + math.exp(-(c - r - m))))
        for c, r, m in zip([2.0, 0.5, -1.0], [1.0, 0.5, 0.0], [1.0, 2 / 3, 0.0])
    ]
    assert by_hand[0] == pytest.approx(math.log(2))  # r_c - r_r - m = 0
    assert float(ranking_loss(chosen, rejected, margin)) == pytest.approx(sum(by_hand) / 3, abs=1e-6)


def test_trl_reward_trainer_uses_the_same_margin_loss(tokenizer):
    """TRL's RewardTrainer.compute_loss with our `margin` column equals -log sigmoid(r_c - r_r - m)."""
    import datasets
    import trl

    config = AlignLlamaConfig.from_preset("tiny", vocab_size=640, pad_token_id=0, num_labels=1)
    model = AlignLlamaForSequenceClassification(config)
    rows = datasets.Dataset.from_list([{"chosen_ids": [1, 5, 2], "rejected_ids": [1, 6, 2], "margin": 1.0}])
    trainer = trl.RewardTrainer(
        model=model,
        args=trl.RewardConfig(output_dir="unused", report_to=[], bf16=False),
        train_dataset=rows,
        processing_class=tokenizer,
    )

    class FixedRewards(torch.nn.Module):
        training = True

        def forward(self, **inputs):
            return type("Output", (), {"logits": torch.tensor([[2.0], [0.5], [1.0], [0.5]])})()

    inputs = {
        "input_ids": torch.ones(4, 3, dtype=torch.long),
        "attention_mask": torch.ones(4, 3, dtype=torch.long),
        "margin": torch.tensor([1.0, 2 / 3]),
    }
    loss = trainer.compute_loss(FixedRewards(), inputs)
    expected = ranking_loss(torch.tensor([2.0, 0.5]), torch.tensor([1.0, 0.5]), torch.tensor([1.0, 2 / 3]))
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)


def test_score_is_batch_invariant_and_returns_sigmoid(tokenizer):
    torch.manual_seed(0)
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=640, pad_token_id=tokenizer.pad_token_id, num_labels=1)
    model = AlignLlamaForSequenceClassification(config)
    prompts = [[{"role": "user", "content": "What is 2 plus 2?"}], [{"role": "user", "content": "Hi"}]] * 3
    responses = ["4", "Hello there, how are you today?", "5", "Hi", "2 plus 2 is 4.", "Yes"]
    whole = score(model, tokenizer, prompts, responses, batch_size=8)
    one_by_one = score(model, tokenizer, prompts, responses, batch_size=1)
    torch.testing.assert_close(whole.raw, one_by_one.raw, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole.sigmoid, torch.sigmoid(whole.raw))
    assert whole.raw.shape == (6,)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score(model, tokenizer, prompts[:2], responses[:1])


def test_gated_reward_on_hand_values():
    from align.rewards import gated_reward

    safety = torch.tensor([0.9, 0.10, 0.50, 0.15])
    helpful = torch.tensor([0.2, 0.80, 0.70, 0.60])
    is_safety = torch.tensor([True, False, False, False])
    # safety prompt -> safety score; non-safety below 0.15 -> safety score; at or above 0.15 -> helpfulness score
    assert gated_reward(safety, helpful, is_safety).tolist() == pytest.approx([0.9, 0.10, 0.70, 0.60])
