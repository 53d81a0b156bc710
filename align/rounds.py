"""Iterative RLHF rounds (PIPELINE.md §8): the orchestrator behind `recipes/rlhf_round.py --round N`.

Round 0 is pretraining + SFT (run once, cached) or a given chat model. Round N >= 1:

1. `collect`: new preference pairs from the latest policy (in the world: two sampled answers per prompt,
   labelled by its simulated annotator; otherwise the user's newly annotated files for the round);
2. `reward_model_helpfulness`, `reward_model_safety`: both reward models trained on all batches collected so
   far: from the SFT model with the base data too (`reward_model_init: sft`, the paper), or continuing the
   previous round's models (`previous`, the default: round 0 trains base RMs on the base data once, cached,
   like pretraining and SFT; each round then costs one short pass over the batches);
3. `rejection_sampling`: best-of-K with the new reward models, then SFT of the latest policy on the kept
   answers of this round pooled with every earlier round's (`rejection_sampling/sft/final`);
4. `ppo` (from round `ppo_from_round`): PPO from the rejection-sampled model, pi_0 being that model;
5. `evaluate`: the round's policy judged by `evaluate_round` (gold metrics in the world, reward-model accuracy,
   win rates, Elo; supplied by the recipe from `eval/`).

Every stage writes under `<runs_dir>/<name>/round-N/<stage>/` and ends with a completion marker
(`ROUND_STAGE_DONE.json`); a rerun skips finished stages and resumes an unfinished one from its own
checkpoints. `manifest.json` records, per stage, its config, seed, parent checkpoint, output and metrics, plus
the package versions. Each stage's settings
come from its own YAML config (the same files its recipe reads); the rounds set only what chains them
(checkpoints, data, output folders, per-round seeds).

Under `accelerate launch` with several processes, the training stages (pretraining, SFT, reward models,
rejection sampling, PPO) run on every process, split as their own recipes split them; `collect` and `evaluate`
run on the main process while the others wait. Markers and the manifest are written by the main process, so
`runs_dir` must be one folder every process sees (a shared file system across nodes).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from .checkpoint import DONE_MARKER, is_done, mark_done, require_model_dir
from .config import load_yaml_config
from .io import atomic_write_jsonl, atomic_write_text

# A round's stage is done when this marker exists; the stage's own run (e.g. its DONE.json) may finish earlier,
# as rejection sampling does before its fine-tune.
ROUND_STAGE_MARKER = "ROUND_STAGE_DONE.json"
STAGES = ("collect", "reward_model_helpfulness", "reward_model_safety", "rejection_sampling", "ppo", "evaluate")
MAIN_PROCESS_STAGES = ("collect", "evaluate")  # not split over processes: one process samples and judges
RoundEvaluator = Callable[[int, dict[str, Path], Path], dict[str, Any]]


@dataclass
class RoundsConfig:
    """Settings of a run of rounds; each stage's own settings live in the YAML file named here."""

    round: int = field(default=1, metadata={"help": "run rounds 1..N (missing earlier rounds run first)"})
    name: str = field(default="demo", metadata={"help": "run name: outputs under <runs_dir>/<name>/"})
    runs_dir: str = field(default="runs", metadata={"help": "folder of all runs"})
    sft_model: str | None = field(
        default=None, metadata={"help": "start from this chat model (skips round 0's pretraining and SFT)"}
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
    rejection_sampling_config: str = field(
        default="recipes/configs/rlhf_round/rejection_sampling.yaml", metadata={"help": "YAML"}
    )
    ppo_config: str = field(default="recipes/configs/rlhf_round/ppo.yaml", metadata={"help": "YAML"})
    ppo_from_round: int = field(default=4, metadata={"help": "first round with PPO on top of rejection sampling"})
    world_seed: int = field(default=0, metadata={"help": "seed of the synthetic world"})
    pairs_per_round: int = field(default=400, metadata={"help": "world prompts labelled per data set and round"})
    collect_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the collection"})
    helpfulness_pairs: str | None = field(
        default=None, metadata={"help": "real data: newly annotated helpfulness pairs per round, '{round}' in path"}
    )
    safety_pairs: str | None = field(
        default=None, metadata={"help": "real data: newly annotated safety pairs per round, '{round}' in path"}
    )
    pairs_format: str = field(default="trl", metadata={"help": "format of the annotated pair files"})
    seed: int = field(default=0, metadata={"help": "run seed (each round derives its own)"})

    def __post_init__(self) -> None:
        if self.round < 1:
            raise ValueError(f"round: must be at least 1, got {self.round}")
        if self.ppo_from_round < 1:
            raise ValueError(f"ppo_from_round: must be at least 1, got {self.ppo_from_round}")
        if (self.helpfulness_pairs is None) != (self.safety_pairs is None):
            raise ValueError("helpfulness_pairs and safety_pairs: give both (real data) or neither (the world)")
        for name in ("helpfulness_pairs", "safety_pairs"):
            value = getattr(self, name)
            if value is not None and "{round}" not in value:
                raise ValueError(f"{name}: expected a path with '{{round}}' in it, got {value!r}")
        if self.reward_model_init not in ("sft", "previous"):
            raise ValueError(f"reward_model_init: expected 'sft' or 'previous', got {self.reward_model_init!r}")
        if self.pairs_per_round <= 0:
            raise ValueError(f"pairs_per_round: must be positive, got {self.pairs_per_round}")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


class Manifest:
    """`manifest.json` of a run: per round and stage, what ran, from what, and what it measured."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {"rounds": {}}
        self.data["versions"] = package_versions()

    def record(self, round_number: int, stage: str, **facts: Any) -> None:
        self.data["rounds"].setdefault(str(round_number), {})[stage] = facts
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("align", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def stage_config(config_class: type, yaml_path: str, **chained: Any) -> Any:
    """A stage's config: its YAML file, with the fields the rounds chain (paths, seeds) set on top."""
    values = load_yaml_config(yaml_path, config_class)
    return config_class(**{**values, **chained})


class Rounds:
    """Runs rounds 1..N of a run, skipping finished stages; see the module docstring."""

    def __init__(self, config: RoundsConfig, evaluate_round: RoundEvaluator | None = None) -> None:
        self.config = config
        self.evaluate_round = evaluate_round
        self.run_dir = config.run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.run_dir / "manifest.json")
        self.processes = PartialState(cpu=not torch.cuda.is_available())

    # -- bookkeeping ---------------------------------------------------------------------------------------

    def stage_dir(self, round_number: int, stage: str) -> Path:
        return self.run_dir / f"round-{round_number}" / stage

    def run_stage(self, round_number: int, stage: str, work: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Run `work(stage_dir)` unless the stage is marked done (on every process, or on the main one for
        `MAIN_PROCESS_STAGES`); the main process marks it done and records it in the manifest. Returns the
        stage's recorded facts."""
        folder, main = self.stage_dir(round_number, stage), self.processes.is_main_process
        marker = folder / ROUND_STAGE_MARKER
        if is_done(folder, ROUND_STAGE_MARKER):
            return json.loads(marker.read_text())
        if main:
            print(f"[round {round_number}] {stage} ...", flush=True)
        started = time.time()
        if main or stage not in MAIN_PROCESS_STAGES:
            facts = work(folder)
        if main:
            facts["seconds"] = round(time.time() - started, 1)
            mark_done(folder, ROUND_STAGE_MARKER, **facts)
            self.manifest.record(round_number, stage, **facts)
        self.processes.wait_for_everyone()
        return json.loads(marker.read_text())

    # -- the rounds --------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run every round up to `config.round`; returns the manifest. `self.policy` is then the last round's."""
        self.policy = self.round_zero()
        if self.config.reward_model_init == "previous":
            self.base_reward_models = {target: self.base_reward_model(target) for target in ("helpfulness", "safety")}
        for round_number in range(1, self.config.round + 1):
            self.policy = self.run_round(round_number, self.policy)
        return Manifest(self.manifest.path).data  # as the main process wrote it

    def round_zero(self) -> Path:
        """The chat model every round starts from: given, or pretrained + SFT once under round-0/."""
        if self.config.sft_model:
            return require_model_dir(self.config.sft_model, "sft_model")
        from .pretrain import PretrainConfig, pretrain
        from .sft import SFTConfig, sft

        pretrained = self.run_stage(0, "pretrain", lambda folder: {
            "final": str(pretrain(stage_config(PretrainConfig, self.config.pretrain_config, output_dir=str(folder)))),
            "config": self.config.pretrain_config,
        })  # fmt: skip
        chat = self.run_stage(0, "sft", lambda folder: {
            "final": str(sft(stage_config(SFTConfig, self.config.sft_config, model=pretrained["final"],
                                          output_dir=str(folder)))),
            "config": self.config.sft_config, "parent": pretrained["final"],
        })  # fmt: skip
        return Path(chat["final"])

    def base_reward_model(self, target: str) -> Path:
        """Round 0's reward model of `target` (given, or trained once from the SFT model on the base data)."""
        given = getattr(self.config, f"{target}_rm")
        if given:
            return require_model_dir(given, f"{target}_rm")
        from .reward_model import RewardModelConfig, train_reward_model

        def train(folder: Path) -> dict[str, Any]:
            config = stage_config(RewardModelConfig, getattr(self.config, f"{target}_rm_config"),
                                  model=str(self.sft_model), target=target, output_dir=str(folder))  # fmt: skip
            return {"final": str(train_reward_model(config)), "config": dataclasses.asdict(config)}

        return Path(self.run_stage(0, f"reward_model_{target}", train)["final"])

    @property
    def sft_model(self) -> Path:
        return Path(self.config.sft_model) if self.config.sft_model else self.stage_dir(0, "sft") / "final"

    def run_round(self, n: int, policy: Path) -> Path:
        """One round from `policy` (the previous round's); returns this round's policy."""
        self.run_stage(n, "collect", lambda folder: self.collect(n, policy, folder))
        models = {}
        for target in ("helpfulness", "safety"):
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
        if self.evaluate_round is not None:
            self.run_stage(n, "evaluate", lambda folder: self.evaluate_round(n, checkpoints, folder))
        return new_policy

    # -- stages ------------------------------------------------------------------------------------------

    def collect(self, n: int, policy: Path, folder: Path) -> dict[str, Any]:
        """This round's new pairs: sampled from `policy` and labelled in the world, or the user's files."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.config.helpfulness_pairs:
            from .data import load_preferences

            counts = {}
            for target in ("helpfulness", "safety"):
                source = getattr(self.config, f"{target}_pairs").format(round=n)
                # Saved with the data's own margins only: the reward-model update applies its margin scheme.
                pairs = load_preferences(source, format=self.config.pairs_format, target=target, margin_scheme=None)
                atomic_write_jsonl(folder / f"{target}.jsonl", pairs.to_list())
                counts[target] = len(pairs)
            return {"pairs": counts, "source": "files", "parent": str(policy)}
        from .data import load_tokenizer
        from .modeling import AlignLlamaForCausalLM
        from .world import TARGET_PROMPT_MIX, World
        from .world.collection import policy_preference_pairs

        world = World(seed=self.config.world_seed)
        model = AlignLlamaForCausalLM.from_pretrained(policy).to(self.processes.device)
        tokenizer = load_tokenizer(policy)
        counts = {}
        for index, target in enumerate(("helpfulness", "safety")):
            seed = 1000 * n + index + self.config.seed
            prompts = world.prompts(self.config.pairs_per_round, "train", seed=seed, mix=TARGET_PROMPT_MIX[target])
            pairs = policy_preference_pairs(
                world, model, tokenizer, prompts, target, seed=seed, temperature=self.config.collect_temperature
            )
            atomic_write_jsonl(folder / f"{target}.jsonl", pairs)
            counts[target] = len(pairs)
        return {"pairs": counts, "source": "world annotator", "parent": str(policy)}

    def collected(self, n: int, target: str) -> list[str]:
        """Every batch of `target` pairs collected in rounds 1..n."""
        return [str(self.stage_dir(r, "collect") / f"{target}.jsonl") for r in range(1, n + 1)]

    def train_reward_model(self, n: int, target: str, folder: Path) -> dict[str, Any]:
        from .reward_model import RewardModelConfig, train_reward_model

        if self.config.reward_model_init == "previous":  # continue the last round's RM on every batch so far
            parent = (
                self.base_reward_models[target]
                if n == 1
                else self.stage_dir(n - 1, f"reward_model_{target}") / "final"
            )
            yaml_path, world = self.config.rm_update_config, []
        else:  # the paper: from the chat model, on the base data and every batch
            parent = self.sft_model
            yaml_path, world = (
                getattr(self.config, f"{target}_rm_config"),
                [] if self.config.helpfulness_pairs else ["world"],
            )
        config = stage_config(
            RewardModelConfig,
            yaml_path,
            model=str(parent),
            target=target,
            output_dir=str(folder),
            helpfulness_data=",".join(world + self.collected(n, "helpfulness")),
            safety_data=",".join(world + self.collected(n, "safety")),
            data_format="trl",
            world_seed=self.config.world_seed,
            seed=self.config.seed + n,
        )
        final = train_reward_model(config)
        return {"final": str(final), "config": dataclasses.asdict(config), "parent": str(parent)}

    def rejection_sample(self, n: int, policy: Path, models: dict[str, Path], folder: Path) -> dict[str, Any]:
        from .rejection_sampling import RejectionSamplingConfig, finetune_settings, run_rejection_sampling
        from .sft import SFTConfig, sft

        config = stage_config(
            RejectionSamplingConfig,
            self.config.rejection_sampling_config,
            policy=str(policy),
            helpfulness_rm=str(models["helpfulness"]),
            safety_rm=str(models["safety"]),
            output_dir=str(folder),
            world_seed=self.config.world_seed,
            world_prompt_seed=n,
            seed=self.config.seed + n,
        )
        kept = run_rejection_sampling(config)
        pool = [str(self.stage_dir(r, "rejection_sampling") / "kept.jsonl") for r in range(1, n)]
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
            "config": dataclasses.asdict(config),
        }

    def ppo(self, n: int, policy: Path, models: dict[str, Path], folder: Path) -> dict[str, Any]:
        from .ppo import PPOConfig, PPOTrainer
        from .prompts import stage_prompts, world_gold_scorer

        config = stage_config(
            PPOConfig,
            self.config.ppo_config,
            policy=str(policy),
            reference=str(policy),
            helpfulness_rm=str(models["helpfulness"]),
            safety_rm=str(models["safety"]),
            output_dir=str(folder),
            world_seed=self.config.world_seed,
            world_prompt_seed=100 + n,
            seed=self.config.seed + n,
        )
        prompts = stage_prompts(config)
        final = PPOTrainer.from_config(config, prompts, gold_scorer=world_gold_scorer(prompts)).train()
        done = json.loads((folder / DONE_MARKER).read_text())
        return {
            "final": str(final),
            "parent": str(policy),
            "config": dataclasses.asdict(config),
            **{k: v for k, v in done.items() if k.startswith("objective/")},
        }
