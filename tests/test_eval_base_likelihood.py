"""eval/experiments/base_likelihood.py: an answer's mean log-probability under a causal LM, as a reward source and as
a judge of rm_contrasts.py's pairs (an experiment of issue 33)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from align.data import load_tokenizer
from align.generation import chat_prompt_texts
from align.modeling.loading import load_causal_lm
from eval.experiments.base_likelihood import answer_logprobs, mean_logprob

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "eval" / "experiments" / "base_likelihood.py"
PROMPTS = [
    [{"role": "user", "content": "What is 2 plus 3?"}],
    [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "Where does Mespin live?"}],
    [{"role": "user", "content": "Name three fruits."}],
]
ANSWERS = ["2 plus 3 is 5.", "Mespin lives in Tesk, a small town by the river.", "Plums"]


def test_the_mean_log_probability_is_that_of_each_answer_alone_after_its_prompt(chat_model):
    model, tokenizer = load_causal_lm(chat_model, "model").eval(), load_tokenizer(chat_model)
    batched = answer_logprobs(model, tokenizer, PROMPTS, ANSWERS, batch_size=3)  # right-padded together
    for prompt, answer, value in zip(PROMPTS, ANSWERS, batched):
        prompt_ids = tokenizer(chat_prompt_texts(tokenizer, [prompt])[0], add_special_tokens=False).input_ids
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0]
        steps = [
            torch.log_softmax(logits[len(prompt_ids) + i - 1].float(), -1)[token] for i, token in enumerate(answer_ids)
        ]
        assert value == pytest.approx(torch.stack(steps).mean().item(), abs=1e-4)
    assert answer_logprobs(model, tokenizer, PROMPTS, ANSWERS, batch_size=1) == pytest.approx(batched, abs=1e-4)


def test_the_reward_source_reads_its_model_from_the_environment(chat_model, monkeypatch):
    monkeypatch.delenv("ALIGN_LIKELIHOOD_MODEL", raising=False)
    with pytest.raises(ValueError, match="ALIGN_LIKELIHOOD_MODEL"):
        mean_logprob(PROMPTS, ANSWERS)
    monkeypatch.setenv("ALIGN_LIKELIHOOD_MODEL", str(chat_model))
    model, tokenizer = load_causal_lm(chat_model, "model").eval(), load_tokenizer(chat_model)
    assert mean_logprob(PROMPTS, ANSWERS) == pytest.approx(answer_logprobs(model, tokenizer, PROMPTS, ANSWERS))


def test_the_script_judges_the_contrasts_with_a_model_or_names_a_missing_folder(chat_model, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "nope")], capture_output=True, text=True, env=env
    )
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "nope" in run.stderr
    command = [sys.executable, str(SCRIPT), str(chat_model), "--prompts", "40", "--json", str(tmp_path / "table.json")]
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "near:arithmetic" in run.stdout and "refusal" in run.stdout
    (table,) = json.loads((tmp_path / "table.json").read_text()).values()
    assert all(0.0 <= row["accuracy"] <= 1.0 and row["pairs"] > 0 for row in table.values())
