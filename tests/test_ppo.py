"""PPO: the reward math on hand values, GAE and the clipped objective against hand-written loops, one update
step against a reference computation, KL at the reference, learning, resume and config errors."""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM, AlignLlamaForSequenceClassification
from align.ppo import PPOConfig, PPOTrainer, Rollout, compute_gae, ppo_losses, response_mask
from align.prompts import load_prompts, world_gold_scorer
from align.reward_sources import RewardScorer
from align.rewards import logit, ppo_reward, whiten

ROOT = Path(__file__).resolve().parents[1]


def test_whiten_gives_mean_zero_and_std_one():
    values = torch.tensor([3.0, -1.0, 4.0, 1.5, 9.0, 2.0])
    whitened = whiten(values)
    assert whitened.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert whitened.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    masked = whiten(torch.tensor([[1.0, 3.0, 100.0]]), mask=torch.tensor([[True, True, False]]))
    assert masked[0, :2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-4)


def test_logit_undoes_the_sigmoid_and_the_ppo_reward_is_whitened_logits():
    raw = torch.tensor([-2.0, 0.0, 0.5, 3.0])
    assert logit(torch.sigmoid(raw)).tolist() == pytest.approx(raw.tolist(), abs=1e-5)
    safety = torch.tensor([0.9, 0.1, 0.8, 0.6])
    helpful = torch.tensor([0.3, 0.9, 0.7, 0.2])
    is_safety = torch.tensor([True, False, False, False])
    # Gated by hand: a safety prompt -> 0.9; safety 0.1 < 0.15 -> 0.1; otherwise helpfulness 0.7 and 0.2.
    gated = [0.9, 0.1, 0.7, 0.2]
    logits = [math.log(p / (1 - p)) for p in gated]
    mean = sum(logits) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in logits) / 4)
    expected = [(x - mean) / std for x in logits]
    assert ppo_reward(safety, helpful, is_safety).tolist() == pytest.approx(expected, abs=1e-4)


def test_response_mask_keeps_tokens_up_to_the_first_eos():
    responses = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]])
    assert response_mask(responses, eos_token_id=2).int().tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
    ]


def hand_gae(rewards, values, length, gamma, lam):
    """GAE for one row written as the textbook recursion over Python floats."""
    advantages = [0.0] * length
    running = 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages, [a + v for a, v in zip(advantages, values)]


def test_gae_matches_the_textbook_recursion():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    lengths = [6, 4, 1]
    mask = torch.tensor([[t < n for t in range(6)] for n in lengths])
    advantages, returns = compute_gae(rewards, values, mask, gamma=0.9, lam=0.95)
    for row, n in enumerate(lengths):
        expected_advantages, expected_returns = hand_gae(
            rewards[row, :n].tolist(), values[row, :n].tolist(), n, 0.9, 0.95
        )
        assert advantages[row, :n].tolist() == pytest.approx(expected_advantages, abs=1e-5)
        assert returns[row, :n].tolist() == pytest.approx(expected_returns, abs=1e-5)
        assert advantages[row, n:].abs().sum() == 0 and returns[row, n:].abs().sum() == 0


def hand_losses(logprobs, old_logprobs, advantages, values, old_values, returns, mask, eps, eps_value):
    """The clipped surrogate and value loss token by token over Python floats."""
    policy, value, count = 0.0, 0.0, 0
    for row in range(len(mask)):
        for t in range(len(mask[row])):
            if not mask[row][t]:
                continue
            ratio = math.exp(logprobs[row][t] - old_logprobs[row][t])
            a = advantages[row][t]
            policy += max(-a * ratio, -a * min(max(ratio, 1 - eps), 1 + eps))
            v, v_old, r = values[row][t], old_values[row][t], returns[row][t]
            v_clipped = v_old + min(max(v - v_old, -eps_value), eps_value)
            value += max((v - r) ** 2, (v_clipped - r) ** 2)
            count += 1
    return policy / count, 0.5 * value / count


def test_clipped_objective_matches_a_hand_computation():
    torch.manual_seed(1)
    shape = (3, 5)
    old = torch.randn(shape) - 2
    new = old + 0.4 * torch.randn(shape)  # ratios both inside and outside [0.8, 1.2]
    advantages, returns = torch.randn(shape), torch.randn(shape)
    old_values = torch.randn(shape)
    values = old_values + 0.5 * torch.randn(shape)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]).bool()
    losses = ppo_losses(new, old, advantages, values, old_values, returns, mask, 0.2, 0.2)
    expected_policy, expected_value = hand_losses(
        new.tolist(), old.tolist(), advantages.tolist(), values.tolist(), old_values.tolist(), returns.tolist(),
        mask.tolist(), 0.2, 0.2,
    )  # fmt: skip
    assert losses["policy_loss"].item() == pytest.approx(expected_policy, abs=1e-5)
    assert losses["value_loss"].item() == pytest.approx(expected_value, abs=1e-5)
    assert 0 < losses["clipfrac"].item() < 1


# ---- the trainer on tiny random models --------------------------------------------------------------------


def tiny_models(tokenizer, seed=0):
    config = AlignLlamaConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
    )
    torch.manual_seed(seed)
    policy = AlignLlamaForCausalLM(config)
    reference = AlignLlamaForCausalLM(config)
    reference.load_state_dict(policy.state_dict())
    value, helpful, safety = (AlignLlamaForSequenceClassification(config) for _ in range(3))
    return policy, reference, value, helpful, safety


def trainer_models(tokenizer, seed=0):
    """PPOTrainer's models: the policy, pi_0, the value model and the Llama 2 gate over the two reward models."""
    policy, reference, value, helpful, safety = tiny_models(tokenizer, seed)
    return policy, reference, value, RewardScorer.from_models(helpful, safety, tokenizer)


PROMPTS = [
    {"id": str(i), "prompt": [{"role": "user", "content": text}], "is_safety": i % 3 == 0}
    for i, text in enumerate(
        ["What is 2 plus 3?", "Name a color.", "How do I hurt someone?", "Hello there!", "Where is Paris?",
         "Say hi in one word.", "Tell me a fact.", "What is the sea?"]
    )
]  # fmt: skip


def ppo_config(tmp_path, **overrides):
    values = dict(
        policy="-", helpfulness_rm="-", safety_rm="-", prompts="world", output_dir=str(tmp_path / "ppo"), batch_size=8,
        mini_batch_size=4, response_length=8, num_iterations=2, save_steps=1, lr=1e-3, forward_batch_size=8,
    )  # fmt: skip
    return PPOConfig(**{**values, **overrides})


def test_kl_is_zero_when_the_policy_is_the_reference(tmp_path, tokenizer):
    """The rollout's log-probs come from generate's logits (KV cache), pi_0's from a full forward: with the
    policy equal to the reference they agree to float precision, and so the KL is 0."""
    trainer = PPOTrainer(ppo_config(tmp_path, temperature=0.7), *trainer_models(tokenizer), tokenizer, PROMPTS)
    rollout, stats = trainer.rollout(trainer.batch_prompts(0), {})
    mask = rollout.mask
    assert mask.sum() > len(mask)  # more than one token per response
    torch.testing.assert_close(rollout.logprobs[mask], rollout.ref_logprobs[mask], atol=1e-5, rtol=1e-5)
    assert (rollout.logprobs[~mask] == 0).all()
    assert stats["objective/kl"] == pytest.approx(0.0, abs=1e-4)
    assert stats["objective/non_score_reward"] == pytest.approx(0.0, abs=1e-5)


class OneOfTwoProcesses:
    """The accelerator of process `rank` of two, whose gather returns `whole_batch`'s rows in process order."""

    num_processes = 2

    def __init__(self, rank: int, whole_batch: torch.Tensor) -> None:
        self.process_index, self.whole_batch = rank, whole_batch

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.whole_batch[0::2], self.whole_batch[1::2]])


def test_a_prompt_baseline_compares_each_answer_with_its_prompts_other_answers(tmp_path, tokenizer):
    """samples_per_prompt 4: each prompt of an iteration fills 4 consecutive batch positions, and every prompt is
    used once per pass; reward_baseline prompt subtracts the mean reward of each prompt's answers before the
    batch's scale, so a prompt whose answers all score alike gets 0 whatever its level. On two processes (rows
    interleaved) each process gets its rows of the same prompts and rewards."""
    config = ppo_config(tmp_path, batch_size=8, mini_batch_size=4, samples_per_prompt=4, reward_baseline="prompt")
    trainer = PPOTrainer(config, *trainer_models(tokenizer), tokenizer, PROMPTS)
    records = trainer.batch_prompts(0)
    assert [r["id"] for r in records] == [records[0]["id"]] * 4 + [records[4]["id"]] * 4
    assert records[0]["id"] != records[4]["id"]
    one_pass = [r["id"] for iteration in range(4) for r in trainer.batch_prompts(iteration)[::4]]
    assert sorted(one_pass) == sorted(p["id"] for p in PROMPTS)

    reward = torch.tensor([5.0, 5.0, 5.0, 5.0, 0.0, 1.0, 2.0, 3.0])
    centered = torch.tensor([0.0, 0.0, 0.0, 0.0, -1.5, -0.5, 0.5, 1.5])
    expected = centered / centered.pow(2).mean().sqrt()
    torch.testing.assert_close(trainer.sequence_rewards(reward), expected, atol=1e-5, rtol=1e-5)
    batch_baseline = PPOTrainer(
        dataclasses.replace(config, reward_baseline="batch"), *trainer_models(tokenizer), tokenizer, PROMPTS
    )
    assert batch_baseline.sequence_rewards(reward)[0] > 0.9  # the easy prompt's answers would all be pushed up

    for rank in (0, 1):
        trainer.accelerator = OneOfTwoProcesses(rank, reward)
        assert trainer.batch_prompts(0) == records[rank::2]
        torch.testing.assert_close(trainer.sequence_rewards(reward[rank::2]), expected[rank::2], atol=1e-5, rtol=1e-5)


def test_one_update_step_matches_a_reference_computation(tmp_path, tokenizer):
    """On a fixed batch, the losses of the single mini-batch step equal the clipped objective and value loss
    computed by hand from the same model's outputs, and the weights move by exactly that loss's AdamW step."""
    config = ppo_config(tmp_path, batch_size=4, mini_batch_size=4, max_grad_norm=0.0, vf_coef=0.1)
    policy, reference, value, reward = trainer_models(tokenizer)
    trainer = PPOTrainer(config, policy, reference, value, reward, tokenizer, PROMPTS)
    torch.manual_seed(3)
    prompt_width, width = 6, 5
    input_ids = torch.randint(3, len(tokenizer), (4, prompt_width + width))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :2] = 0  # a left-padded prompt
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]]).bool()
    attention_mask[:, prompt_width:] = mask.long()
    with torch.no_grad():
        logits, values = policy(input_ids=input_ids, attention_mask=attention_mask).logits, None
        start_logprobs = torch.log_softmax(logits[:, prompt_width - 1 : -1], -1)
        start_logprobs = start_logprobs.gather(2, input_ids[:, prompt_width:, None])[..., 0]
        hidden = value.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        values = value.score(hidden)[..., 0][:, prompt_width - 1 : -1]
    old_logprobs = start_logprobs - 0.3 * torch.randn(4, width)  # as if sampled by a slightly older policy
    old_values = values + 0.3 * torch.randn(4, width)
    advantages, returns = torch.randn(4, width) * mask, torch.randn(4, width) * mask
    rollout = Rollout(input_ids, attention_mask, mask, old_logprobs, old_logprobs, old_values, advantages, returns)
    expected_policy, expected_value = hand_losses(
        start_logprobs.tolist(), old_logprobs.tolist(), advantages.tolist(), values.tolist(), old_values.tolist(),
        returns.tolist(), mask.tolist(), 0.2, 0.2,
    )  # fmt: skip
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    metrics = trainer.update(rollout, {})
    assert metrics["loss/policy_avg"] == pytest.approx(expected_policy, abs=1e-5)
    assert metrics["loss/value_avg"] == pytest.approx(expected_value, abs=1e-5)

    # The same step by hand: gradient of the hand loss, then one AdamW update with the config's settings.
    check_policy, _, check_value, _, _ = tiny_models(tokenizer)
    parameters = list(check_policy.parameters()) + list(check_value.parameters())
    logits = check_policy(input_ids=input_ids, attention_mask=attention_mask).logits
    new_logprobs = torch.log_softmax(logits[:, prompt_width - 1 : -1], -1)
    new_logprobs = new_logprobs.gather(2, input_ids[:, prompt_width:, None])[..., 0]
    hidden = check_value.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    new_values = check_value.score(hidden)[..., 0][:, prompt_width - 1 : -1]
    ratio = torch.exp(new_logprobs - old_logprobs)
    surrogate = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(0.8, 1.2))
    clipped_values = old_values + (new_values - old_values).clamp(-0.2, 0.2)
    value_loss = torch.maximum((new_values - returns) ** 2, (clipped_values - returns) ** 2)
    loss = surrogate[mask].mean() + 0.1 * 0.5 * value_loss[mask].mean()
    loss.backward()
    torch.optim.AdamW(parameters, lr=1e-3, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1).step()
    expected = dict(
        [(f"policy.{n}", p) for n, p in check_policy.named_parameters()]
        + [(f"value_model.{n}", p) for n, p in check_value.named_parameters()]
    )
    moved = 0
    for name, parameter in trainer.model.named_parameters():
        torch.testing.assert_close(parameter.detach(), expected[name].detach(), atol=1e-6, rtol=1e-5)
        moved += not torch.equal(parameter, before[name])
    assert moved > 0


def test_a_shared_value_head_reads_the_policy_trunk(tmp_path, tokenizer):
    """`shared_value_head`: no value model, a head on the policy's last hidden state that starts at zero; the
    logits are the policy's own, an update trains the head along with the policy, and the rollout's values
    (read during generation) equal a forward's."""
    policy, reference, _, reward = trainer_models(tokenizer)
    config = ppo_config(tmp_path, shared_value_head=True)
    trainer = PPOTrainer(config, policy, reference, None, reward, tokenizer, PROMPTS)
    rollout, _ = trainer.rollout(trainer.batch_prompts(0), {})
    assert (rollout.values == 0).all()
    model = trainer.accelerator.unwrap_model(trainer.model)
    width = rollout.mask.shape[1]
    responses = rollout.input_ids[:, -width:]
    with torch.no_grad():
        logprobs, _, values = model(rollout.input_ids, rollout.attention_mask, responses)
        logits = reference(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask).logits
    expected = torch.log_softmax(logits[:, -width - 1 : -1].float(), -1).gather(-1, responses[..., None])[..., 0]
    torch.testing.assert_close(logprobs, expected)  # the policy's own log-probs (it starts as the reference)
    assert values.shape == rollout.input_ids.shape
    assert sorted({name.split(".")[0] for name, _ in trainer.model.named_parameters()}) == ["policy", "value_head"]
    trainer.update(rollout, {})
    assert model.value_head.weight.abs().sum() > 0
    # The rollout reads the values off generate's steps; they are those of a forward over the whole sequence.
    rollout, _ = trainer.rollout(trainer.batch_prompts(1), {})
    width = rollout.mask.shape[1]
    with torch.no_grad():
        expected = model.values(rollout.input_ids, rollout.attention_mask)[:, -width - 1 : -1]
    assert rollout.values[rollout.mask].abs().min() > 0
    torch.testing.assert_close(rollout.values[rollout.mask], expected[rollout.mask], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="value_model: give one, or None with shared_value_head"):
        PPOTrainer(ppo_config(tmp_path), policy, reference, None, reward, tokenizer, PROMPTS)


def scores_on_iterations(trainer: PPOTrainer, iterations: range) -> list[float]:
    """The reward models' mean gated score of the current policy's answers to the prompts of `iterations`, each
    row sampled from the seed of that iteration and batch position (the same answers for the same policy)."""
    current, scores = trainer.iteration, []
    for iteration in iterations:
        trainer.iteration = iteration  # the rows' sampling seeds come from it
        scores.append(trainer.rollout(trainer.batch_prompts(iteration), {})[1]["objective/scores"])
    trainer.iteration = current
    return scores


def test_training_on_the_world_raises_the_reward_and_logs_gold_beside_it(tmp_path, chat_model, reward_models):
    """The tiny chat model, PPO against the tiny world reward models: the trained policy scores higher than the
    initial one on the same prompts with the same sampling seeds (a paired comparison over 4 batches, 128
    answers), and the gold reward of the answers is logged next to the reward models' score.

    Sized so that it holds on any CPU, where other kernels round differently and so train other tiny models.
    Measured on the 2-core CPU (2026-11-30), mean gain of the 4 batches for PPO seeds 0 / 1 / 2: +0.194 / +0.148 /
    +0.151 with these fixtures, and +0.166 / +0.049 / +0.053 with the whole fixture chain (pretraining, SFT,
    reward models) trained from seed 1 instead, standing in for another machine; every one of the 24 batches
    improved, and a 4-batch mean varies by about 0.01 between runs. With 10 iterations at lr 2e-4 the gains
    were +0.005 to +0.09, and comparing the last iterations' logged scores with the first ones (which mixes in
    how hard each batch's prompts are) failed on one machine."""
    prompts = load_prompts("world", world_prompts=64, world_prompt_seed=7)
    config = ppo_config(
        tmp_path, policy=str(chat_model), helpfulness_rm=str(reward_models["helpfulness"]),
        safety_rm=str(reward_models["safety"]), num_iterations=20, batch_size=32, mini_batch_size=8, lr=5e-4,
        response_length=24, save_steps=100, forward_batch_size=32, report_to="tensorboard",
    )  # fmt: skip
    trainer = PPOTrainer.from_config(config, prompts, gold_scorer=world_gold_scorer(prompts))
    before = scores_on_iterations(trainer, range(4))
    trainer.train()
    after = scores_on_iterations(trainer, range(4))
    assert sum(after) / 4 > sum(before) / 4, (before, after)
    metrics = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").open()]
    assert len(metrics) == 20 and all(0 <= m["objective/gold"] <= 1 for m in metrics)
    assert metrics[0]["objective/scores"] == pytest.approx(before[0])  # iteration 0 logged what it sampled
    assert metrics[-1]["objective/kl"] > 0
    for name in ("policy/approxkl_avg", "policy/clipfrac_avg", "loss/value_avg", "time/generation", "eps"):
        assert name in metrics[-1]
    assert list((tmp_path / "ppo" / "runs").glob("events.out.tfevents.*"))  # the TensorBoard mirror


def test_two_processes_sharded_or_not_take_the_same_steps_as_one(tmp_path, chat_model, reward_models):
    """Rows sampled from seeds of their batch position, advantages whitened over the whole batch, mini-batches
    drawn from the whole batch: 2 processes (gloo) log the same rewards and losses and end with the same
    weights as 1. Mini-batches of 2 rows often fall on one process only, so the other joins with no rows.
    The same holds with the policy and value model sharded (`fsdp`) and the reference and reward models
    sharded (`shard_frozen`): generation steps every process until all are done, and gradients are clipped by
    their norm over every shard. A sharded run stopped at its checkpoint of iteration 2 and extended to 3 ends
    with the weights of 3 straight; so does one trained through LoRA adapters with a value head on the policy
    (`lora`, `shared_value_head`), against one process (adapter dropout 0: dropout draws differ per process)."""
    from conftest import launch_two_processes

    args = [
        "--policy", str(chat_model), "--helpfulness_rm", str(reward_models["helpfulness"]),
        "--safety_rm", str(reward_models["safety"]), "--prompts", "world", "--world_prompts", "16",
        "--batch_size", "8", "--mini_batch_size", "2", "--response_length", "12",
        "--lr", "1e-3", "--forward_batch_size", "8",
    ]  # fmt: skip
    three = ["--num_iterations", "3", "--save_steps", "100"]
    sharded = ["--fsdp", "true", "--shard_frozen", "true"]
    shared = ["--shared_value_head", "true", "--lora", '{"r": 4, "dropout": 0.0}']
    killed = ["--num_iterations", "2", "--save_steps", "2"]
    launches = {"two": [*args, *three], "sharded": [*args, *three, *sharded], "killed": [*args, *sharded, *killed],
                "shared_killed": [*args, *sharded, *shared, *killed]}  # fmt: skip
    for run, run_args in launches.items():
        two = launch_two_processes("recipes/ppo.py", *run_args, "--output_dir", str(tmp_path / run))
        assert two.returncode == 0, two.stderr[-2000:]
    for run in ("killed", "shared_killed"):
        resumed = launch_two_processes("recipes/ppo.py", *launches[run], "--num_iterations", "3", "--extend", "true",
                                       "--output_dir", str(tmp_path / run))  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-2000:]
    for run, run_args in (("one", [*args, *three]), ("shared_one", [*args, *three, *shared])):
        one = subprocess.run([sys.executable, "recipes/ppo.py", *run_args, "--output_dir", str(tmp_path / run)],
                             cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        assert one.returncode == 0, one.stderr[-2000:]
    runs = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").open()] for run in ("one", "two",
            "sharded")}  # fmt: skip
    assert len(runs["one"]) == len(runs["two"]) == len(runs["sharded"]) == 3
    for run in ("two", "sharded"):
        for step_one, step_two in zip(runs["one"], runs[run]):
            for name in ("objective/scores", "objective/gold", "objective/kl", "loss/policy_avg", "loss/value_avg"):
                assert step_two[name] == pytest.approx(step_one[name], rel=1e-3, abs=1e-5), (
                    run,
                    step_one["step"],
                    name,
                )
    assert runs["one"][-1]["objective/kl"] > 0  # the policy did move
    weights = {run: saved_weights(tmp_path / run / "final")
               for run in ("one", "two", "sharded", "killed", "shared_one", "shared_killed")}  # fmt: skip
    for name in weights["one"]:
        for run in ("two", "sharded"):
            torch.testing.assert_close(weights[run][name], weights["one"][name], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(weights["killed"][name], weights["sharded"][name], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(weights["shared_killed"][name], weights["shared_one"][name], atol=1e-5, rtol=1e-4)
    for run in ("killed", "shared_killed"):
        assert json.loads((tmp_path / run / "DONE.json").read_text())["resume_points"] == [2]


def saved_weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


@pytest.mark.parametrize("shared_value_head", [False, True])
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, tokenizer, shared_value_head):
    """Two iterations, a "kill", then a restart to four gives exactly the weights of four uninterrupted ones
    (with a separate value model, and with the value head on the policy's trunk)."""
    # Checkpoints on disk: the same tiny model serves as policy, reference and (head-less) value init.
    models = tiny_models(tokenizer)
    for name, model in zip(("policy", "helpful", "safety"), (models[0], models[3], models[4])):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    paths = dict(policy=str(tmp_path / "policy"), helpfulness_rm=str(tmp_path / "helpful"),
                 safety_rm=str(tmp_path / "safety"), shared_value_head=shared_value_head)  # fmt: skip
    straight = PPOTrainer.from_config(ppo_config(tmp_path / "a", num_iterations=4, save_steps=2, **paths), PROMPTS)
    straight.train()
    first = PPOTrainer.from_config(ppo_config(tmp_path / "b", num_iterations=2, save_steps=2, **paths), PROMPTS)
    first.train()
    # A finished run is not run again unless extended (the same path as a killed one: from its last checkpoint).
    again = ppo_config(tmp_path / "b", num_iterations=4, save_steps=2, **paths)
    assert PPOTrainer.from_config(again, PROMPTS).train() == tmp_path / "b" / "ppo" / "final"
    assert json.loads((tmp_path / "b" / "ppo" / "DONE.json").read_text())["iterations"] == 2
    resumed = PPOTrainer.from_config(
        ppo_config(tmp_path / "b", num_iterations=4, save_steps=2, extend=True, **paths), PROMPTS
    )
    assert resumed.iteration == 2
    checkpoint = tmp_path / "b" / "ppo" / "checkpoint-2"
    assert (checkpoint / "value_head.safetensors").exists() == shared_value_head
    assert (checkpoint / "value_model").exists() != shared_value_head
    resumed.train()
    done = json.loads((tmp_path / "b" / "ppo" / "DONE.json").read_text())
    assert done["iterations"] == 4
    a, b = saved_weights(tmp_path / "a" / "ppo" / "final"), saved_weights(tmp_path / "b" / "ppo" / "final")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    records = [json.loads(line) for line in (tmp_path / "b" / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "objective/kl" in r] == [1, 2, 3, 4]
    assert [r["resumed_from_step"] for r in records if "resumed_from_step" in r] == [2] == done["resume_points"]


def test_bad_configs_give_clear_errors(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="mini_batch_size: 48 does not divide batch_size 512"):
        PPOConfig(policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", mini_batch_size=48)
    with pytest.raises(ValueError, match="samples_per_prompt: expected a divisor of batch_size 512, got 3"):
        PPOConfig(policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", samples_per_prompt=3)
    with pytest.raises(ValueError, match="reward_baseline: 'prompt' .* needs samples_per_prompt >= 2"):
        PPOConfig(policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", reward_baseline="prompt")
    with pytest.raises(ValueError, match="reward_baseline: expected 'batch' or 'prompt', got 'group'"):
        PPOConfig(policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", reward_baseline="group")
    with pytest.raises(ValueError, match="safety_rm: required"):
        PPOConfig(policy="p", helpfulness_rm="h")
    with pytest.raises(ValueError, match="value_model: not used with shared_value_head"):
        PPOConfig(
            policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", value_model="v", shared_value_head=True
        )
    with pytest.raises(ValueError, match="fsdp: shards the trained models in fp32 or bf16; not with mixed_precision"):
        PPOConfig(policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", fsdp=True, mixed_precision="fp16")
    with pytest.raises(ValueError, match="decode: expected one of dynamic, static, generate, got 'vllm'"):
        PPOConfig(policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", decode="vllm")
    with pytest.raises(ValueError, match="decode: 'static' .* not offered for sharded models"):
        PPOConfig(policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", decode="static", fsdp=True)
    models = tiny_models(tokenizer)
    models[0].save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    models[3].save_pretrained(tmp_path / "helpful")
    config = ppo_config(
        tmp_path, policy=str(tmp_path / "policy"), helpfulness_rm=str(tmp_path / "helpful"),
        safety_rm=str(tmp_path / "missing"),
    )  # fmt: skip
    with pytest.raises(FileNotFoundError, match="safety_rm: .*missing does not exist"):
        PPOTrainer.from_config(config, PROMPTS)
    # A causal LM given as a reward model would get a random score head: refused before any work.
    with pytest.raises(
        ValueError, match=r"safety_rm: .*policy is not a reward model \(architectures \['AlignLlamaFor"
    ):
        PPOTrainer.from_config(dataclasses.replace(config, safety_rm=str(tmp_path / "policy")), PROMPTS)
    for field, value, message in (("kl_coef", -5.0, "kl_coef: must be >= 0"), ("cliprange", -1.0, "cliprange: must "
                                  "be positive"), ("gamma", 1.5, r"gamma: must be in \(0, 1\]")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(config, **{field: value})
    long_prompt = [{"id": "long", "prompt": [{"role": "user", "content": "word " * 300}], "is_safety": False}]
    with pytest.raises(ValueError, match="prompt long: .* tokens; .* exceeds the context of 256"):
        PPOTrainer(ppo_config(tmp_path), *trainer_models(tokenizer), tokenizer, long_prompt)
    result = subprocess.run(
        [sys.executable, "recipes/ppo.py", "--policy", "p", "--helpfulness_rm", "h", "--safety_rm", "s",
         "--prompts", "world", "--batch_size", "8", "--mini_batch_size", "3"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "mini_batch_size: 3 does not divide batch_size 8" in result.stderr


@pytest.mark.parametrize("shared_value_head", [False, True])
def test_lora_policy_uses_the_base_model_as_reference(tmp_path, tokenizer, shared_value_head):
    """With `lora`, pi_0 is the policy with its adapters disabled: no reference copy, KL 0 at the start (the
    adapters start at zero), KL > 0 once trained, and the final checkpoint has the adapters merged (with a
    value model, and with a value head on the LoRA policy's trunk)."""
    policy, _, value, helpful, safety = tiny_models(tokenizer)
    for name, model in (("policy", policy), ("helpful", helpful), ("safety", safety)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    config = ppo_config(
        tmp_path, policy=str(tmp_path / "policy"), helpfulness_rm=str(tmp_path / "helpful"),
        safety_rm=str(tmp_path / "safety"), lora={"r": 4, "alpha": 8, "dropout": 0.0}, num_iterations=3, lr=1e-2,
        shared_value_head=shared_value_head,
    )  # fmt: skip
    trainer = PPOTrainer.from_config(config, PROMPTS)
    assert trainer.reference is None
    # The adapters' random init comes from the run's seed, not from whatever the process drew before: a second
    # run of the same config starts from the same adapters (PPO with LoRA was not reproducible before).
    torch.rand(1000)
    again = PPOTrainer.from_config(dataclasses.replace(config, output_dir=str(tmp_path / "again")), PROMPTS)
    adapters = {n: p for n, p in trainer.model.named_parameters() if "lora_A" in n}
    assert adapters and all(torch.equal(p, dict(again.model.named_parameters())[n]) for n, p in adapters.items())
    rollout, stats = trainer.rollout(trainer.batch_prompts(0), {})
    assert stats["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # generate's logits vs a full forward
    trainer.train()
    metrics = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").open()]
    assert abs(metrics[-1]["objective/kl"]) > 1e-3, metrics[-1]["objective/kl"]
    merged = AlignLlamaForCausalLM.from_pretrained(tmp_path / "ppo" / "final")
    assert not any("lora" in name for name in merged.state_dict())
