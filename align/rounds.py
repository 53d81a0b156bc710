"""Iterative RLHF rounds (docs/method.md §8): the orchestrator behind `recipes/rlhf_round.py --round N`.

Round 0 is pretraining + SFT (run once, cached) or a given chat model. Round N >= 1:

1. `collect`: new preference pairs from the latest policy (in the world: two sampled answers per prompt,
   labelled by its simulated annotator; on real data: the round's annotated files, or a comparison batch
   written for annotators, `round-N/collect/to_annotate.jsonl`, whose labelled copy `annotated.jsonl` becomes
   the round's pairs on the next run; `align.annotation`);
2. `reward_model_helpfulness`, `reward_model_safety`: both reward models trained on all batches collected so
   far: from the SFT model with the base data too (`reward_model_init: sft`, the paper), or continuing the
   previous round's models (`previous`, the default: round 0 trains base RMs on the base data once, cached,
   like pretraining and SFT; each round then costs one short pass over the batches);
3. `rejection_sampling`: best-of-K with the new reward models, then SFT of the latest policy on the kept
   answers of this round pooled with every earlier round's (`rejection_sampling/sft/final`);
4. `ppo` (from round `ppo_from_round`): PPO from the rejection-sampled model, pi_0 being that model;
   steps 3 and 4 score with the Llama 2 gate over the round's reward models, or with the rounds' reward spec
   (`reward`, `align.reward_sources`), where `round:helpfulness` / `round:safety` name them;
5. `evaluate`: the round's policy judged by `evaluate_round` (supplied by the recipe from `eval/`) with
   `Rounds.evaluation_setup()`: in the world, the gold scorers on held-out prompts; on real data, judges the
   policy was never optimised against (held-out "meta" reward models trained once on the held-out pairs, Llama 2
   §3.4.1, or judge models the user gives), reward-model accuracy on the user's held-out pairs.

The world only when asked (`align.sources`): with none of the data options (`USER_INPUTS`) the rounds are
the demo, every input the world's. As soon as one is given (a chat model, preference files, prompts...) every
other input a run needs must be given too (each may be "world" explicitly), or the run stops before any work
with one line naming the missing option. The inputs and their content hashes go into `manifest.json`.

Stage settings come from each stage's YAML file, and any of them can be overridden on the command line as
`--<stage>.<field> VALUE` (`--ppo.lr 1e-6`; stages in `STAGE_CONFIGS`) or in the rounds' YAML under
`overrides:`; the fields the rounds chain (checkpoints, data, output folders, seeds) are theirs alone.

Every stage writes under `<runs_dir>/<name>/round-N/<stage>/` and ends with a completion marker
(`ROUND_STAGE_DONE.json`); a rerun skips finished stages and resumes an unfinished one from its own
checkpoints. `manifest.json` records, per stage, its config, seed, parent checkpoint, output and metrics, plus
the package versions and the data sources.

Under `accelerate launch` with several processes, the training stages (pretraining, SFT, reward models,
rejection sampling, PPO) run on every process, split as their own recipes split them. `collect` in the world
samples and labels the two data sets on two processes (each set has its own seeded stream, so the pairs are
those of one process); pairs from files or annotations are read by the main process. `evaluate` splits its
greedy answers over the processes by whole generate batches (`eval_batch_size` prompts, padded as on one
process, so the answers are the same) and judges on the main process. Markers and the manifest are written by
the main process, so `runs_dir` must be one folder every process sees (a shared file system across nodes).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from .ai_feedback import HUMAN, parse_annotator
from .benchmarks import BENCHMARKS_HELP, INCLUDE_HELP, LIMIT_HELP, check_tasks, parse_tasks
from .checkpoint import (
    DONE_MARKER,
    RunFolderError,
    check_vocabulary,
    is_done,
    mark_done,
    recorded_config,
    require_model_dir,
    require_reward_model_dir,
)
from .config import ConfigError, check_field_types, coerce_field_value, load_yaml_config
from .data.preferences import FORMATS
from .io import TABLE_SUFFIXES, atomic_write_jsonl, atomic_write_text, read_json_object, read_jsonl
from .reward_sources import FunctionSource, parse_reward_spec
from .sources import WORLD, describe_source, describe_sources, split_sources

# A round's stage is done when this marker exists; the stage's own run (e.g. its DONE.json) may finish earlier,
# as rejection sampling does before its fine-tune.
ROUND_STAGE_MARKER = "ROUND_STAGE_DONE.json"
STAGES = ("collect", "reward_model_helpfulness", "reward_model_safety", "rejection_sampling", "ppo", "evaluate")
TARGETS = ("helpfulness", "safety")
RoundEvaluator = Callable[[int, dict[str, Path], Path, dict[str, Any]], dict[str, Any]]

# The options that make a run one on the user's model or data (module docstring).
USER_INPUTS = (
    "sft_model", "helpfulness_rm", "safety_rm", "helpfulness_data", "safety_data", "helpfulness_pairs",
    "safety_pairs", "prompts", "eval_prompts", "helpfulness_eval_pairs", "safety_eval_pairs",
    "judge_helpfulness_rm", "judge_safety_rm",
)  # fmt: skip

# The demo's rejection-sampling temperature per round: the first round's samples at 1.0 hold the refusals and
# broken formats the reward models see; from round 2 the 10M policy's samples at 1.0 are often garbled and the
# reward models' pick of them scores below the policy's own greedy answer (docs/world.md, "Why the rounds stop
# improving"), so later rounds sample closer to the policy's mode.
DEMO_TEMPERATURES = "1.0,0.7"

# `--<stage>.<field>` overrides: the stage's config class, by the prefix the command line uses.
STAGE_CONFIGS = {
    "pretrain": ("align.pretrain", "PretrainConfig"),
    "sft": ("align.sft", "SFTConfig"),
    "helpfulness_rm": ("align.reward_model", "RewardModelConfig"),
    "safety_rm": ("align.reward_model", "RewardModelConfig"),
    "rm_update": ("align.reward_model", "RewardModelConfig"),
    "judge": ("align.reward_model", "RewardModelConfig"),
    "rejection_sampling": ("align.rejection_sampling", "RejectionSamplingConfig"),
    "ppo": ("align.ppo", "PPOConfig"),
}
# In the rounds' reward spec, `model: round:helpfulness` (or `round:safety`) is that reward model of each round.
ROUND_MODEL = "round:"
ROUNDS_REWARD_HELP = (
    "how rejection sampling and PPO score answers in every round: a reward spec (a mapping, JSON or .yaml file, "
    "as `align ppo` takes) whose sources may be `{model: round:helpfulness}` / `{model: round:safety}`, the "
    "round's own reward models, besides functions, servers and fixed models (default: the Llama 2 gate over the "
    "round's two reward models)"
)
# Fields the rounds set on every stage they chain; an override of one is refused.
CHAINED_FIELDS = {
    "model", "target", "output_dir", "policy", "reference", "helpfulness_rm", "safety_rm", "dataset",
    "helpfulness_data", "safety_data", "eval_data", "prompts", "world_seed", "world_prompt_seed", "seed",
    "data_format", "helpfulness_format", "safety_format", "eval_format", "reward",
}  # fmt: skip
OVERRIDES_HELP = (
    "stage settings over their YAML files, '--<stage>.<field> VALUE' on the command line (e.g. --ppo.lr 1e-6, "
    f"--rejection_sampling.num_samples 4) or a mapping here; stages: {', '.join(STAGE_CONFIGS)}"
)


def stage_config_class(stage: str) -> type:
    module, name = STAGE_CONFIGS[stage]
    return getattr(importlib.import_module(module), name)


class AnnotationNeeded(RuntimeError):
    """A round on real data waits for its comparison batch to be labelled; the message says what to do."""


@dataclass
class RoundsConfig:
    """Settings of a run of rounds; each stage's own settings live in the YAML file named here."""

    shipped_configs = "rlhf_round"  # `--config NAME`: align/configs/rlhf_round/NAME.yaml (not a field)

    round: int = field(default=1, metadata={"help": "run rounds 1..N (missing earlier rounds run first)"})
    name: str = field(default="demo", metadata={"help": "run name: outputs under <runs_dir>/<name>/"})
    runs_dir: str = field(default="runs", metadata={"help": "folder of all runs"})
    sft_model: str | None = field(
        default=None, metadata={"help": "your chat model (skips round 0's pretraining and SFT on the world)"}
    )
    pretrain_config: str = field(default="recipes/configs/pretrain/world_small.yaml", metadata={"help": "round 0"})
    sft_config: str = field(default="recipes/configs/sft/world_small.yaml", metadata={"help": "round 0"})
    helpfulness_rm_config: str = field(
        default="recipes/configs/reward_model/world_small_helpfulness.yaml", metadata={"help": "YAML: base RM"}
    )
    safety_rm_config: str = field(
        default="recipes/configs/reward_model/world_small_safety.yaml", metadata={"help": "YAML: base RM"}
    )
    reward_model_init: str = field(
        default="previous",
        metadata={"help": "each round's RMs start from: 'sft' (the paper: the chat model, retrained on every batch "
                  "plus the base data) or 'previous' (the last round's RMs, round 0 = the base RMs, trained on "
                  "every batch so far; far cheaper)"},
    )  # fmt: skip
    rm_update_config: str = field(
        default="recipes/configs/rlhf_round/reward_model_update.yaml",
        metadata={"help": "YAML: the per-round RM training of reward_model_init=previous"},
    )
    helpfulness_rm: str | None = field(default=None, metadata={"help": "base helpfulness RM (skips training it)"})
    safety_rm: str | None = field(default=None, metadata={"help": "base safety RM (skips training it)"})
    helpfulness_data: str | None = field(
        default=None, metadata={"help": "real data: base helpfulness pairs (files or datasets) of the base RMs"}
    )
    safety_data: str | None = field(
        default=None, metadata={"help": "real data: base safety pairs (files or datasets) of the base RMs"}
    )
    helpfulness_format: str = field(
        default="auto", metadata={"help": f"format of helpfulness_data, one of {list(FORMATS)}"}
    )
    safety_format: str = field(default="auto", metadata={"help": f"format of safety_data, one of {list(FORMATS)}"})
    rejection_sampling_config: str = field(
        default="recipes/configs/rlhf_round/rejection_sampling.yaml", metadata={"help": "YAML"}
    )
    rejection_sampling_pool: str = field(
        default="all",
        metadata={"help": "the kept answers each round's rejection-sampling fine-tune trains on: 'all' (this "
                          "round's and every earlier round's, docs/method.md §6) or 'latest' (this round's only; "
                          "the policy it starts from already learnt the earlier ones)"},
    )  # fmt: skip
    rejection_sampling_temperatures: str | None = field(
        default=None,
        metadata={"help": "rejection sampling's temperature per round, comma-separated ('1.0,0.7': round 1 at 1.0, "
                          f"rounds 2.. at 0.7; the last repeats), over the YAML's (the paper rescales it per "
                          f"round, docs/method.md §6); default: the YAML's on your data, {DEMO_TEMPERATURES} in "
                          "the demo"},
    )  # fmt: skip
    ppo_config: str = field(default="recipes/configs/rlhf_round/ppo.yaml", metadata={"help": "YAML"})
    ppo_from_round: int = field(
        default=3,
        metadata={"help": "first round with PPO on top of rejection sampling (the paper: 4, as the 7b configs; 3 "
                          "here so that the documented three rounds run every stage)"},
    )  # fmt: skip
    prompts: str | None = field(
        default=None, metadata={"help": "real data: training prompts of rejection sampling, PPO and the comparison "
                                        "batches (JSONL of {id, prompt, is_safety})"}
    )  # fmt: skip
    eval_prompts: str | None = field(
        default=None, metadata={"help": "real data: held-out prompts the rounds are judged on (JSONL, as prompts)"}
    )
    helpfulness_eval_pairs: str | None = field(
        default=None, metadata={"help": "real data: held-out helpfulness pairs (RM accuracy; trains the judge)"}
    )
    safety_eval_pairs: str | None = field(
        default=None, metadata={"help": "real data: held-out safety pairs (RM accuracy; trains the judge)"}
    )
    eval_format: str = field(default="auto", metadata={"help": "format of the held-out pair files"})
    judge_helpfulness_rm: str | None = field(
        default=None, metadata={"help": "judge of win rates (default: trained once on the held-out pairs)"}
    )
    judge_safety_rm: str | None = field(
        default=None, metadata={"help": "judge of win rates and violations (default: trained on held-out pairs)"}
    )
    judge_config: str | None = field(
        default=None, metadata={"help": "YAML of the judges' training (default: the base RM configs)"}
    )
    world_seed: int = field(default=0, metadata={"help": "seed of the synthetic world"})
    world_eval_prompts: int = field(default=200, metadata={"help": "world test prompts judged after each round"})
    eval_batch_size: int = field(
        default=64, metadata={"help": "prompts per generate call of the evaluation (split over processes)"}
    )
    eval_max_new_tokens: int = field(
        default=128,
        metadata={"help": "longest answer the evaluation generates; the report's 'cut at limit' column says how many "
                          "reached it (the judges then saw them cut short)"},
    )  # fmt: skip
    benchmarks: str | None = field(default=None, metadata={"help": BENCHMARKS_HELP})
    benchmark_include_path: str | None = field(default=None, metadata={"help": INCLUDE_HELP})
    benchmark_limit: int | None = field(default=None, metadata={"help": LIMIT_HELP})
    eval_temperature: float = field(
        default=0.0, metadata={"help": "temperature of the evaluation's answers (0: greedy; else one seed per prompt)"}
    )
    diagnostic_samples: int = field(
        default=8,
        metadata={"help": "world only: answers sampled per held-out prompt to measure the policy's ceiling (oracle "
                          "best-of-K by gold), what the reward models' pick captures of it and their accuracy on "
                          "the policy's own pairs (align.world.diagnostics); 0 turns it off"},
    )  # fmt: skip
    pairs_per_round: int = field(
        default=400, metadata={"help": "prompts labelled per data set and round (world), or per comparison batch"}
    )
    collect_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the world collection"})
    annotation_temperatures: str = field(
        default="1.0,0.7", metadata={"help": "the two sampling temperatures of a comparison batch's answers"}
    )
    annotation_max_new_tokens: int = field(default=64, metadata={"help": "longest answer of a comparison batch"})
    min_new_pairs: int = field(
        default=1,
        metadata={"help": "fewest usable new pairs per data set a round trains on; fewer (e.g. a judge whose answers "
                          "did not parse) stops the round before any training, exit status 3"},
    )  # fmt: skip
    helpfulness_pairs: str | None = field(
        default=None, metadata={"help": "real data: each round's annotated helpfulness pairs, '{round}' in path "
                                        "(default: the labelled comparison batch; 'world': the world's annotator)"}
    )  # fmt: skip
    safety_pairs: str | None = field(
        default=None, metadata={"help": "real data: each round's annotated safety pairs, '{round}' in path"}
    )
    pairs_format: str | None = field(
        default=None, metadata={"help": f"format of the annotated pair files, one of {list(FORMATS)} (default: "
                                        "helpfulness_format / safety_format)"}
    )  # fmt: skip
    reward: dict | str | None = field(default=None, metadata={"help": ROUNDS_REWARD_HELP})
    annotator: str = field(
        default="human",
        metadata={"help": "who labels a round's comparison batch on real data: human (align annotate, or any "
                          "tool writing annotated.jsonl), judge:<chat model dir> or rm:<reward model dir> (AI "
                          "feedback, align.ai_feedback), or one judge per data set: "
                          "rm:helpfulness=<dir>,safety=<dir>"},
    )  # fmt: skip
    annotator_template: str | None = field(
        default=None, metadata={"help": "the judge's prompt template (default: align/templates/judge_prompt.txt)"}
    )
    overrides: dict | str | None = field(default=None, metadata={"help": OVERRIDES_HELP})
    seed: int = field(default=0, metadata={"help": "run seed (each round derives its own)"})

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.round < 1:
            raise ValueError(f"round: must be at least 1, got {self.round}")
        if self.ppo_from_round < 1:
            raise ValueError(f"ppo_from_round: must be at least 1, got {self.ppo_from_round}")
        if (self.helpfulness_pairs is None) != (self.safety_pairs is None):
            raise ValueError("helpfulness_pairs and safety_pairs: give both (real data) or neither")
        for name in ("helpfulness_pairs", "safety_pairs"):
            value = getattr(self, name)
            if value is not None and value != WORLD and "{round}" not in value:
                raise ValueError(f"{name}: expected a path with '{{round}}' in it (or 'world'), got {value!r}")
        if (self.helpfulness_pairs == WORLD) != (self.safety_pairs == WORLD):
            raise ValueError("helpfulness_pairs and safety_pairs: 'world' for both (the world's annotator) or neither")
        if self.rejection_sampling_temperatures is not None:
            try:
                temperatures = [float(t) for t in self.rejection_sampling_temperatures.split(",")]
            except ValueError:
                temperatures = []
            if not temperatures or not all(0 < t < math.inf for t in temperatures):
                raise ValueError("rejection_sampling_temperatures: expected positive numbers like '1.0,0.7', got "
                                 f"{self.rejection_sampling_temperatures!r}")  # fmt: skip
        if self.rejection_sampling_pool not in ("all", "latest"):
            raise ValueError(
                f"rejection_sampling_pool: expected 'all' or 'latest', got {self.rejection_sampling_pool!r}"
            )
        if self.reward_model_init not in ("sft", "previous"):
            raise ValueError(f"reward_model_init: expected 'sft' or 'previous', got {self.reward_model_init!r}")
        for name in ("pairs_per_round", "world_eval_prompts", "eval_batch_size", "eval_max_new_tokens",
                     "annotation_max_new_tokens", "min_new_pairs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.eval_temperature < 0:
            raise ValueError(f"eval_temperature: must be 0 (greedy) or positive, got {self.eval_temperature}")
        if self.diagnostic_samples == 1 or self.diagnostic_samples < 0:
            raise ValueError(f"diagnostic_samples: 0 (off) or at least 2, got {self.diagnostic_samples}")
        for name in ("helpfulness_format", "safety_format", "eval_format", "pairs_format"):
            if getattr(self, name) is not None and getattr(self, name) not in FORMATS:
                raise ValueError(f"{name}: expected one of {list(FORMATS)}, got {getattr(self, name)!r}")
        try:
            temperatures = tuple(float(t) for t in self.annotation_temperatures.split(","))
        except ValueError:
            temperatures = ()
        if len(temperatures) != 2 or min(temperatures) <= 0:
            raise ValueError(f"annotation_temperatures: expected two positive numbers like '1.0,0.7', got "
                             f"{self.annotation_temperatures!r}")  # fmt: skip
        self.overrides = parse_overrides(self.overrides)
        if self.rejection_sampling_temperatures is not None and "temperature" in self.overrides.get(
            "rejection_sampling", {}
        ):
            raise ValueError("--rejection_sampling.temperature: give it or rejection_sampling_temperatures, not both")
        self.reward = parse_rounds_reward(self.reward)
        if parse_annotator(self.annotator)[0] != HUMAN and (not self.on_user_data or self.helpfulness_pairs):
            # Only a comparison batch is annotated; files or the world's annotator would leave the option unused.
            raise ValueError(
                "annotator: labels a round's comparison batch, which a run with helpfulness_pairs / safety_pairs "
                "does not write (leave them out to have the batch labelled)" if self.helpfulness_pairs else
                "annotator: labels the comparison batch of a run on your data; the demo's pairs are labelled by "
                "the world's annotator"
            )  # fmt: skip
        if self.annotator_template is not None and not Path(self.annotator_template).is_file():
            raise FileNotFoundError(f"annotator_template: no file at {self.annotator_template}")
        if self.on_user_data:
            self.check_user_inputs()

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def on_user_data(self) -> bool:
        """Whether any input is the user's (module docstring); False: the demo, every input the world's."""
        given = [getattr(self, name) for name in USER_INPUTS] + [getattr(self, "from_hub", None)]
        return any(value and value != WORLD for value in given)

    def check_user_inputs(self) -> None:
        """ValueError naming the first input a run on the user's model or data lacks."""
        world_hint = "; or 'world' to use the demo's"
        if not (self.sft_model or getattr(self, "from_hub", None)):
            raise ValueError(
                "sft_model: required when the rounds run on your own data: your chat model (align sft "
                "makes one); leave out every data option for the demo"
            )
        needed = {
            "prompts": "training prompts (JSONL of {id, prompt, is_safety})",
            "eval_prompts": "held-out prompts to judge each round on",
            "helpfulness_eval_pairs": "held-out helpfulness pairs (reward-model accuracy, the judge)",
            "safety_eval_pairs": "held-out safety pairs (reward-model accuracy, the judge)",
        }
        for target in TARGETS:
            if self.reward_model_init == "sft" or not getattr(self, f"{target}_rm"):
                needed[f"{target}_data"] = f"base {target} pairs of the {target} reward model" + (
                    "" if self.reward_model_init == "sft" else f" (or {target}_rm: a trained one)"
                )
        for name, what in needed.items():
            if not getattr(self, name):
                raise ValueError(f"{name}: required when the rounds run on your own model or data: {what}"
                                 f"{world_hint if name != 'sft_model' else ''}")  # fmt: skip
        if self.sft_model == WORLD:
            raise ValueError("sft_model: expected a checkpoint directory, got 'world'")

    def input_sources(self) -> dict[str, list[str]]:
        """Every data input of the run, as `align.sources.describe_source` writes them (for the manifest)."""
        if not self.on_user_data:
            return {"all": [f"world(seed={self.world_seed})"]}
        names = ("sft_model", "helpfulness_rm", "safety_rm", "helpfulness_data", "safety_data", "prompts",
                 "eval_prompts", "helpfulness_eval_pairs", "safety_eval_pairs", "judge_helpfulness_rm",
                 "judge_safety_rm")  # fmt: skip
        sources = {
            name: describe_sources(getattr(self, name), self.world_seed) for name in names if getattr(self, name)
        }
        for name in ("helpfulness_pairs", "safety_pairs"):
            if getattr(self, name):
                value = getattr(self, name)
                sources[name] = [f"world(seed={self.world_seed}) annotator" if value == WORLD else value]
        return sources


def parse_overrides(value: dict | str | None) -> dict[str, dict[str, Any]]:
    """The `overrides` mapping checked: known stages, their fields, values of the fields' types."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(f"overrides: expected a JSON mapping of stage -> settings, got {value!r}") from None
    value = value or {}
    if not isinstance(value, dict):
        raise ValueError(f"overrides: expected a mapping of stage -> settings, got {value!r}")
    checked = {}
    for stage, settings in value.items():
        if stage not in STAGE_CONFIGS:
            raise ValueError(f"--{stage}.*: unknown stage {stage!r}, expected one of {list(STAGE_CONFIGS)}")
        if not isinstance(settings, dict):
            raise ValueError(f"overrides: {stage}: expected a mapping of settings, got {settings!r}")
        config_class = stage_config_class(stage)
        known = {f.name for f in dataclasses.fields(config_class)}
        checked[stage] = {}
        for key, setting in settings.items():
            if key not in known:
                raise ValueError(f"--{stage}.{key}: {config_class.__name__} has no field {key!r}")
            if key in CHAINED_FIELDS:
                raise ValueError(f"--{stage}.{key}: set by the rounds for each round; use the rounds' own options")
            checked[stage][key] = coerce_field_value(config_class, key, setting, f"--{stage}.{key}")
    return checked


class Manifest:
    """`manifest.json` of a run: per round and stage, what ran, from what, and what it measured."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = read_json_object(path, ("rounds",)) if path.is_file() else {"rounds": {}}
        self.data["versions"] = package_versions()  # this run's; each stage also keeps the versions it ran under

    def record(self, round_number: int, stage: str, **facts: Any) -> None:
        # A run resumed or extended under newer packages keeps what each earlier stage was trained with.
        self.data["rounds"].setdefault(str(round_number), {})[stage] = {**facts, "versions": self.data["versions"]}
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    versions = {"align": __version__}  # by import: the distribution is align-rlhf
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def stage_config(config_class: type, yaml_path: str, overrides: dict[str, Any] | None = None, **chained: Any) -> Any:
    """A stage's config: its YAML file, the command line's overrides, then the fields the rounds chain."""
    values = load_yaml_config(yaml_path, config_class)
    return config_class(**{**values, **(overrides or {}), **chained})


def stage_done_facts(folder: Path) -> dict[str, Any]:
    """The data sources a stage recorded in its DONE.json, for the manifest."""
    done = folder / DONE_MARKER
    sources = json.loads(done.read_text()).get("data_sources") if done.is_file() else None
    return {"data_sources": sources} if sources else {}


def round_model_target(source: dict[str, Any]) -> str | None:
    """The target a source's `model: round:<target>` names (the round's own reward model), else None."""
    model = source.get("model", "")
    return model[len(ROUND_MODEL) :] if model.startswith(ROUND_MODEL) else None


def parse_rounds_reward(value: Any) -> dict[str, Any] | None:
    """The rounds' reward spec as a mapping (a file or JSON read once, so the manifest records what was used),
    or None for the default; ValueError naming a bad spec or a `round:` model that is not a target."""
    if value in (None, "", {}):
        return None
    spec = parse_reward_spec(value)
    for name, source in spec.sources.items():
        if round_model_target(source) not in (None, *TARGETS):
            raise ValueError(f"reward: sources: {name}: model: expected {' or '.join(ROUND_MODEL + t for t in TARGETS)}"
                             f" (the round's reward model) or a folder, got {source['model']!r}")  # fmt: skip
    return {"combine": spec.combine, "sources": spec.sources}


def require_own_run_dir(run_dir: Path) -> None:
    """RunFolderError when `run_dir` holds files but no run of the rounds (`manifest.json`, `round-N/`): the
    rounds write and move stage folders there, so they start only in a new, empty or earlier run folder."""
    if not run_dir.is_dir() or (run_dir / "manifest.json").is_file():
        return
    names = sorted(child.name for child in run_dir.iterdir())
    if names and not any(re.fullmatch(r"round-\d+", name) for name in names):
        raise RunFolderError(
            f"run folder {run_dir}: already holds files align did not write ({', '.join(names[:3])}); give another "
            "--name or --runs_dir (align never removes what it did not write)"
        )


class Rounds:
    """Runs rounds 1..N of a run, skipping finished stages; see the module docstring."""

    def __init__(self, config: RoundsConfig, evaluate_round: RoundEvaluator | None = None) -> None:
        self.config = config
        self.evaluate_round = evaluate_round
        self.run_dir = config.run_dir
        self.processes = PartialState(cpu=not torch.cuda.is_available())
        self.check_stage_configs()  # before any work: a bad setting stops the run here
        require_own_run_dir(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.run_dir / "manifest.json")
        self._evaluation_setup: dict[str, Any] | None = None

    # -- bookkeeping ---------------------------------------------------------------------------------------

    def stage_dir(self, round_number: int, stage: str) -> Path:
        return self.run_dir / f"round-{round_number}" / stage

    def reward_fields(self, models: dict[str, Any]) -> dict[str, Any]:
        """What rejection sampling and PPO score with, given the round's reward models by target: the Llama 2
        gate over them (their `helpfulness_rm` / `safety_rm`), or the rounds' spec with its `round:<target>`
        models filled in."""
        if self.config.reward is None:
            return {"helpfulness_rm": str(models["helpfulness"]), "safety_rm": str(models["safety"]), "reward": None}
        sources = {
            name: {**source, "model": str(models[target])} if (target := round_model_target(source)) else source
            for name, source in self.config.reward["sources"].items()
        }
        return {"helpfulness_rm": "", "safety_rm": "", "reward": {**self.config.reward, "sources": sources}}

    def settings(self, stage: str, config_class: type, yaml_path: str, **chained: Any) -> Any:
        """The config of one stage: its YAML, the `--<stage>.<field>` overrides, what the rounds chain; a value
        the stage refuses is a ValueError naming the YAML file and the overrides it came from."""
        overrides = self.config.overrides.get(stage)
        try:
            return stage_config(config_class, yaml_path, overrides, **chained)
        except ConfigError:
            raise
        except ValueError as error:
            given = yaml_path + "".join(f" --{stage}.{key}" for key in overrides or {})
            raise ValueError(f"{stage} settings ({given}): {error}") from None

    def check_stage_configs(self) -> None:
        """Build every stage config the run will use, with placeholder checkpoints, so a bad YAML key, override
        or missing input stops the run before any work (ValueError naming it)."""
        from .ppo import PPOConfig
        from .rejection_sampling import RejectionSamplingConfig
        from .reward_model import RewardModelConfig

        config = self.config
        chained = dict(policy="-", output_dir="-", **self.reward_fields({target: "-" for target in TARGETS}))
        if not getattr(config, "from_hub", None):  # a pulled model arrives later
            if config.sft_model:
                require_model_dir(config.sft_model, "sft_model")
            for name in ("helpfulness_rm", "safety_rm", "judge_helpfulness_rm", "judge_safety_rm"):
                if getattr(config, name):
                    require_reward_model_dir(getattr(config, name), name)
        if parse_tasks(config.benchmarks):  # an unknown task, or no harness installed: said before any work
            check_tasks(parse_tasks(config.benchmarks), config.benchmark_include_path)
        kind, judges = parse_annotator(config.annotator)
        for target, path in (judges or {}).items():
            (require_model_dir if kind == "judge" else require_reward_model_dir)(path, f"annotator ({target})")
        for name, source in (config.reward or {}).get("sources", {}).items():  # servers are asked when scoring
            if "model" in source and not round_model_target(source):
                require_reward_model_dir(source["model"], f"reward: sources: {name}")
            if "function" in source:
                FunctionSource(source["function"], name)
        for name in ("prompts", "eval_prompts", "helpfulness_data", "safety_data", "helpfulness_eval_pairs",
                     "safety_eval_pairs"):  # fmt: skip
            for source in split_sources(getattr(config, name)):
                if Path(source).suffix in TABLE_SUFFIXES and not Path(source).is_file():
                    raise FileNotFoundError(f"{name}: no file at {source}")
        self.check_data_files()
        prompts = self.prompt_source()
        if not config.sft_model and not config.on_user_data:
            from .pretrain import PretrainConfig
            from .sft import SFTConfig

            self.settings("pretrain", PretrainConfig, config.pretrain_config, output_dir="-", dataset=WORLD)
            self.settings("sft", SFTConfig, config.sft_config, model="-", output_dir="-", dataset=WORLD)
        for target in TARGETS:
            data = self.reward_model_data(0, target) if not getattr(config, f"{target}_rm") else None
            if data is not None:
                self.settings(f"{target}_rm", RewardModelConfig, getattr(config, f"{target}_rm_config"),
                              model="-", target=target, output_dir="-", **data)  # fmt: skip
            if config.reward_model_init == "previous":
                self.settings("rm_update", RewardModelConfig, config.rm_update_config, model="-", target=target,
                              output_dir="-", helpfulness_data="-", safety_data="-", eval_data="-")  # fmt: skip
        for stage, config_class, path in (
            ("rejection_sampling", RejectionSamplingConfig, config.rejection_sampling_config),
            ("ppo", PPOConfig, config.ppo_config),
        ):
            if load_yaml_config(path, config_class).get("reward") is not None:
                raise ValueError(f"{path}: reward: the rounds' reward spec is theirs (--reward), with the round's "
                                 "reward models as round:helpfulness / round:safety")  # fmt: skip
            self.settings(stage, config_class, path, **chained, **prompts)  # also PPO before its first round

    def check_data_files(self) -> None:
        """Read every file of the user's the run will use (prompts, preference data, held-out pairs, the
        annotated pairs of rounds 1..N that are there) and check the given models fit the SFT model's
        tokenizer, so that a bad record or model stops the run before any work, not rounds later."""
        from .data import load_preferences, load_tokenizer
        from .prompts import load_prompts

        config = self.config
        for name in ("prompts", "eval_prompts"):
            for source in split_sources(getattr(config, name)):
                if source != WORLD:
                    load_prompts(source)
        for target in TARGETS:
            files = [(f"{target}_data", getattr(config, f"{target}_format")),
                     (f"{target}_eval_pairs", config.eval_format)]  # fmt: skip
            for name, file_format in files:
                for source in split_sources(getattr(config, name)):
                    if source != WORLD:
                        load_preferences(source, format=file_format, target=target, option=name)
            pattern = getattr(config, f"{target}_pairs")
            for n in range(1, config.round + 1) if pattern not in (None, WORLD) else ():
                if Path(pattern.format(round=n)).is_file():
                    load_preferences(pattern.format(round=n), target=target, option=f"{target}_pairs",
                                     format=config.pairs_format or getattr(config, f"{target}_format"))  # fmt: skip
        if config.sft_model and not getattr(config, "from_hub", None):
            tokenizer = load_tokenizer(config.sft_model)
            for name in ("sft_model", "helpfulness_rm", "safety_rm", "judge_helpfulness_rm", "judge_safety_rm"):
                if getattr(config, name):
                    check_vocabulary(tokenizer, getattr(config, name), name)

    def run_stage(self, round_number: int, stage: str, work: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Run `work(stage_dir)` on every process unless the stage is marked done; the main process marks it done
        with the facts its `work` returned and records it in the manifest. Returns the stage's recorded facts."""
        folder, main = self.stage_dir(round_number, stage), self.processes.is_main_process
        marker = folder / ROUND_STAGE_MARKER
        done = is_done(folder, ROUND_STAGE_MARKER)
        # Every process looks before any can go on: the main process may finish a stage whose work is its own
        # (reading pair files) and write its marker before a slow process has looked, which would then skip the
        # stage's closing barrier and leave the processes one collective apart (a hang until the group's timeout).
        self.processes.wait_for_everyone()
        if done:
            if main:
                print(f"[round {round_number}] {stage}: done in an earlier run, skipped ({folder})", flush=True)
            return json.loads(marker.read_text())
        if main:
            print(f"[round {round_number}] {stage} ...", flush=True)
        started = time.time()
        facts = work(folder)
        if main:
            facts["seconds"] = round(time.time() - started, 1)
            mark_done(folder, ROUND_STAGE_MARKER, **facts)
            self.manifest.record(round_number, stage, **facts)
        self.processes.wait_for_everyone()
        return json.loads(marker.read_text())

    def given(self, round_number: int, stage: str, path: str, option: str) -> Path:
        """A checkpoint the user gave for a stage (`option`), checked and recorded in the manifest (so that it
        is pushed with the rest)."""
        checkpoint = require_model_dir(path, option)
        if self.processes.is_main_process:
            self.manifest.record(round_number, stage, final=str(checkpoint), given=option)
        return checkpoint

    # -- the rounds --------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run every round up to `config.round`; returns the manifest. `self.policy` is then the last round's."""
        if self.processes.is_main_process:
            self.manifest.data["data_sources"] = self.config.input_sources()
            self.manifest.save()
            for name, sources in self.manifest.data["data_sources"].items():
                print(f"[rounds] {name}: {', '.join(sources)}", flush=True)
        self.policy = self.round_zero()
        if any(s != WORLD for t in TARGETS for s in split_sources(getattr(self.config, f"{t}_data"))):
            self.run_stage(0, "base_pairs", self.normalize_base_pairs)
        if self.config.reward_model_init == "previous":
            self.base_reward_models = {target: self.base_reward_model(target) for target in TARGETS}
        self.judges = self.judge_models()
        for round_number in range(1, self.config.round + 1):
            self.policy = self.run_round(round_number, self.policy)
        return Manifest(self.manifest.path).data  # as the main process wrote it

    def round_zero(self) -> Path:
        """The chat model every round starts from: given, or (the demo) pretrained + SFT on the world once under
        round-0/."""
        if self.config.sft_model:
            return self.given(0, "sft", self.config.sft_model, "sft_model")
        from .pretrain import PretrainConfig, pretrain
        from .sft import SFTConfig, sft

        pretrained = self.run_stage(0, "pretrain", lambda folder: {
            "final": str(pretrain(self.settings("pretrain", PretrainConfig, self.config.pretrain_config,
                                                output_dir=str(folder), dataset=WORLD))),
            "config": self.config.pretrain_config, **stage_done_facts(folder),
        })  # fmt: skip
        chat = self.run_stage(0, "sft", lambda folder: {
            "final": str(sft(self.settings("sft", SFTConfig, self.config.sft_config, model=pretrained["final"],
                                           output_dir=str(folder), dataset=WORLD))),
            "config": self.config.sft_config, "parent": pretrained["final"], **stage_done_facts(folder),
        })  # fmt: skip
        return Path(chat["final"])

    def normalize_base_pairs(self, folder: Path) -> dict[str, Any]:
        """The user's base preference files, each set read in its own format, saved once as TRL-format JSONL
        (`round-0/base_pairs/<target>.jsonl`) that every reward-model stage then reads ("world" stays as is)."""
        from .data import load_preferences

        counts, sources = {}, {}
        for target in TARGETS:
            value = getattr(self.config, f"{target}_data")
            parts = [source for source in split_sources(value) if source != WORLD]  # the world is read as is
            records = []
            for source in parts:
                pairs = load_preferences(source, format=getattr(self.config, f"{target}_format"), target=target,
                                         margin_scheme=None)  # fmt: skip
                records += pairs.to_list()
            atomic_write_jsonl(folder / f"{target}.jsonl", records)
            counts[target] = len(records)
            sources[f"{target}_data"] = [describe_source(p, self.config.world_seed) for p in parts]
        return {"pairs": counts, "data_sources": sources}

    def base_pairs(self, target: str) -> str | None:
        """The base pairs of `target` as a reward-model stage reads them: "world" (the demo, or asked for), the
        user's files normalized in round 0, both, or None (not given)."""
        if not self.config.on_user_data:
            return WORLD
        sources = split_sources(getattr(self.config, f"{target}_data"))
        parts = ([WORLD] if WORLD in sources else []) + (
            [str(self.stage_dir(0, "base_pairs") / f"{target}.jsonl")] if any(s != WORLD for s in sources) else []
        )
        return ",".join(parts) or None

    def base_reward_model(self, target: str) -> Path:
        """Round 0's reward model of `target` (given, or trained once from the SFT model on the base data)."""
        given = getattr(self.config, f"{target}_rm")
        if given:
            return self.given(0, f"reward_model_{target}", given, f"{target}_rm")
        from .reward_model import RewardModelConfig, train_reward_model

        def train(folder: Path) -> dict[str, Any]:
            config = self.settings(f"{target}_rm", RewardModelConfig, getattr(self.config, f"{target}_rm_config"),
                                   model=str(self.sft_model), target=target, output_dir=str(folder),
                                   **self.reward_model_data(0, target))  # fmt: skip
            return {"final": str(train_reward_model(config)), "config": recorded_config(config),
                    "parent": str(self.sft_model), **stage_done_facts(folder)}  # fmt: skip

        return Path(self.run_stage(0, f"reward_model_{target}", train)["final"])

    def reward_model_data(self, n: int, target: str) -> dict[str, Any]:
        """The data fields of a reward-model stage in round `n` (0: the base RMs): the base pairs (round 0, or
        every round with `reward_model_init: sft`) and every batch collected in rounds 1..n; the held-out
        pairs for the record. The demo's base data is the world's."""
        config = self.config
        if not config.on_user_data and n == 0:  # the demo's base reward models: the world's pairs
            return dict(helpfulness_data=WORLD, safety_data=WORLD, eval_data=WORLD, world_seed=config.world_seed)
        data = {}
        for name in TARGETS:
            batches = self.collected(n, name)
            base_pairs = self.base_pairs(name) if (n == 0 or config.reward_model_init == "sft") else None
            data[f"{name}_data"] = ",".join(([base_pairs] if base_pairs else []) + batches) or None
        other = "safety" if target == "helpfulness" else "helpfulness"
        if data[f"{other}_data"] is None:  # e.g. no safety prompts among the user's: no mix to make
            data["other_share"] = 0.0
        held_out = getattr(config, f"{target}_eval_pairs") if config.on_user_data else WORLD
        return dict(data, data_format="auto", helpfulness_format=None, safety_format=None,
                    eval_data=held_out or WORLD, eval_format=config.eval_format, world_seed=config.world_seed)  # fmt: skip

    def judge_models(self) -> dict[str, Path] | None:
        """The judges of a run on real data (given, or trained once from the SFT model on the held-out pairs,
        Llama 2 §3.4.1); None when the rounds are judged by the world's gold scorers."""
        if not self.config.on_user_data or self.config.eval_prompts == WORLD:
            return None
        from .reward_model import RewardModelConfig, train_reward_model

        judges = {}
        for target in TARGETS:
            given = getattr(self.config, f"judge_{target}_rm")
            if given:
                judges[target] = self.given(0, f"judge_{target}", given, f"judge_{target}_rm")
                continue

            def train(folder: Path, target: str = target) -> dict[str, Any]:
                config = self.settings(
                    "judge", RewardModelConfig, self.config.judge_config or getattr(self.config, f"{target}_rm_config"),
                    model=str(self.sft_model), target=target, output_dir=str(folder),
                    helpfulness_data=self.config.helpfulness_eval_pairs, safety_data=self.config.safety_eval_pairs,
                    data_format=self.config.eval_format, helpfulness_format=None, safety_format=None,
                    eval_data="none", world_seed=self.config.world_seed, seed=self.config.seed,
                )  # fmt: skip
                return {"final": str(train_reward_model(config)), "config": recorded_config(config),
                        "parent": str(self.sft_model), **stage_done_facts(folder)}  # fmt: skip

            judges[target] = Path(self.run_stage(0, f"judge_{target}", train)["final"])
        return judges

    @property
    def sft_model(self) -> Path:
        return Path(self.config.sft_model) if self.config.sft_model else self.stage_dir(0, "sft") / "final"

    def prompt_source(self) -> dict[str, Any]:
        """The `prompts` field of rejection sampling and PPO: the user's prompts, or the stage YAML's (world)."""
        return {"prompts": self.config.prompts if self.config.on_user_data else WORLD}

    def run_round(self, n: int, policy: Path) -> Path:
        """One round from `policy` (the previous round's); returns this round's policy."""
        if self.config.on_user_data and not self.config.helpfulness_pairs:  # no files: a comparison batch
            self.wait_for_annotations(n, policy)
        collected = self.run_stage(n, "collect", lambda folder: self.collect(n, policy, folder))
        self.require_enough_pairs(n, collected)
        models = {}
        for target in TARGETS:
            stage = f"reward_model_{target}"
            trained = self.run_stage(n, stage, lambda folder, t=target: self.train_reward_model(n, t, folder))
            models[target] = Path(trained["final"])
        sampled = self.run_stage(
            n, "rejection_sampling", lambda folder: self.rejection_sample(n, policy, models, folder)
        )
        new_policy = Path(sampled["final"])
        if n >= self.config.ppo_from_round:
            tuned = self.run_stage(n, "ppo", lambda folder: self.ppo(n, new_policy, models, folder))
            new_policy = Path(tuned["final"])
        checkpoints = {"policy": new_policy, "previous_policy": policy, "sft": self.sft_model, **models}
        if new_policy != Path(sampled["final"]):  # PPO ran: its rejection-sampled start is judged beside it
            checkpoints["rejection_sampled"] = Path(sampled["final"])
        if n == 1 and self.config.reward_model_init == "previous":
            checkpoints.update({f"base_{t}": self.base_reward_models[t] for t in TARGETS})
        if self.evaluate_round is not None:
            self.run_stage(
                n, "evaluate", lambda folder: self.evaluate_round(n, checkpoints, folder, self.evaluation_setup())
            )
        return new_policy

    # -- stages ------------------------------------------------------------------------------------------

    def annotation_paths(self, n: int) -> tuple[Path, Path]:
        """(the comparison batch to label, where its labelled copy goes) of round `n`."""
        folder = self.stage_dir(n, "collect")
        return folder / "to_annotate.jsonl", folder / "annotated.jsonl"

    def wait_for_annotations(self, n: int, policy: Path) -> None:
        """Round `n` on real data without annotated files: write its comparison batch once, and stop (every
        process) until the labelled copy is in place."""
        batch, labelled = self.annotation_paths(n)
        if is_done(self.stage_dir(n, "collect"), ROUND_STAGE_MARKER) or labelled.is_file():
            return
        if self.processes.is_main_process and not batch.is_file():
            from .annotation import write_annotation_batch
            from .data import load_tokenizer
            from .modeling import load_causal_lm
            from .prompts import load_prompts

            print(f"[round {n}] writing the comparison batch to annotate ...", flush=True)
            prompts = load_prompts(self.config.prompts, world_seed=self.config.world_seed)
            if len(prompts) > self.config.pairs_per_round:
                prompts = random.Random(self.config.seed * 1000 + n).sample(prompts, self.config.pairs_per_round)
            model = load_causal_lm(policy, "policy").to(self.processes.device)
            temperatures = tuple(float(t) for t in self.config.annotation_temperatures.split(","))
            write_annotation_batch(model, load_tokenizer(policy), prompts, batch, temperatures=temperatures,
                                   max_new_tokens=self.config.annotation_max_new_tokens, seed=self.config.seed + n)  # fmt: skip
        if self.config.annotator != HUMAN:  # AI feedback: labelled here, and the round goes on
            if self.processes.is_main_process:
                from .ai_feedback import annotate_batch, load_annotator

                print(f"[round {n}] labelling the comparison batch with {self.config.annotator} ...", flush=True)
                annotator = load_annotator(
                    self.config.annotator, self.processes.device, self.config.annotator_template
                )
                counts = annotate_batch(batch, labelled, annotator)
                print(f"[round {n}] {counts['labelled']} comparisons labelled by {counts['annotated_by']}; "
                      f"unparsable: {counts['unparsable'] or 'none'}", flush=True)  # fmt: skip
            self.processes.wait_for_everyone()
            return
        self.processes.wait_for_everyone()
        raise AnnotationNeeded(
            f"round {n} needs labels: fill 'choice' (a/b), 'strength' and the safety labels in {batch}, save it as "
            f"{labelled}, then run the same command again"
        )

    def require_enough_pairs(self, n: int, collected: dict[str, Any]) -> None:
        """AnnotationNeeded (exit status 3, nothing trained) when the round collected fewer usable pairs for a data
        set than `min_new_pairs`; the collection is undone, so the same command collects again once the labels
        are fixed. Decided on every process from the collection's record."""
        short = {t: c for t, c in collected.get("pairs", {}).items() if c < self.config.min_new_pairs}
        if not short:
            return
        self.processes.wait_for_everyone()
        if self.processes.is_main_process:
            (self.stage_dir(n, "collect") / ROUND_STAGE_MARKER).unlink(missing_ok=True)
        self.processes.wait_for_everyone()
        counts = ", ".join(f"{count} {target}" for target, count in short.items())
        unparsable = sum(collected.get("unparsable", {}).values())
        why = f" ({unparsable} comparisons left unlabelled: the judge's answers did not parse)" if unparsable else ""
        _, labelled = self.annotation_paths(n) if collected.get("source") == "annotated comparison batch" else (0, None)
        fix = (f"fix or add labels in {labelled} (or delete it to label the batch again)" if labelled else
               "give more pairs")  # fmt: skip
        raise AnnotationNeeded(
            f"round {n}: only {counts} usable new pairs, fewer than min_new_pairs={self.config.min_new_pairs}{why}; "
            f"nothing was trained: {fix}, then run the same command again"
        )

    def collect(self, n: int, policy: Path, folder: Path) -> dict[str, Any]:
        """This round's new pairs: sampled from `policy` (each process samples its share of every data set's
        prompts, each answer from its own seed) and labelled in the world by the main process, the user's
        annotated files, or the labelled comparison batch (read by the main process). The facts are the main
        process's."""
        folder.mkdir(parents=True, exist_ok=True)
        from .data import load_preferences

        from_files = self.config.helpfulness_pairs not in (None, WORLD)
        annotated = self.config.on_user_data and self.config.helpfulness_pairs is None
        if (from_files or annotated) and not self.processes.is_main_process:
            return {}
        if from_files:
            counts, sources = {}, {}
            for target in TARGETS:
                source = getattr(self.config, f"{target}_pairs").format(round=n)
                file_format = self.config.pairs_format or getattr(self.config, f"{target}_format")
                # Saved with the data's own margins only: the reward-model update applies its margin scheme.
                pairs = load_preferences(source, format=file_format, target=target, margin_scheme=None)
                atomic_write_jsonl(folder / f"{target}.jsonl", pairs.to_list())
                counts[target], sources[f"{target}_pairs"] = len(pairs), [describe_source(source)]
            return {"pairs": counts, "source": "files", "parent": str(policy), "data_sources": sources}
        if annotated:
            from .annotation import read_annotations

            _, labelled = self.annotation_paths(n)
            pairs = read_annotations(labelled, source=f"round {n} annotations")
            counts = {}
            for target in TARGETS:
                rows = (
                    load_preferences(pairs[target], format="trl", margin_scheme=None).to_list()
                    if pairs[target]
                    else []
                )
                atomic_write_jsonl(folder / f"{target}.jsonl", rows)
                counts[target] = len(rows)
            records = read_jsonl(labelled)
            annotators = sorted({str(r["annotator"]) for r in records if r.get("annotator")})
            unparsable = Counter(r["unparsable"] for r in records if r.get("unparsable"))
            return {"pairs": counts, "source": "annotated comparison batch", "parent": str(policy),
                    "annotated_by": annotators or ["not recorded"], "unparsable": dict(unparsable),
                    "data_sources": {"annotations": [describe_source(str(labelled))]}}  # fmt: skip
        from .data import load_tokenizer
        from .modeling import load_causal_lm
        from .world import TARGET_PROMPT_MIX, World
        from .world.collection import label_pairs, sample_answers

        world = World(seed=self.config.world_seed)
        model = load_causal_lm(policy, "policy").to(self.processes.device)
        tokenizer = load_tokenizer(policy)
        processes, rank = self.processes.num_processes, self.processes.process_index
        seeds = {target: 1000 * n + index + self.config.seed for index, target in enumerate(TARGETS)}
        prompts, answers = {}, {}
        for target in TARGETS:
            prompts[target] = world.prompts(self.config.pairs_per_round, "train", seed=seeds[target],
                                            mix=TARGET_PROMPT_MIX[target])  # fmt: skip
            mine = prompts[target][rank::processes]
            samples = sample_answers(model, tokenizer, mine, 2, temperature=self.config.collect_temperature,
                                     seed=seeds[target])  # fmt: skip
            answers[target] = {prompt.id: pair for prompt, pair in zip(mine, samples)}
        if processes > 1:
            parts = gather_object([answers])
            answers = {target: {k: v for part in parts for k, v in part[target].items()} for target in TARGETS}
        if not self.processes.is_main_process:
            return {}
        counts = {}
        for target in TARGETS:
            pairs = label_pairs(world, prompts[target], answers[target], target, seeds[target])
            atomic_write_jsonl(folder / f"{target}.jsonl", pairs)
            counts[target] = len(pairs)
        return {"pairs": counts, "source": "world annotator", "parent": str(policy)}

    def collected(self, n: int, target: str) -> list[str]:
        """Every non-empty batch of `target` pairs collected in rounds 1..n."""
        paths = [self.stage_dir(r, "collect") / f"{target}.jsonl" for r in range(1, n + 1)]
        return [str(path) for path in paths if not path.is_file() or path.stat().st_size > 0]

    def train_reward_model(self, n: int, target: str, folder: Path) -> dict[str, Any]:
        from .reward_model import RewardModelConfig, train_reward_model

        if self.config.reward_model_init == "previous":  # continue the last round's RM on every batch so far
            parent = (
                self.base_reward_models[target]
                if n == 1
                else self.stage_dir(n - 1, f"reward_model_{target}") / "final"
            )
            yaml_path, stage = self.config.rm_update_config, "rm_update"
            if not self.collected(n, target):  # e.g. no safety prompts among the user's: nothing to learn from
                return {"final": str(parent), "parent": str(parent), "unchanged": f"no {target} pairs collected"}
        else:  # the paper: from the chat model, on the base data and every batch
            parent, stage = self.sft_model, f"{target}_rm"
            yaml_path = getattr(self.config, f"{target}_rm_config")
        data = self.reward_model_data(n, target)
        config = self.settings(stage, RewardModelConfig, yaml_path, model=str(parent), target=target,
                               output_dir=str(folder), seed=self.config.seed + n, **data)  # fmt: skip
        final = train_reward_model(config)
        return {"final": str(final), "config": recorded_config(config), "parent": str(parent),
                **stage_done_facts(folder)}  # fmt: skip

    def rejection_sampling_temperature(self, n: int) -> dict[str, float]:
        """Round `n`'s sampling temperature from `rejection_sampling_temperatures` (the last repeats), as a
        field of the stage's config; empty when the YAML's (or an override's) applies."""
        schedule = self.config.rejection_sampling_temperatures
        if schedule is None and not self.config.on_user_data:
            given = "temperature" in self.config.overrides.get("rejection_sampling", {})
            schedule = None if given else DEMO_TEMPERATURES
        if schedule is None:
            return {}
        temperatures = [float(t) for t in schedule.split(",")]
        return {"temperature": temperatures[min(n, len(temperatures)) - 1]}

    def rejection_sample(self, n: int, policy: Path, models: dict[str, Path], folder: Path) -> dict[str, Any]:
        from .rejection_sampling import RejectionSamplingConfig, finetune_settings, run_rejection_sampling
        from .sft import SFTConfig, sft

        config = self.settings(
            "rejection_sampling",
            RejectionSamplingConfig,
            self.config.rejection_sampling_config,
            **self.rejection_sampling_temperature(n),
            policy=str(policy),
            **self.reward_fields(models),
            output_dir=str(folder),
            world_seed=self.config.world_seed,
            world_prompt_seed=n,
            seed=self.config.seed + n,
            **self.prompt_source(),
        )
        kept = run_rejection_sampling(config)
        earlier = range(1, n) if self.config.rejection_sampling_pool == "all" else ()
        pool = [str(self.stage_dir(r, "rejection_sampling") / "kept.jsonl") for r in earlier]
        finetune = SFTConfig(
            model=str(policy),
            output_dir=str(folder / "sft"),
            dataset=",".join([str(kept), *pool]),
            **finetune_settings(config, self.processes.num_processes),
        )
        final = sft(finetune)
        done = json.loads((folder / DONE_MARKER).read_text())
        return {
            "final": str(final),
            "kept": str(kept),
            "pooled": pool,
            "parent": str(policy),
            "mean_best_reward": done.get("mean_best_reward"),
            "config": recorded_config(config),
            **stage_done_facts(folder),
        }

    def ppo(self, n: int, policy: Path, models: dict[str, Path], folder: Path) -> dict[str, Any]:
        from .ppo import PPOConfig, PPOTrainer
        from .prompts import stage_prompts, world_gold_scorer

        config = self.settings(
            "ppo",
            PPOConfig,
            self.config.ppo_config,
            policy=str(policy),
            reference=str(policy),
            **self.reward_fields(models),
            output_dir=str(folder),
            world_seed=self.config.world_seed,
            world_prompt_seed=100 + n,
            seed=self.config.seed + n,
            **self.prompt_source(),
        )
        prompts = stage_prompts(config)
        final = PPOTrainer.from_config(config, prompts, gold_scorer=world_gold_scorer(prompts)).train()
        done = json.loads((folder / DONE_MARKER).read_text())
        return {
            "final": str(final),
            "parent": str(policy),
            "config": recorded_config(config),
            **{k: v for k, v in done.items() if k.startswith("objective/")},
            **stage_done_facts(folder),
        }

    # -- evaluation inputs -------------------------------------------------------------------------------

    def evaluation_setup(self) -> dict[str, Any]:
        """What `evaluate_round` judges with: `prompts` (records), `gold` (the world's scorers judge), `judges`
        (target -> checkpoint, on real data), `held_out` (target -> pairs for reward-model accuracy)."""
        if self._evaluation_setup is None:
            from .prompts import load_prompts
            from .reward_model import named_held_out_pairs

            config = self.config
            source = config.eval_prompts if config.on_user_data else WORLD
            prompts = load_prompts(source, world_seed=config.world_seed, world_prompts=config.world_eval_prompts,
                                   split="test")  # fmt: skip
            held_out = {
                target: named_held_out_pairs(
                    getattr(config, f"{target}_eval_pairs") if config.on_user_data else WORLD,
                    config.eval_format,
                    target,
                    config.world_seed,
                )  # fmt: skip
                for target in TARGETS
            }
            self._evaluation_setup = {
                "prompts": prompts,
                "batch_size": config.eval_batch_size,
                "max_new_tokens": config.eval_max_new_tokens,
                "benchmarks": {"tasks": parse_tasks(config.benchmarks), "include_path": config.benchmark_include_path,
                               "limit": config.benchmark_limit},  # fmt: skip
                "temperature": config.eval_temperature,
                "gold": source == WORLD,
                "judges": getattr(self, "judges", None),
                "held_out": held_out,
                "diagnostic_samples": config.diagnostic_samples,
            }
        return self._evaluation_setup
