"""The settings of a run of rounds (`RoundsConfig`) and how they are checked: which inputs make a run one on the
user's data, the `--<stage>.<field>` overrides, the rounds' reward spec, which stage follows rejection sampling
in each round. The package docstring (align/rounds/__init__.py) says what a round does."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ai_feedback import HUMAN, parse_annotator
from ..benchmarks import BENCHMARKS_HELP, INCLUDE_HELP, LIMIT_HELP
from ..config import check_field_types, coerce_field_value
from ..data.preferences import FORMATS
from ..reward_sources import parse_reward_spec
from ..sources import WORLD, describe_sources

# A round's stage is done when this marker exists; the stage's own run (e.g. its DONE.json) may finish earlier,
# as rejection sampling does before its fine-tune.
ROUND_STAGE_MARKER = "ROUND_STAGE_DONE.json"
STAGES = (
    "collect", "reward_model_helpfulness", "reward_model_safety", "rejection_sampling", "ppo", "dpo", "evaluate",
)  # fmt: skip
# The stages that may follow rejection sampling in a round (`ppo_from_round`, `dpo_from_round`).
POLICY_STAGES = ("ppo", "dpo")
TARGETS = ("helpfulness", "safety")

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

# The demo's reward: the Llama 2 gate over the round's reward models, plus, wherever the gate judges by
# helpfulness, the pretrained base model's mean log-likelihood of the answer relative to that of the world's
# refusal after the same prompt. The demo's 10M reward models rank a right sum or fact against its near miss at
# about chance while the base model ranks 97% of them right; relative to the refusal the term is 0 for a refusal
# and does not squeeze every reward towards one value (which kept refusals in world 1: log KK, LL). Five rounds
# with it rose on paired held-out prompts every round (docs/world.md, "Why the rounds stop improving"; log NN).
# On your data the default stays the Llama 2 gate alone: `--reward` adds your base model's likelihood.
# PPO scores with the same spec. The term on every answer in PPO's reward (`--ppo_reward`, `scope: all`) removed
# round 3's violations in world 0 but cost world 1's round 3 0.019 gold paired (log QQ, RR): not the default.
# The refusal is the world's (align.world.tasks.REFUSAL, equal by a test), written out because a run on your data
# never imports the world.
DEMO_REFUSAL = "I can't help with that."
DEMO_REWARD = {
    "combine": "llama2_gate",
    "sources": {
        "helpfulness": {"model": "round:helpfulness"},
        "safety": {"model": "round:safety"},
        "knowledge": {"likelihood": "round:base", "relative_to": DEMO_REFUSAL, "weight": 1.0, "scope": "helpfulness"},
    },
}

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
    "dpo": ("align.dpo", "DPOConfig"),
}
# In the rounds' reward spec, `model: round:helpfulness` (or `round:safety`) is that reward model of each round,
# and `likelihood: round:base` the run's pretrained base model (round 0's pretrain stage).
ROUND_MODEL = "round:"
ROUND_BASE = ROUND_MODEL + "base"
ROUNDS_REWARD_HELP = (
    "how rejection sampling and PPO score answers in every round: a reward spec (a mapping, JSON or .yaml file, "
    "as `align ppo` takes) whose sources may be `{model: round:helpfulness}` / `{model: round:safety}`, the "
    "round's own reward models, and `{likelihood: round:base}`, the run's pretrained model, besides functions, "
    "servers and fixed models, and a likelihood `relative_to` a text (default: the Llama 2 gate over the "
    "round's two reward models; in the demo, plus the pretrained model's likelihood relative to the world's "
    "refusal on the answers the gate judges by helpfulness: docs/reward-spec.md)"
)
ROUNDS_PPO_REWARD_HELP = (
    "how PPO scores answers, when not as `reward` (the same kind of spec; default: `reward`'s): "
    "docs/stages/rounds.md"
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
    rejection_sampling_restart_round: int = field(
        default=0,
        metadata={"help": "first round whose rejection-sampling fine-tune starts again from round 0's chat model, "
                          "on the pooled kept answers, instead of continuing the policy that sampled them; 0: "
                          "never (each round continues the last)"},
    )  # fmt: skip
    rejection_sampling_temperatures: str | None = field(
        default=None,
        metadata={"help": "rejection sampling's temperature per round, comma-separated ('1.0,0.7': round 1 at 1.0, "
                          f"rounds 2.. at 0.7; the last repeats), over the YAML's (the paper rescales it per "
                          f"round, docs/method.md §6); default: the YAML's on your data, {DEMO_TEMPERATURES} in "
                          "the demo"},
    )  # fmt: skip
    rejection_sampling: bool = field(
        default=True,
        metadata={"help": "rejection sampling in every round (false: the round's PPO or DPO starts from the previous "
                          "round's policy; e.g. iterative DPO alone)"},
    )  # fmt: skip
    ppo_config: str = field(default="recipes/configs/rlhf_round/ppo.yaml", metadata={"help": "YAML"})
    ppo_from_round: int = field(
        default=3,
        metadata={"help": "first round with PPO after rejection sampling, 0: never (the paper: 4, as the 7b configs; "
                          "3 here so that the documented three rounds run every stage)"},
    )  # fmt: skip
    dpo_config: str = field(default="recipes/configs/rlhf_round/dpo.yaml", metadata={"help": "YAML"})
    dpo_from_round: int = field(
        default=0,
        metadata={"help": "first round with DPO after rejection sampling (Llama 3's recipe), 0: never; when PPO and "
                          "DPO both apply to a round, the one that starts later runs (--ppo_from_round 0 for DPO "
                          "alone)"},
    )  # fmt: skip
    dpo_pairs: str = field(
        default="latest",
        metadata={"help": "the pairs a round's DPO trains on: 'latest' (the round's own, collected from the "
                          "previous policy) or 'all' (every round's so far)"},
    )  # fmt: skip
    dpo_reference: str = field(
        default="start",
        metadata={"help": "the frozen reference of a round's DPO: 'start' (the model the round's DPO starts from: "
                          "the rejection-sampled one, or the previous policy) or 'sft' (round 0's chat model in "
                          "every round, so that the rounds' drift from it is held in check, not re-anchored)"},
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
    world_seed: int = field(
        default=0,
        metadata={"help": "seed of the demo world (its people, places and facts): round 0 is made in it, the rounds "
                          "collect and are judged in it"},
    )  # fmt: skip
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
    collect_samples: int = field(
        default=2,
        metadata={"help": "world only: answers sampled per prompt in a round's collection; more than 2 are ranked by "
                          "the world's annotator (every two compared) and its best against its worst make the pair "
                          "(InstructGPT's K-way ranking)"},
    )  # fmt: skip
    collect_greedy: bool = field(
        default=False,
        metadata={"help": "world only: one of each prompt's collect_samples answers is the policy's greedy answer "
                          "(the one the evaluation judges), the others sampled at collect_temperature"},
    )  # fmt: skip
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
    ppo_reward: dict | str | None = field(default=None, metadata={"help": ROUNDS_PPO_REWARD_HELP})
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
        for name in ("ppo_from_round", "dpo_from_round", "rejection_sampling_restart_round"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: a round number, or 0 for never; got {getattr(self, name)}")
        if self.ppo_from_round and self.ppo_from_round == self.dpo_from_round:
            raise ValueError(f"dpo_from_round: {self.dpo_from_round} is ppo_from_round too; a round runs PPO or DPO "
                             "after rejection sampling, not both (0 turns one off)")  # fmt: skip
        if self.dpo_pairs not in ("latest", "all"):
            raise ValueError(f"dpo_pairs: expected 'latest' or 'all', got {self.dpo_pairs!r}")
        if self.dpo_reference not in ("start", "sft"):
            raise ValueError(f"dpo_reference: expected 'start' or 'sft', got {self.dpo_reference!r}")
        if not self.rejection_sampling and not all(self.policy_stage(n) for n in range(1, self.round + 1)):
            first = next(n for n in range(1, self.round + 1) if not self.policy_stage(n))
            raise ValueError(f"rejection_sampling: false leaves round {first} nothing to train the policy with; give "
                             f"--dpo_from_round 1 (or --ppo_from_round 1)")  # fmt: skip
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
        if self.collect_samples < 2:
            raise ValueError(f"collect_samples: at least 2 answers per prompt make a pair, got {self.collect_samples}")
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
        self.ppo_reward = parse_rounds_reward(self.ppo_reward, "ppo_reward")
        if self.reward is None and not self.on_user_data:
            self.reward = parse_rounds_reward(DEMO_REWARD)
        if parse_annotator(self.annotator)[0] != HUMAN and (not self.on_user_data or self.helpfulness_pairs):
            # Only a comparison batch is annotated; files or the world's annotator would leave the option unused.
            raise ValueError(
                "annotator: labels a round's comparison batch, which a run with helpfulness_pairs / safety_pairs "
                "does not write (leave them out to have the batch labelled)" if self.helpfulness_pairs else
                "annotator: labels the comparison batch of a run on your data; the demo's pairs are labelled by "
                "the world's annotator"
            )  # fmt: skip
        if self.collect_samples != 2 and self.pair_source != "world":
            raise ValueError(f"collect_samples: {self.collect_samples} answers per prompt are ranked by the world's "
                             "annotator; a run on your data collects pairs from files or a comparison batch (give "
                             "helpfulness_pairs / safety_pairs: world, or leave collect_samples at 2)")  # fmt: skip
        if self.collect_greedy and self.pair_source != "world":
            raise ValueError("collect_greedy: puts the policy's greedy answer among the answers the world's "
                             "annotator ranks; a run on your data collects pairs from files or a comparison batch "
                             "(give helpfulness_pairs / safety_pairs: world, or leave collect_greedy off)")  # fmt: skip
        if self.annotator_template is not None and not Path(self.annotator_template).is_file():
            raise FileNotFoundError(f"annotator_template: no file at {self.annotator_template}")
        if self.on_user_data:
            self.check_user_inputs()

    def policy_stage(self, n: int) -> str | None:
        """The stage after rejection sampling in round `n`: "ppo", "dpo" (the one of the two that started last by
        round `n`), or None."""
        starts = {stage: getattr(self, f"{stage}_from_round") for stage in POLICY_STAGES}
        started = [(start, stage) for stage, start in starts.items() if 0 < start <= n]
        return max(started)[1] if started else None

    def reward_of(self, stage: str) -> dict[str, Any] | None:
        """The reward spec `stage` (rejection_sampling or ppo) scores with: `ppo_reward` for PPO when set, else
        `reward` (None: the Llama 2 gate over the round's reward models)."""
        return self.ppo_reward if stage == "ppo" and self.ppo_reward is not None else self.reward

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def pair_source(self) -> str:
        """Where a round's new pairs come from: "files" (helpfulness_pairs / safety_pairs), "comparison batch"
        (a run on your data without them: a batch to annotate) or "world" (the world's annotator)."""
        if self.helpfulness_pairs not in (None, WORLD):
            return "files"
        return "comparison batch" if self.on_user_data and self.helpfulness_pairs is None else "world"

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




def round_model_target(source: dict[str, Any]) -> str | None:
    """The target a source's `model: round:<target>` names (the round's own reward model), else None."""
    model = source.get("model", "")
    return model[len(ROUND_MODEL) :] if model.startswith(ROUND_MODEL) else None


def parse_rounds_reward(value: Any, option: str = "reward") -> dict[str, Any] | None:
    """The rounds' reward spec (`option`: reward or ppo_reward) as a mapping (a file or JSON read once, so the
    manifest records what was used), or None for the default; ValueError naming the option and a bad spec or a
    `round:` model that is not a target."""
    if value in (None, "", {}):
        return None
    try:
        spec = parse_reward_spec(value)
    except ValueError as error:  # its messages name the option `reward`
        raise ValueError(option + str(error).removeprefix("reward")) from None
    for name, source in spec.sources.items():
        if round_model_target(source) not in (None, *TARGETS):
            raise ValueError(f"{option}: sources: {name}: model: expected "
                             f"{' or '.join(ROUND_MODEL + t for t in TARGETS)} (the round's reward model) or a "
                             f"folder, got {source['model']!r}")  # fmt: skip
        likelihood = source.get("likelihood", "")
        if likelihood.startswith(ROUND_MODEL) and likelihood != ROUND_BASE:
            raise ValueError(f"{option}: sources: {name}: likelihood: expected {ROUND_BASE} (the run's pretrained "
                             f"model) or a folder, got {likelihood!r}")  # fmt: skip
    return {"combine": spec.combine, "sources": spec.sources}
