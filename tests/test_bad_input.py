"""The bad-input corpus: every recipe given a bad file, model, tokenizer or setting, as a user's project would
have them (`tests/user_project.py`: a plain Llama with its own tokenizer and data, nothing of the world).

Each case runs its recipe in this process, as `python recipes/<stage>.py ...` would, and must end with one
`<recipe>: error: ...` line that names the file, record, field or option at fault, exit status 2, no
traceback, and nothing written (no output folder; a folder that was there is unchanged).
"""

from __future__ import annotations

import gzip
import json
import runpy
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from user_project import write_stage_yamls

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    recipe: str  # recipes/<recipe>.py
    name: str
    change: Callable[[Path, dict], dict]  # (case folder, project) -> options replacing or adding to the base ones
    expect: tuple[str, ...]  # what the error line must name
    keep_out: bool = False  # the output folder exists before the run (it must be left unchanged)
    full_disk: bool = False  # the disk has 1 MB free
    foreign: bool = False  # the output folder holds a file of the user's (it must be left unchanged)


def write(folder: Path, name: str, content: str | bytes) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def lines(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def model_copy(folder: Path, source: str, name: str = "model", damage: Callable[[Path], None] | None = None) -> str:
    """A copy of the model folder `source` under `folder/name`, changed by `damage`."""
    target = folder / name
    shutil.copytree(source, target)
    if damage:
        damage(target)
    return str(target)


def truncate_weights(model: Path) -> None:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def empty_weights(model: Path) -> None:
    (model / "model.safetensors").write_bytes(b"")


def no_weights(model: Path) -> None:
    (model / "model.safetensors").unlink()


def pickle_weights(model: Path) -> None:
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")


def wider_config(model: Path) -> None:
    """config.json says the MLP is twice as wide as the weights are."""
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "intermediate_size": 2 * config["intermediate_size"]}))


def broken_config(model: Path) -> None:
    (model / "config.json").write_text('{"model_type": "llama", ')


def small_vocabulary(model: Path) -> None:
    """The model's embeddings hold 100 tokens; its tokenizer has 600."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model, vocab_size=100)
    reward_model = config.architectures[0].endswith("ForSequenceClassification")
    (model / "model.safetensors").unlink()
    (AutoModelForSequenceClassification if reward_model else AutoModelForCausalLM).from_config(config).save_pretrained(
        model
    )


def no_score_head(model: Path) -> None:
    """A reward model's folder whose weights lost the trained score head (only its config says reward model)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.endswith("score.weight")}, model / "model.safetensors")


def missing_shard(model: Path) -> None:
    """Weights in two shards, one of them gone."""
    weights = model / "model.safetensors"
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                                            "lm_head.weight": "model-00002-of-00002.safetensors"}}  # fmt: skip
    weights.rename(model / "model-00001-of-00002.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps(index))


def broken_tokenizer(model: Path) -> None:
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": ')


def yaml_config(folder: Path, text: str) -> dict:
    return {"--config": write(folder, "config.yaml", text)}


NON_UTF8 = b'{"text": "fine"}\n{"text": "caf\xe9"}\n'
QUESTION, ANSWER = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
PKU_FLAG_A_STRING = {"prompt": "q", "response_0": "a", "response_1": "b", "is_response_0_safe": "false",
                     "is_response_1_safe": True, "better_response_id": 1, "safer_response_id": 1}  # fmt: skip
# The rounds' default reward written as a spec: the gate over the round's two reward models.
ROUND_GATE = ('{"combine": "llama2_gate", "sources": {"helpfulness": {"model": "round:helpfulness"}, '
              '"safety": {"model": "round:safety"}}}')  # fmt: skip
ANNOTATED_BY_A_MODEL = {"--helpfulness_pairs": None, "--safety_pairs": None}  # no pair files: a batch to label
NO_RMS = {"--helpfulness_rm": "", "--safety_rm": ""}  # a reward spec names its own sources
PROMPT = {"id": "a", "prompt": "How far is the Moon?", "is_safety": False}


def base_options(recipe: str, p: dict, out: Path) -> dict:
    """Options of a run of `recipe` on the user's project that would succeed."""
    common = {"--output_dir": str(out), "--max_length": "256", "--per_device_batch_size": "2",
              "--gradient_accumulation_steps": "1", "--max_steps": "1"}  # fmt: skip
    if recipe == "pretrain":
        return {"--output_dir": str(out), "--dataset": p["texts"], "--tokenizer": p["model"], "--model_preset": "tiny",
                "--seq_length": "32", "--max_steps": "1", "--per_device_batch_size": "2",
                "--warmup_steps": "0"}  # fmt: skip
    if recipe == "sft":
        return {**common, "--model": p["model"], "--dataset": p["sft"]}
    if recipe == "reward_model":
        return {**common, "--model": p["sft_model"], "--target": "helpfulness", "--helpfulness_data": p["helpfulness"],
                "--safety_data": p["safety"], "--eval_data": p["helpfulness_eval"]}  # fmt: skip
    models = {"--policy": p["sft_model"], "--helpfulness_rm": p["helpfulness_rm"], "--safety_rm": p["safety_rm"]}
    if recipe == "rejection_sampling":
        return {**models, "--output_dir": str(out), "--prompts": p["prompts"], "--num_samples": "2",
                "--max_new_tokens": "4", "--finetune_batch_size": "2", "--max_length": "256"}  # fmt: skip
    if recipe == "ppo":
        return {**models, "--output_dir": str(out), "--prompts": p["prompts"], "--num_iterations": "1",
                "--batch_size": "2", "--mini_batch_size": "2", "--response_length": "4",
                "--forward_batch_size": "2"}  # fmt: skip
    assert recipe == "rlhf_round"
    stages = p["stages"]
    return {"--round": "1", "--name": "mine", "--runs_dir": str(out.parent), "--sft_model": p["sft_model"],
            "--helpfulness_rm": p["helpfulness_rm"], "--safety_rm": p["safety_rm"], "--prompts": p["prompts"],
            "--eval_prompts": p["eval_prompts"], "--helpfulness_eval_pairs": p["helpfulness_eval"],
            "--safety_eval_pairs": p["safety_eval"], "--helpfulness_pairs": p["helpfulness_rounds"],
            "--safety_pairs": p["safety_rounds"], "--helpfulness_rm_config": stages["rm"],
            "--safety_rm_config": stages["rm"], "--rm_update_config": stages["rm"],
            "--rejection_sampling_config": stages["rs"], "--ppo_config": stages["ppo"]}  # fmt: skip


def damaged(option: str, damage: Callable[[Path], None], source: str = "model") -> Callable[[Path, dict], dict]:
    return lambda tmp, p: {option: model_copy(tmp, p[source], damage=damage)}


def data_file(option: str, name: str, content: str | bytes) -> Callable[[Path, dict], dict]:
    return lambda tmp, p: {option: write(tmp, name, content)}


def stage_yaml(stage: str, text: str) -> Callable[[Path, dict], dict]:
    """A rounds stage config with `text`'s keys replacing or added to the shipped tiny settings (a key given twice
    is an error of its own)."""
    option = {"rs": "--rejection_sampling_config", "ppo": "--ppo_config", "rm": "--rm_update_config"}[stage]
    keys = {line.split(":")[0] for line in text.splitlines() if ":" in line}

    def config(tmp: Path, project: dict) -> dict:
        base = Path(project["stages"][stage]).read_text().splitlines(keepends=True)
        kept = "".join(line for line in base if line.split(":")[0] not in keys)
        return {option: write(tmp, f"{stage}.yaml", kept + text)}

    return config


HH = "\n\nHuman: {q}\n\nAssistant: {a}"


def hh(q: str, chosen, rejected) -> dict:
    return {"chosen": HH.format(q=q, a=chosen) if isinstance(chosen, str) else chosen,
            "rejected": HH.format(q=q, a=rejected)}  # fmt: skip


NO_REJECTED = lines(hh("a?", "yes", "no"), {"chosen": HH.format(q="b?", a="yes")})  # record 1 lacks 'rejected'


# fmt: off
CASES = [
    # --- configuration, any recipe --------------------------------------------------------------------------------
    Case("pretrain", "unknown yaml key",
         lambda t, p: yaml_config(t, "lr: 1.0e-4\nlearning_rate: 3\n"), ("config.yaml", "learning_rate")),
    Case("pretrain", "lr a list", lambda t, p: yaml_config(t, "lr: [1, 2]\n"), ("lr",)),
    Case("sft", "batch size 2.5", lambda t, p: {"--per_device_batch_size": "2.5"}, ("per_device_batch_size",)),
    Case("sft", "batch size 2.5 in yaml",
         lambda t, p: yaml_config(t, "per_device_batch_size: 2.5\n"), ("per_device_batch_size",)),
    Case("sft", "negative epochs",
         lambda t, p: {"--num_train_epochs": "-1", "--max_steps": "-1"}, ("num_train_epochs",)),
    Case("sft", "unknown option", lambda t, p: {"--lrr": "1e-4"}, ("--lrr", "--lr")),
    Case("sft", "config not yaml", lambda t, p: yaml_config(t, "lr: [1, 2\n"), ("config.yaml", "YAML")),
    Case("sft", "config a list", lambda t, p: yaml_config(t, "- lr\n"), ("config.yaml", "mapping")),
    Case("sft", "duplicate key in yaml", lambda t, p: yaml_config(t, "lr: 1.0e-4\nnum_train_epochs: 1\nlr: 3.0e-4\n"),
         ("config.yaml", "duplicate key 'lr' (lines 1 and 3)")),
    Case("sft", "config missing", lambda t, p: {"--config": str(t / "nope.yaml")}, ("nope.yaml",)),
    Case("sft", "config not utf-8",
         lambda t, p: {"--config": write(t, "config.yaml", b"lr: 1e-4 # \xe9\n")}, ("config.yaml", "UTF-8")),
    Case("sft", "resume not a bool", lambda t, p: yaml_config(t, "resume: maybe\n"), ("resume",)),
    Case("sft", "output_dir a file",
         lambda t, p: {"--output_dir": write(t, "out", "x")}, ("output_dir", "file"), keep_out=True),
    Case("pretrain", "empty run_config.json",
         lambda t, p: {"--output_dir": str(Path(write(t, "out/run_config.json", "")).parent)},
         ("run_config.json",),
         keep_out=True),
    Case("reward_model", "bad target", lambda t, p: {"--target": "kindness"}, ("target", "kindness")),
    Case("reward_model", "other_share 1.5", lambda t, p: {"--other_share": "1.5"}, ("other_share",)),
    Case("reward_model", "bad margin scheme", lambda t, p: {"--margin_scheme": "huge"}, ("margin_scheme",)),
    Case("rejection_sampling", "finetune_batch_size 0",
         lambda t, p: {"--finetune_batch_size": "0"}, ("finetune_batch_size",)),
    Case("rejection_sampling", "num_samples 0", lambda t, p: {"--num_samples": "0"}, ("num_samples",)),
    Case("rejection_sampling", "negative temperature", lambda t, p: {"--temperature": "-1"}, ("temperature",)),
    Case("ppo", "negative kl_coef", lambda t, p: {"--kl_coef": "-5"}, ("kl_coef",)),
    # Non-finite numbers: a range check `v > 0` lets inf through and NaN passes no comparison (issue 35).
    Case("ppo", "kl_coef inf", lambda t, p: {"--kl_coef": "inf"}, ("kl_coef", "finite")),
    Case("ppo", "temperature nan", lambda t, p: {"--temperature": "nan"}, ("temperature", "finite")),
    Case("ppo", "lr inf", lambda t, p: {"--lr": "inf"}, ("lr", "finite")),
    Case("sft", "lr inf", lambda t, p: {"--lr": "inf"}, ("lr", "finite")),
    Case("sft", "epochs inf", lambda t, p: {"--num_train_epochs": "inf"}, ("num_train_epochs", "finite")),
    Case("reward_model", "lr .nan in yaml", lambda t, p: yaml_config(t, "lr: .nan\n"), ("lr", "finite")),
    Case("ppo", "negative cliprange", lambda t, p: {"--cliprange": "-1"}, ("cliprange",)),
    Case("ppo", "mini batch not dividing",
         lambda t, p: {"--batch_size": "4", "--mini_batch_size": "3"}, ("mini_batch_size",)),
    Case("ppo", "lora not json", lambda t, p: {"--lora": "{r: 8"}, ("lora",)),
    Case("sft", "lora rank 0", lambda t, p: {"--lora": '{"r": 0}'}, ("lora", "r")),
    Case("sft", "chat template file missing",
         lambda t, p: {"--chat_template": str(t / "none.jinja")}, ("chat_template", "none.jinja")),
    # --- models and tokenizers --------------------------------------------------------------------------------------
    Case("sft", "model missing", lambda t, p: {"--model": str(t / "nope")}, ("model", "nope")),
    Case("sft", "truncated safetensors", damaged("--model", truncate_weights), ("model", "model.safetensors")),
    Case("sft", "empty safetensors", damaged("--model", empty_weights), ("model", "model.safetensors")),
    Case("sft", "no weights", damaged("--model", no_weights), ("model", "model.safetensors")),
    Case("sft", "pickle weights", damaged("--model", pickle_weights), ("model", "pytorch_model.bin", "safetensors")),
    Case("sft", "config.json not json", damaged("--model", broken_config), ("model", "config.json")),
    Case("sft", "config.json shapes not the weights'", damaged("--model", wider_config),
         ("model", "model.safetensors holds", "config.json gives it")),
    Case("reward_model", "config.json shapes not the weights'", damaged("--model", wider_config, "sft_model"),
         ("model", "model.safetensors holds", "config.json gives it")),
    Case("sft", "tokenizer larger than the model", damaged("--model", small_vocabulary), ("vocabulary", "100")),
    Case("pretrain", "init_from truncated", damaged("--init_from", truncate_weights), ("init_from", "safetensors")),
    Case("pretrain", "init_from empty weights", damaged("--init_from", empty_weights), ("init_from", "safetensors")),
    Case("pretrain", "init_from tokenizer larger than the model",
         damaged("--init_from", small_vocabulary), ("vocabulary", "100")),
    Case("pretrain", "tokenizer missing", lambda t, p: {"--tokenizer": str(t / "nope")}, ("tokenizer", "nope")),
    Case("reward_model", "truncated safetensors",
         damaged("--model", truncate_weights, "sft_model"), ("model", "model.safetensors")),
    Case("rejection_sampling", "policy truncated",
         damaged("--policy", truncate_weights, "sft_model"), ("policy", "model.safetensors")),
    Case("rejection_sampling", "safety_rm empty weights",
         damaged("--safety_rm", empty_weights, "safety_rm"), ("safety_rm", "model.safetensors")),
    Case("rejection_sampling", "a causal LM as reward model",
         lambda t, p: {"--helpfulness_rm": p["sft_model"]}, ("helpfulness_rm", "not a reward model")),
    Case("rejection_sampling", "reward model missing",
         lambda t, p: {"--safety_rm": str(t / "nope")}, ("safety_rm", "nope")),
    Case("ppo", "a causal LM as reward model",
         lambda t, p: {"--safety_rm": p["sft_model"]}, ("safety_rm", "not a reward model")),
    Case("ppo", "reference pickle", damaged("--reference", pickle_weights, "sft_model"), ("reference", "pickle")),
    Case("ppo", "policy tokenizer larger than the model",
         damaged("--policy", small_vocabulary, "model"), ("vocabulary", "100")),
    Case("ppo", "reward model without a score head",
         damaged("--helpfulness_rm", no_score_head, "helpfulness_rm"), ("helpfulness_rm", "score head")),
    Case("sft", "a shard missing", damaged("--model", missing_shard), ("model", "model-00002-of-00002.safetensors")),
    Case("sft", "tokenizer.json damaged", damaged("--model", broken_tokenizer), ("tokenizer", "model")),
    Case("sft", "chat template not utf-8",
         data_file("--chat_template", "chat.jinja", b"{{ 'caf\xe9' }}"), ("chat.jinja", "line 1", "UTF-8")),
    Case("reward_model", "chat template does not parse",
         data_file("--chat_template", "chat.jinja", "{% for m in messages %}{{ m.content }"),
         ("chat_template", "chat.jinja")),
    Case("sft", "gatt dataset missing",
         lambda t, p: {"--gatt_dataset": str(t / "gatt.jsonl")}, ("gatt_dataset", "gatt.jsonl")),
    Case("reward_model", "tokenizer larger than the model",
         lambda t, p: {"--model": model_copy(t, p["sft_model"], damage=small_vocabulary)},
         ("model", "vocabulary", "100")),
    # --- pretraining text -------------------------------------------------------------------------------------------
    Case("pretrain", "empty jsonl", data_file("--dataset", "texts.jsonl", ""), ("texts.jsonl", "empty")),
    Case("pretrain", "truncated jsonl",
         data_file("--dataset", "texts.jsonl", lines({"text": "a b c"}, '{"text": "d e')), ("texts.jsonl", "line 2")),
    Case("pretrain", "number for text",
         data_file("--dataset", "texts.jsonl", lines({"text": "a b"}, {"text": 5})),
         ("texts.jsonl", "line 2", "text")),
    Case("pretrain", "text field missing",
         data_file("--dataset", "texts.jsonl", lines({"body": "a b"})), ("texts.jsonl", "text")),
    Case("pretrain", "not utf-8",
         data_file("--dataset", "texts.jsonl", NON_UTF8), ("texts.jsonl", "line 2", "UTF-8")),
    Case("pretrain", "txt not utf-8",
         data_file("--dataset", "texts.txt", b"fine\ncaf\xe9\n"), ("texts.txt", "line 2", "UTF-8")),
    Case("pretrain", "hub name offline",
         lambda t, p: {"--dataset": "someone/corpus"}, ("dataset", "someone/corpus", "offline")),
    Case("pretrain", "missing file", lambda t, p: {"--dataset": str(t / "nope.jsonl")}, ("nope.jsonl",)),
    # --- SFT dialogues ----------------------------------------------------------------------------------------------
    Case("sft", "message without a role",
         data_file("--dataset", "sft.jsonl", lines({"messages": [{"content": "hi"}, ANSWER]})),
         ("sft.jsonl", "role")),
    Case("sft", "content a number",
         data_file("--dataset", "sft.jsonl", lines({"messages": [QUESTION, ANSWER]},
                                                   {"messages": [{"role": "user", "content": 7}, ANSWER]})),
         ("sft.jsonl", "1", "content")),
    Case("sft", "messages not a list",
         data_file("--dataset", "sft.jsonl", lines({"messages": "hi"})), ("sft.jsonl", "messages")),
    Case("sft", "no answer",
         data_file("--dataset", "sft.jsonl", lines({"messages": [{"role": "user", "content": "hi"}]})),
         ("sft.jsonl", "assistant")),
    Case("sft", "not utf-8",
         data_file("--dataset", "sft.jsonl", b'{"messages": []}\n\xff\n'), ("sft.jsonl", "line 2", "UTF-8")),
    Case("sft", "empty file", data_file("--dataset", "sft.jsonl", ""), ("sft.jsonl",)),
    Case("sft", "truncated jsonl",
         data_file("--dataset", "sft.jsonl", '{"messages": [{"role": "user"'), ("sft.jsonl", "line 1")),
    Case("sft", "jsonl.gz cut short",
         lambda t, p: {"--dataset": write(t, "sft.jsonl.gz", gzip.compress(Path(p["sft"]).read_bytes())[:-30])},
         ("sft.jsonl.gz", "damaged or cut short")),
    Case("sft", "a 3 MB dialogue",  # refused from its characters, before it is tokenized
         data_file("--dataset", "sft.jsonl", lines({"messages": [QUESTION, {**ANSWER, "content": "word " * 600_000}]})),
         ("sft.jsonl", "record 0", "3000002 characters", "max_length=256")),
    Case("sft", "a line not an object", data_file("--dataset", "sft.jsonl", "[1, 2]\n"), ("sft.jsonl", "line 1")),
    Case("sft", "parquet damaged", data_file("--dataset", "sft.parquet", b"PAR1 not really"),
         ("sft.parquet", "parquet")),
    Case("sft", "hub name offline",
         lambda t, p: {"--dataset": "someone/dialogues"}, ("dataset", "someone/dialogues", "offline")),
    # --- preference pairs -------------------------------------------------------------------------------------------
    Case("reward_model", "a number among strings",
         data_file("--helpfulness_data", "hh.jsonl", lines(*[hh(q, "yes", "no") for q in "abc"],
                                                           {"chosen": 5, "rejected": "x"})),
         ("hh.jsonl", "record 3", "chosen")),
    Case("reward_model", "a field missing",
         data_file("--helpfulness_data", "hh.jsonl", NO_REJECTED),
         ("hh.jsonl", "record 1", "rejected")),
    Case("reward_model", "not utf-8",
         data_file("--helpfulness_data", "hh.jsonl", json.dumps(hh("a?", "yes", "no")).encode() + b"\n\xff\xfe\n"),
         ("hh.jsonl", "line 2", "UTF-8")),
    Case("reward_model", "empty file", data_file("--helpfulness_data", "hh.jsonl", ""), ("hh.jsonl",)),
    Case("reward_model", "safe flag a string",
         data_file("--safety_data", "pku.jsonl", lines(PKU_FLAG_A_STRING)),
         ("pku.jsonl", "is_response_0_safe")),
    Case("reward_model", "wrong format",
         lambda t, p: {"--helpfulness_data": p["safety"], "--helpfulness_format": "hh-rlhf"},
         ("pku_train.jsonl", "pku")),
    Case("reward_model", "the only pair too long",
         lambda t, p: {"--helpfulness_data": write(t, "hh.jsonl", lines(hh("a?", "yes " * 400, "no"))),
                       "--other_share": "0.5"},
         ("hh.jsonl", "max_length")),
    Case("reward_model", "the only pair 3 MB",
         lambda t, p: {"--helpfulness_data": write(t, "hh.jsonl", lines(hh("a?", "yes " * 750_000, "no"))),
                       "--other_share": "0.5", "--on_long": "raise"},
         ("hh.jsonl", "pair 0", "characters", "max_length=256")),
    Case("rejection_sampling", "a 3 MB prompt",
         data_file("--prompts", "prompts.jsonl", lines({**PROMPT, "prompt": "word " * 600_000})),
         ("prompt a", "characters", "new tokens")),
    Case("reward_model", "eval data missing",
         lambda t, p: {"--eval_data": str(t / "nope.jsonl")}, ("eval_data", "nope.jsonl")),
    Case("reward_model", "hub name offline",
         lambda t, p: {"--helpfulness_data": "someone/pairs"}, ("someone/pairs",)),
    # --- prompts ----------------------------------------------------------------------------------------------------
    Case("rejection_sampling", "repeated ids",
         data_file("--prompts", "prompts.jsonl", lines(PROMPT, PROMPT)), ("prompts.jsonl", "line 2", "id")),
    Case("rejection_sampling", "is_safety a string",
         data_file("--prompts", "prompts.jsonl", lines({**PROMPT, "is_safety": "false"})),
         ("prompts.jsonl", "line 1", "is_safety")),
    Case("rejection_sampling", "message without a role",
         data_file("--prompts", "prompts.jsonl", lines({"id": "a", "prompt": [{"content": "hi"}]})),
         ("prompts.jsonl", "line 1", "role")),
    Case("rejection_sampling", "ends on an answer",
         data_file("--prompts", "prompts.jsonl", lines({"id": "a", "prompt": [QUESTION, ANSWER]})),
         ("prompts.jsonl", "line 1")),
    Case("rejection_sampling", "not utf-8",
         data_file("--prompts", "prompts.jsonl", json.dumps(PROMPT).encode() + b"\n\xff\n"),
         ("prompts.jsonl", "line 2", "UTF-8")),
    Case("rejection_sampling", "empty file", data_file("--prompts", "prompts.jsonl", "\n"), ("prompts.jsonl",)),
    Case("rejection_sampling", "prompt a number",
         data_file("--prompts", "prompts.jsonl", lines({"id": "a", "prompt": 7})),
         ("prompts.jsonl", "line 1", "prompt")),
    Case("ppo", "repeated ids",
         data_file("--prompts", "prompts.jsonl", lines(PROMPT, PROMPT)), ("prompts.jsonl", "line 2", "id")),
    Case("ppo", "prompts missing", lambda t, p: {"--prompts": str(t / "nope.jsonl")}, ("prompts", "nope.jsonl")),
    Case("ppo", "ends on an answer",
         data_file("--prompts", "prompts.jsonl", lines({"id": "a", "prompt": [QUESTION, ANSWER]})),
         ("prompts.jsonl", "line 1", "must end with a user turn")),
    Case("rlhf_round", "eval prompt without a role",
         data_file("--eval_prompts", "eval.jsonl", lines({"id": "a", "prompt": [{"content": "hi"}]})),
         ("eval.jsonl", "line 1", "role")),
    Case("rlhf_round", "a round's annotated pairs not utf-8",
         lambda t, p: {"--helpfulness_pairs": write(t, "hh_round1.jsonl", b"\xff\n").replace("1.j", "{round}.j")},
         ("hh_round1.jsonl", "line 1", "UTF-8")),
    Case("rlhf_round", "base preference data with a bad record",
         data_file("--helpfulness_data", "hh.jsonl", NO_REJECTED),
         ("hh.jsonl", "record 1", "rejected")),
    Case("rlhf_round", "stage yaml a batch of 2.5",
         stage_yaml("rs", "finetune_batch_size: 2.5\n"), ("rs.yaml", "finetune_batch_size", "2.5")),
    Case("rlhf_round", "a reward model larger tokenizer",
         lambda t, p: {"--safety_rm": model_copy(t, p["safety_rm"], damage=small_vocabulary)},
         ("safety_rm", "vocabulary", "100")),
    # --- a full disk: refused before any work, saying how much space a checkpoint needs ------------------------------
    Case("pretrain", "disk full", lambda t, p: {}, ("output_dir", "1.0 MB free", "a checkpoint"), full_disk=True),
    Case("sft", "disk full", lambda t, p: {}, ("output_dir", "1.0 MB free", "a checkpoint"), full_disk=True),
    Case("ppo", "disk full", lambda t, p: {}, ("output_dir", "1.0 MB free", "a checkpoint"), full_disk=True),
    # --- reward specs -----------------------------------------------------------------------------------------------
    Case("rejection_sampling", "reward spec not json", lambda t, p: {"--reward": "{combine: min", **NO_RMS},
         ("reward", "JSON")),
    Case("rejection_sampling", "a reward spec and reward model options", lambda t, p: {"--reward": "x.yaml"},
         ("reward", "leave helpfulness_rm and safety_rm unset")),
    Case("ppo", "reward function not importable",
         lambda t, p: {"--reward": '{"combine": "min", "sources": {"f": {"function": "no_such_module:f"}}}',
                       "--shared_value_head": "true", **NO_RMS}, ("reward: sources: f", "no_such_module")),
    Case("rejection_sampling", "reward spec file missing",
         lambda t, p: {"--reward": str(t / "reward.yaml"), **NO_RMS}, ("reward", "reward.yaml")),
    Case("ppo", "no value model to start from",
         lambda t, p: {"--reward": '{"combine": "min", "sources": {"f": {"url": "http://127.0.0.1:9/x"}}}', **NO_RMS},
         ("value_model", "shared_value_head")),
    Case("rlhf_round", "a reward spec in a rounds stage",
         stage_yaml("rs", "reward: {combine: min, sources: {a: {model: x}}}\n"),
         ("rs.yaml", "reward", "the rounds' reward spec is theirs (--reward)")),
    Case("rlhf_round", "a rounds reward spec with an unknown round model",
         lambda t, p: {"--reward": ROUND_GATE.replace("round:safety", "round:quality")},
         ("reward: sources: safety: model", "round:helpfulness or round:safety", "round:quality")),
    Case("rlhf_round", "a rounds reward spec with a missing model folder",
         lambda t, p: {"--reward": ROUND_GATE.replace("}}}", f'}}, "judge": {{"model": "{t / "judge"}"}}}}}}')},
         ("reward: sources: judge", "judge")),
    Case("rlhf_round", "a rounds reward spec with a function not importable",
         lambda t, p: {"--reward": ROUND_GATE.replace("}}}", '}, "f": {"function": "no_such_module:f"}}}')},
         ("reward: sources: f", "no_such_module")),
    Case("rlhf_round", "an AI annotator with annotated pair files", lambda t, p: {"--annotator": f"rm:{p['safety_rm']}"},
         ("annotator: labels a round's comparison batch", "helpfulness_pairs / safety_pairs")),
    Case("rlhf_round", "an annotator of an unknown kind", lambda t, p: {"--annotator": "robot:x"},
         ("annotator: expected 'human', 'judge:<chat model dir>' or 'rm:<reward model dir>'", "robot:x")),
    Case("rlhf_round", "a judge annotator folder missing", lambda t, p: {"--annotator": f"judge:{t / 'judge'}", **ANNOTATED_BY_A_MODEL},
         ("annotator", "judge")),
    Case("rlhf_round", "an annotator template missing",
         lambda t, p: {"--annotator": f"judge:{p['sft_model']}", "--annotator_template": str(t / "judge.txt"),
                       **ANNOTATED_BY_A_MODEL},
         ("annotator_template: no file at", "judge.txt")),
    Case("rlhf_round", "a rounds guard judge that is optimised",
         lambda t, p: {"--reward": ROUND_GATE, "--ppo.guard_judge": "safety"}, ("guard_judge", "'safety'", "weight 0")),
    # --- the rounds -------------------------------------------------------------------------------------------------
    Case("rlhf_round", "stage yaml value of the wrong type",
         stage_yaml("rs", "temperature: hot\n"), ("rs.yaml", "temperature")),
    Case("rlhf_round", "stage yaml unknown key", stage_yaml("ppo", "kl: 0.1\n"), ("ppo.yaml", "kl")),
    Case("rlhf_round", "stage yaml lr a list", stage_yaml("rm", "lr: [1, 2]\n"), ("rm.yaml", "lr")),
    Case("rlhf_round", "stage yaml out of range", stage_yaml("ppo", "kl_coef: -5\n"), ("ppo.yaml", "kl_coef")),
    Case("rlhf_round", "override out of range", lambda t, p: {"--ppo.cliprange": "-1"}, ("cliprange",)),
    Case("rlhf_round", "repeated prompt ids",
         data_file("--prompts", "prompts.jsonl", lines(PROMPT, PROMPT)), ("prompts.jsonl", "line 2", "id")),
    Case("rlhf_round", "sft model truncated",
         damaged("--sft_model", truncate_weights, "sft_model"), ("sft_model", "model.safetensors")),
    Case("rlhf_round", "a causal LM as reward model",
         lambda t, p: {"--helpfulness_rm": p["sft_model"]}, ("helpfulness_rm", "not a reward model")),
    Case("rlhf_round", "eval pairs missing",
         lambda t, p: {"--safety_eval_pairs": str(t / "nope.jsonl")}, ("nope.jsonl",)),
    Case("rlhf_round", "eval pairs not utf-8",
         data_file("--helpfulness_eval_pairs", "hh.jsonl", b"\xff\n"), ("hh.jsonl", "line 1", "UTF-8")),
    Case("rlhf_round", "round below 1", lambda t, p: {"--round": "-1"}, ("round: must be at least 1",)),
    # --- an output folder that holds the user's files: never written into, never removed -------------------------------
    *[Case(recipe, "output folder holds the user's files", lambda t, p: {}, ("output_dir", "notes.txt", "did not write"),
           foreign=True) for recipe in ("pretrain", "sft", "reward_model", "rejection_sampling", "ppo")],
    Case("rlhf_round", "run folder holds the user's files", lambda t, p: {}, ("mine", "notes.txt", "did not write"),
         foreign=True),
    Case("rlhf_round", "stage yaml not utf-8",
         lambda t, p: {"--ppo_config": write(t, "ppo.yaml", b"lr: 1 # \xe9\n")}, ("ppo.yaml", "UTF-8")),
]
# fmt: on


@pytest.fixture(scope="module")
def project(user_models, tmp_path_factory):
    data, models = user_models
    folder = tmp_path_factory.mktemp("bad_input_project")
    texts = [json.dumps({"text": " ".join(["the hammer drives the nail into the wood"] * 4)}) for _ in range(20)]
    return {
        **data,
        "texts": write(folder, "texts.jsonl", "\n".join(texts) + "\n"),
        "sft_model": models["sft"],
        "helpfulness_rm": models["helpfulness"],
        "safety_rm": models["safety"],
        "stages": write_stage_yamls(folder / "stages"),
    }


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    if folder.is_file():
        return {"": (folder.stat().st_size, folder.stat().st_mtime_ns)}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def run_recipe(recipe: str, options: dict, monkeypatch) -> int:
    """Run recipes/<recipe>.py in this process with `options`; its exit status (an exception escapes)."""
    argv = [item for option, value in options.items() if value is not None for item in (option, value)]
    monkeypatch.setattr(sys, "argv", [f"{recipe}.py", *argv])
    try:
        runpy.run_path(str(ROOT / "recipes" / f"{recipe}.py"), run_name="__main__")
    except SystemExit as exit:
        return exit.code
    return 0


@pytest.mark.parametrize("case", CASES, ids=[f"{c.recipe}: {c.name}" for c in CASES])
def test_bad_input_gives_one_line_naming_it_and_writes_nothing(case, project, tmp_path, monkeypatch, capsys):
    out = tmp_path / ("mine" if case.recipe == "rlhf_round" else "out")
    options = base_options(case.recipe, project, out)
    options.update(case.change(tmp_path, project))
    if case.foreign:
        write(out, "notes.txt", "the user's notes")
    before = snapshot(out) if case.keep_out or case.foreign else None
    if case.full_disk:
        from collections import namedtuple

        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**40, 2**40 - 2**20, 2**20))
    status = run_recipe(case.recipe, options, monkeypatch)
    captured = capsys.readouterr()
    stderr = captured.err
    errors = [line for line in stderr.splitlines() if line.startswith(f"{case.recipe}.py: error: ")]
    assert status == 2 and len(errors) == 1, (
        f"exit status {status}, error lines {errors}: {stderr[-1000:]}\nstdout: {captured.out[-1000:]}"
    )
    message = errors[0].removeprefix(f"{case.recipe}.py: error: ")
    print(f"{case.recipe}: {case.name}: {message}", file=sys.__stdout__)
    for part in case.expect:
        assert part in message, f"{part!r} not named in: {message}"
    assert "Traceback" not in stderr
    if case.keep_out or case.foreign:
        assert snapshot(out) == before, "the existing output folder was changed"
    else:
        assert not out.exists(), f"written: {sorted(p.name for p in out.iterdir())}"
