"""Reward sources and the reward spec: reward models on their own tokenizer, functions, HTTP servers, how they
combine, and the default spec reproducing the Llama 2 gate exactly."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from align.data import load_tokenizer
from align.io import read_jsonl
from align.logprobs import answer_logprobs
from align.modeling import AlignLlamaForSequenceClassification
from align.modeling.loading import load_causal_lm
from align.ppo import PPOConfig, PPOTrainer
from align.rejection_sampling import RejectionSamplingConfig, run_rejection_sampling
from align.reward_sources import (
    HttpSource,
    LikelihoodSource,
    RewardScorer,
    RewardSourceError,
    RewardSpec,
    parse_reward_spec,
)
from align.rewards import gated_reward, ppo_reward, score, whiten

PROMPTS = [[{"role": "user", "content": "How do I boil an egg?"}], [{"role": "user", "content": "Name a saw."}]]
ANSWERS = ["Boil water, add the egg, wait nine minutes.", "A saw cuts wood."]


def answer_length(prompts, answers):
    """A function reward: the number of words of each answer."""
    return [float(len(answer.split())) for answer in answers]


def test_specs_are_read_from_options_mappings_json_and_files_and_checked(tmp_path):
    default = parse_reward_spec(None, "h_dir", "s_dir")
    assert default == RewardSpec("llama2_gate", {"helpfulness": {"model": "h_dir"}, "safety": {"model": "s_dir"}},
                                 from_options=True)  # fmt: skip
    spec = {"combine": "weighted_sum", "sources": {"h": {"model": "h_dir"}, "n": {"function": "m:f", "weight": -1}}}
    path = tmp_path / "reward.yaml"
    path.write_text("combine: weighted_sum\nsources:\n  h: {model: h_dir}\n  n: {function: 'm:f', weight: -1}\n")
    assert parse_reward_spec(spec) == parse_reward_spec(json.dumps(spec)) == parse_reward_spec(str(path))
    assert parse_reward_spec(spec).weight("n") == -1 and parse_reward_spec(spec).weight("h") == 1
    gate = parse_reward_spec({"sources": {"helpfulness": {"model": "h"}, "safety": {"model": "s"},
                                          "judge": {"model": "j"}}})  # fmt: skip
    assert [gate.weight(n) for n in ("helpfulness", "safety", "judge")] == [1, 1, 0]  # the judge is only logged
    for value, message in (
        (None, "helpfulness_rm: required"),
        ({"combine": "max", "sources": {"a": {"model": "x"}}}, "combine: expected one of"),
        ({"sources": {"helpfulness": {"model": "h"}}}, "llama2_gate needs sources named .* 'safety' is missing"),
        ({"combine": "min", "sources": {"a": {"model": "x", "url": "http://y"}}}, "a: give exactly one of"),
        ({"combine": "min", "sources": {"a": {"function": "nocolon"}}}, "function: expected 'module:name'"),
        ({"combine": "min", "sources": {"a": {"model": "x", "weight": 0}}}, "every source has weight 0"),
        ({"combine": "min", "sources": {"a": {"model": "x", "wieght": 1}}}, r"a: unknown keys \['wieght'\]"),
        ({"combine": "min", "sources": {"a": {"likelihood": "x", "scope": "helpfulness"}}}, "a: scope: only an extra"),
        ({"sources": {"helpfulness": {"model": "h", "scope": "helpfulness"}, "safety": {"model": "s"}}},
         "helpfulness: scope: only an extra source"),
        ({"combine": "min", "sources": {"a": {"likelihood": "x", "scope": "safety"}}}, r"scope: expected one of"),
        ({"combine": "min", "sources": {"a": {"model": "x", "relative_to": "No."}}}, "a: relative_to: only a likel"),
        ({"combine": "min", "sources": {"a": {"likelihood": "x", "relative_to": " "}}}, "a: relative_to: expected an"),
        ("{not json", "reward: expected a JSON mapping or a .yaml / .json file"),
        (str(tmp_path / "missing.yaml"), "reward: no file at"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            parse_reward_spec(value)
    with pytest.raises(ValueError, match="reward: a reward spec names its own sources; leave safety_rm unset"):
        parse_reward_spec(spec, safety_rm="s_dir")  # two places naming reward models: one would go unused


def test_reward_models_score_with_their_own_tokenizer(user_models, tokenizer):
    """The user's reward models use a byte-level tokenizer and ChatML, not the policy's Llama-style one: the
    scorer re-renders each answer for them, giving exactly the scores of scoring the texts with each model
    directly (the policy's tokenizer would index past their embeddings)."""
    _, models = user_models
    spec = parse_reward_spec(None, models["helpfulness"], models["safety"])
    scores = RewardScorer.load(spec, fallback_tokenizer=tokenizer).scores(PROMPTS, ANSWERS)
    for name in ("helpfulness", "safety"):
        own = load_tokenizer(models[name])
        assert own.get_vocab() != tokenizer.get_vocab()
        direct = score(AutoModelForSequenceClassification.from_pretrained(models[name]), own, PROMPTS, ANSWERS).raw
        assert torch.equal(scores[name], direct), name


def test_a_reward_model_already_in_memory_is_used_not_loaded_again(user_models, tokenizer):
    """`loaded` (folder -> model, tokenizer): a `model` source naming that folder (by any spelling of its
    path) scores with the model given; the other folder is loaded as before; the scores are the same."""
    from align.reward_sources import LoadedModelSource, RewardModelSource

    _, models = user_models
    spec = parse_reward_spec(None, models["helpfulness"], models["safety"])
    held = AutoModelForSequenceClassification.from_pretrained(models["helpfulness"])
    own = load_tokenizer(models["helpfulness"])
    relative = Path(os.path.relpath(models["helpfulness"]))
    scorer = RewardScorer.load(spec, fallback_tokenizer=tokenizer, loaded={relative: (held, own)})
    assert type(scorer.sources["helpfulness"]) is LoadedModelSource and scorer.sources["helpfulness"].model is held
    assert isinstance(scorer.sources["safety"], RewardModelSource)
    fresh = RewardScorer.load(spec, fallback_tokenizer=tokenizer).scores(PROMPTS, ANSWERS)
    shared = scorer.scores(PROMPTS, ANSWERS)
    assert all(torch.equal(shared[name], fresh[name]) for name in ("helpfulness", "safety"))


def test_functions_weights_and_minimum_combine_as_specified(user_models):
    _, models = user_models
    function = {"function": f"{__name__}:answer_length"}
    weighted = RewardScorer.load(parse_reward_spec({"combine": "weighted_sum", "sources": {
        "helpfulness": {"model": models["helpfulness"]}, "length": {**function, "weight": -0.5}}}))  # fmt: skip
    scores = weighted.scores(PROMPTS, ANSWERS)
    assert scores["length"].tolist() == [8.0, 4.0]
    is_safety = torch.tensor([False, False])
    assert torch.allclose(weighted.reward(scores, is_safety), scores["helpfulness"] - 0.5 * scores["length"])
    smallest = RewardScorer(RewardSpec("min", {"a": {}, "b": {"weight": 2.0}}), {})
    assert smallest.reward({"a": torch.tensor([1.0, 5.0]), "b": torch.tensor([1.0, 1.0])}, is_safety).tolist() == [
        1,
        2,
    ]
    gate = RewardScorer.load(parse_reward_spec({"sources": {"helpfulness": {"model": models["helpfulness"]},
        "safety": {"model": models["safety"]}, "length": {**function, "weight": 0.1}}}))  # fmt: skip
    scores = gate.scores(PROMPTS, ANSWERS)
    gated = gated_reward(torch.sigmoid(scores["safety"]), torch.sigmoid(scores["helpfulness"]), is_safety)
    expected = torch.sigmoid(torch.logit(gated) + 0.1 * scores["length"])  # an extra source moves logit(R_c)
    assert torch.allclose(gate.reward(scores, is_safety), expected, atol=1e-5)


def test_a_scoped_source_moves_only_the_answers_the_gate_judges_by_helpfulness():
    """`scope: helpfulness` adds the source's term where R_c is the helpfulness score: not on a safety prompt, not
    on an answer the safety score puts below the threshold (docs/method.md §7); without a scope, everywhere."""
    sources = {"helpfulness": {}, "safety": {}, "knowledge": {"likelihood": "x", "weight": 0.5}}
    scores = {"helpfulness": torch.tensor([1.0, 1.0, 1.0]), "safety": torch.tensor([2.0, 2.0, -3.0]),
              "knowledge": torch.tensor([-2.0, -2.0, -2.0])}  # fmt: skip
    is_safety = torch.tensor([False, True, False])  # the third: unsafe by its score (sigmoid(-3) < 0.15)
    gated = gated_reward(torch.sigmoid(scores["safety"]), torch.sigmoid(scores["helpfulness"]), is_safety)
    everywhere = RewardScorer(RewardSpec("llama2_gate", sources), {}).reward(scores, is_safety)
    assert torch.allclose(everywhere, torch.sigmoid(torch.logit(gated) - 1.0), atol=1e-6)
    scoped = {**sources, "knowledge": {**sources["knowledge"], "scope": "helpfulness"}}
    reward = RewardScorer(RewardSpec("llama2_gate", scoped), {}).reward(scores, is_safety)
    assert torch.allclose(reward, torch.stack([everywhere[0], gated[1], gated[2]]), atol=1e-6)


def test_a_likelihood_source_scores_each_answer_by_its_models_mean_log_probability(tmp_path, pretrained, chat_model,
                                                                                   reward_models):  # fmt: skip
    """`likelihood: DIR` scores with that causal LM and its own tokenizer (align.logprobs.answer_logprobs);
    rejection sampling keeps the candidate of the highest combined reward and records the source's scores."""
    spec = {"sources": {"helpfulness": {"model": str(reward_models["helpfulness"])},
                        "safety": {"model": str(reward_models["safety"])},
                        "knowledge": {"likelihood": str(pretrained), "weight": 1.0, "scope": "helpfulness"}}}  # fmt: skip
    config = RejectionSamplingConfig(policy=str(chat_model), reward=json.dumps(spec), output_dir=str(tmp_path / "rs"),
                                     prompts="world", world_prompts=4, num_samples=3, max_new_tokens=12)  # fmt: skip
    records = read_jsonl(run_rejection_sampling(config))
    base, tokenizer = load_causal_lm(pretrained, "base").eval(), load_tokenizer(pretrained)
    for record in records:
        expected = answer_logprobs(base, tokenizer, [record["prompt"]] * 3, record["candidates"])
        assert record["knowledge_scores"] == pytest.approx(expected.tolist(), abs=1e-4)
        if not record["kept_most_frequent"]:  # (min_reward_gain may overrule the reward's pick)
            assert record["best"] == max(range(3), key=lambda i: record["rewards"][i])
    with pytest.raises(FileNotFoundError, match="reward: sources: knowledge: .*nope does not exist"):
        LikelihoodSource(tmp_path / "nope", name="reward: sources: knowledge")


def test_a_likelihood_source_relative_to_a_refusal_scores_it_zero_on_every_prompt(pretrained):
    """`relative_to: TEXT` subtracts that text's mean log-probability after the same prompt, computed once per
    distinct prompt: the text itself scores 0 wherever it is, every other answer its difference from it."""
    refusal = "I can't help with that."
    prompts = [[{"role": "user", "content": "What is 2 plus 3?"}], [{"role": "user", "content": "Name two fruits."}]]
    rows = [prompts[0], prompts[1], prompts[0], prompts[1]]
    answers = ["2 plus 3 is 5.", refusal, refusal, "Apples and pears."]
    plain = LikelihoodSource(pretrained)(rows, answers)
    relative = LikelihoodSource(pretrained, relative_to=refusal)(rows, answers)
    assert relative[1].item() == relative[2].item() == pytest.approx(0.0, abs=1e-5)
    assert relative[0].item() == pytest.approx((plain[0] - plain[2]).item(), abs=1e-5)
    assert relative[3].item() == pytest.approx((plain[3] - plain[1]).item(), abs=1e-5)
    assert plain[1].item() != pytest.approx(plain[2].item(), abs=1e-3)  # the refusal's own score depends on the prompt


@pytest.mark.parametrize("sharded, references", [(False, 2), (True, 4)])
def test_a_likelihood_source_scores_the_reference_once_per_prompt_unless_its_model_is_sharded(
    pretrained, monkeypatch, sharded, references
):
    """Over several processes a model placed whole on each still scores `relative_to` once per distinct prompt;
    only a sharded one (a collective per forward) scores it once per answer, the same count on every process."""
    import align.logprobs
    import align.sharding

    refusal = "I can't help with that."
    prompts = [[{"role": "user", "content": "What is 2 plus 3?"}], [{"role": "user", "content": "Name two fruits."}]]
    source = LikelihoodSource(pretrained, relative_to=refusal)
    scored, answer_logprobs = [], align.logprobs.answer_logprobs

    def counting(model, tokenizer, rows, answers, batch_size):
        scored.append(list(answers))
        return answer_logprobs(model, tokenizer, rows, answers, batch_size)

    monkeypatch.setattr(align.logprobs, "answer_logprobs", counting)
    # Several processes, as under torchrun: deciding by the process count again (the old rule) would score
    # the reference once per answer in the unsharded case too, and fail it.
    monkeypatch.setattr(align.sharding, "sharding_active", lambda: True)
    monkeypatch.setattr(align.sharding, "is_sharded", lambda model: sharded)
    relative = source([prompts[0], prompts[1], prompts[0], prompts[1]], ["5.", "Apples.", "Five.", "Pears."])
    assert scored[1] == [refusal] * references
    assert relative.shape == (4,)


class RewardServer:
    """A reward server on the loopback interface scoring answers by length; it can stall once (longer than the
    client's timeout) and be stopped and started again on the same port."""

    def __init__(self, stall_first: float = 0.0) -> None:
        self.requests, self.stall_first, self.port = 0, stall_first, 0
        self.start()

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  (http.server's name)
                server.requests += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server.requests == 1 and server.stall_first:
                    time.sleep(server.stall_first)
                reply = json.dumps({"scores": [float(len(a)) for a in body["answers"]]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    def stop_before_call(self, call: int, monkeypatch) -> None:
        """Make the server go away just before the `call`-th request of any HttpSource from here on."""
        original, calls = HttpSource.__call__, []

        def call_unless_gone(source, prompts, answers):
            calls.append(1)
            if len(calls) == call:
                self.stop()
            return original(source, prompts, answers)

        monkeypatch.setattr(HttpSource, "__call__", call_unless_gone)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"


def test_an_http_reward_server_is_retried_after_a_timeout_and_a_dead_one_is_one_clear_error():
    server = RewardServer(stall_first=1.5)
    try:
        source = HttpSource(server.url, timeout=0.5, retries=2, name="length")
        assert source(PROMPTS, ANSWERS).tolist() == [float(len(a)) for a in ANSWERS]
        assert server.requests == 2  # the first timed out, the retry answered
    finally:
        server.stop()
    with pytest.raises(RewardSourceError, match=rf"reward server length at {server.url}: no answer after 2 tries"):
        HttpSource(server.url, timeout=0.5, retries=1, name="length")(PROMPTS, ANSWERS)


def test_rejection_sampling_with_a_server_that_dies_resumes_once_it_is_back(tmp_path, chat_model, monkeypatch):
    """Best-of-K scored by an HTTP server alone: the server dies after some prompts, the run stops with one
    error, finished prompts are kept in the shards, and the rerun after the server is back redoes none of them."""
    server = RewardServer()
    spec = json.dumps({"combine": "weighted_sum", "sources": {"length": {"url": server.url, "retries": 0,
                                                                         "timeout": 5}}})  # fmt: skip
    config = RejectionSamplingConfig(policy=str(chat_model), reward=spec, output_dir=str(tmp_path / "rs"),
                                     prompts="world", world_prompts=4, num_samples=2, max_new_tokens=8,
                                     generation_batch_size=2)  # fmt: skip
    # (one prompt per wave: one server call each)
    server.stop_before_call(3, monkeypatch)
    with pytest.raises(RewardSourceError, match="no answer after 1 tries"):
        run_rejection_sampling(config)
    finished = [line for shard in (tmp_path / "rs" / "shards").glob("*.jsonl") for line in shard.open()]
    assert len(finished) == 2
    server.start()  # back on the same port
    before = server.requests
    try:
        kept = read_jsonl(run_rejection_sampling(config))
    finally:
        server.stop()
    assert server.requests - before == 2  # only the two unfinished prompts
    for record in kept:  # the longest answer is kept, scored by the server
        assert record["length_scores"] == [float(len(a)) for a in record["candidates"]]
        assert record["best"] == max(range(2), key=lambda i: (len(record["candidates"][i].strip()) > 0,
                                                                record["length_scores"][i]))  # fmt: skip


def test_the_default_spec_is_the_llama2_gate_exactly(tmp_path, chat_model, reward_models):
    """Rejection sampling with the default spec keeps what the Llama 2 gate over the two reward models, scored
    with the policy's tokenizer as before reward sources existed, keeps: the same rewards, scores and picks; and
    PPO's sequence reward of the same answers is the old whiten(logit(R_c)) bit for bit."""
    config = RejectionSamplingConfig(policy=str(chat_model), helpfulness_rm=str(reward_models["helpfulness"]),
                                     safety_rm=str(reward_models["safety"]), output_dir=str(tmp_path / "rs"),
                                     prompts="world", world_prompts=4, num_samples=3, max_new_tokens=12)  # fmt: skip
    records = read_jsonl(run_rejection_sampling(config))
    tokenizer = load_tokenizer(chat_model)
    models = {t: AlignLlamaForSequenceClassification.from_pretrained(reward_models[t]) for t in reward_models}
    # Rejection sampling scores a wave's answers (here all 4 prompts' 12) in one batch: so does this check.
    prompts = [r["prompt"] for r in records for _ in r["candidates"]]
    answers = [a for r in records for a in r["candidates"]]
    is_safety = torch.tensor([r["is_safety"] for r in records for _ in r["candidates"]])
    helpful = score(models["helpfulness"], tokenizer, prompts, answers).sigmoid
    safety = score(models["safety"], tokenizer, prompts, answers).sigmoid
    rewards = gated_reward(safety, helpful, is_safety)
    for i, record in enumerate(records):
        rows = slice(3 * i, 3 * i + 3)
        assert record["helpfulness_scores"] == helpful[rows].tolist()
        assert record["safety_scores"] == safety[rows].tolist()
        assert record["rewards"] == rewards[rows].tolist()
    scorer = RewardScorer.load(parse_reward_spec(None, *(reward_models[t] for t in ("helpfulness", "safety"))))
    ppo_sequence_reward = whiten(scorer.optimised(scorer.reward(scorer.scores(prompts, answers), is_safety)))
    before = ppo_reward(score(models["safety"], tokenizer, prompts, answers).sigmoid,
                        score(models["helpfulness"], tokenizer, prompts, answers).sigmoid, is_safety)  # fmt: skip
    assert torch.equal(ppo_sequence_reward, before)


def test_ppo_with_reward_models_on_another_tokenizer(tmp_path, chat_model, user_models):
    """PPO on the world's policy (its own tokenizer) with the user's reward models (a byte-level one): the value
    model cannot start from the helpfulness reward model (one line says so and what to do instead); with a value
    head on the policy it trains, logging each source's score."""
    _, models = user_models
    values = dict(policy=str(chat_model), helpfulness_rm=models["helpfulness"], safety_rm=models["safety"],
                  prompts="world", world_prompts=8, output_dir=str(tmp_path / "ppo"), batch_size=4, mini_batch_size=4,
                  response_length=8, num_iterations=2, save_steps=2, forward_batch_size=4)  # fmt: skip
    with pytest.raises(ValueError, match=r"value_model \(the helpfulness reward model\): .* has another tokenizer "
                                         r"than the policy .* shared_value_head: true"):  # fmt: skip
        PPOTrainer.from_config(PPOConfig(**values), [])
    from align.prompts import stage_prompts

    config = PPOConfig(**values, shared_value_head=True)
    final = PPOTrainer.from_config(config, stage_prompts(config)).train()
    assert (final / "model.safetensors").is_file()
    logged = [r for r in read_jsonl(tmp_path / "ppo" / "metrics.jsonl") if "objective/scores" in r]
    assert len(logged) == 2 and all(
        "objective/helpfulness_score" in r and "objective/safety_score" in r for r in logged
    )


def test_ppo_stopped_by_a_lost_reward_server_resumes_to_the_same_model(tmp_path, tokenizer, monkeypatch):
    """PPO scored by a reward server that dies in the third iteration: one RewardSourceError, the checkpoint of
    iteration 2 kept; once the server is back the rerun resumes there and ends with the weights of a run whose
    server never went away."""
    from safetensors.torch import load_file
    from test_ppo import PROMPTS, ppo_config, tiny_models

    policy, *_ = tiny_models(tokenizer)
    policy.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    server = RewardServer()
    spec = json.dumps({"combine": "weighted_sum", "sources": {"length": {"url": server.url, "retries": 0}}})

    def config(name: str) -> PPOConfig:
        return ppo_config(tmp_path / name, policy=str(tmp_path / "policy"), helpfulness_rm="", safety_rm="",
                          reward=spec, shared_value_head=True, num_iterations=4, save_steps=1)  # fmt: skip

    try:
        PPOTrainer.from_config(config("straight"), PROMPTS).train()
        server.stop_before_call(3, monkeypatch)  # in the third iteration
        with pytest.raises(RewardSourceError, match="no answer after 1 tries"):
            PPOTrainer.from_config(config("killed"), PROMPTS).train()
        assert sorted(p.name for p in (tmp_path / "killed" / "ppo").glob("checkpoint-*")) == ["checkpoint-1",
                                                                                                "checkpoint-2"]  # fmt: skip
        server.start()
        PPOTrainer.from_config(config("killed"), PROMPTS).train()
    finally:
        server.stop()
    weights = [load_file(tmp_path / run / "ppo" / "final" / "model.safetensors") for run in ("straight", "killed")]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def failing_reward(prompts, answers):
    """A function reward with a bug."""
    return {"a": 1}["b"]


def test_a_function_that_raises_is_named_in_one_line():
    spec = {"combine": "weighted_sum", "sources": {"mine": {"function": f"{__name__}:failing_reward"}}}
    scorer = RewardScorer.load(parse_reward_spec(spec))
    with pytest.raises(RewardSourceError, match=rf"reward: sources: mine: function {__name__}:failing_reward raised "
                       r"KeyError: 'b'; fix it"):  # fmt: skip
        scorer.scores(PROMPTS, ANSWERS)


class OddServer:
    """A reward server on the loopback interface that answers with `reply` bytes, announcing `length` of them."""

    def __init__(self, reply: bytes, length: int | None = None) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  (http.server's name)
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Length", str(length or len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/score"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.mark.parametrize("reply, length, expected", [
    (b'{"scores": [1.0, 2', 200, r"no answer after 2 tries \(IncompleteRead"),  # cut short
    ('{"scores": [1.0, 2.0], "note": "café"}'.encode("latin-1"), None, r"its reply is not UTF-8 text"),
    (b'{"scores": ["1.0", 2.0]}', None, r"expected numbers, got '1.0'"),
    (b'{"scores": [true, 2.0]}', None, r"expected numbers, got True"),
])  # fmt: skip
def test_http_replies_cut_short_not_utf8_or_with_strings_for_numbers_are_one_clear_error(reply, length, expected):
    server = OddServer(reply, length)
    try:
        with pytest.raises(RewardSourceError, match=expected):
            HttpSource(server.url, timeout=5, retries=1, name="odd")(PROMPTS, ANSWERS)
    finally:
        server.close()
