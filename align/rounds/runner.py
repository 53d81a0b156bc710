"""`Rounds`: runs rounds 1..N of a run (align/rounds/__init__.py says what a round does). It keeps the books
(stage folders, completion markers, `manifest.json`), checks every input before any work, makes round 0 and hands
each stage of a round to its module: `collect`, `reward_models`, `rejection_sampling`, then `ppo` or `dpo`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from ..ai_feedback import parse_annotator
from ..benchmarks import check_tasks, parse_tasks
from ..checkpoint import (
    RunFolderError,
    check_vocabulary,
    is_done,
    mark_done,
    recorded_config,
    require_model_dir,
    require_reward_model_dir,
)
from ..config import ConfigError, load_yaml_config
from ..io import TABLE_SUFFIXES, atomic_write_jsonl
from ..reward_sources import FunctionSource
from ..sources import WORLD, describe_source, split_sources
from . import collect, dpo, ppo, rejection_sampling, reward_models
from .config import POLICY_STAGES, ROUND_BASE, ROUND_STAGE_MARKER, TARGETS, RoundsConfig, round_model_target
from .records import Manifest, changed_options, stage_config, stage_done_facts, stage_settings

RoundEvaluator = Callable[[int, dict[str, Path], Path, dict[str, Any]], dict[str, Any]]
# What follows rejection sampling in a round, by `RoundsConfig.policy_stage`: each module's `run`.
POLICY_STAGE_MODULES = {"ppo": ppo, "dpo": dpo}


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

    def reward_fields(self, models: dict[str, Any], stage: str = "rejection_sampling") -> dict[str, Any]:
        """What rejection sampling (or with `stage` "ppo", PPO) scores with, given the round's reward models by
        target: the Llama 2 gate over them (their `helpfulness_rm` / `safety_rm`), or the rounds' spec (PPO's:
        `ppo_reward` when given) with its `round:<target>` models and its `round:base` likelihood model filled in."""
        spec = self.config.reward_of(stage)
        if spec is None:
            return {"helpfulness_rm": str(models["helpfulness"]), "safety_rm": str(models["safety"]), "reward": None}
        def filled(source: dict[str, Any]) -> dict[str, Any]:
            if target := round_model_target(source):
                return {**source, "model": str(models[target])}
            if source.get("likelihood") == ROUND_BASE:
                return {**source, "likelihood": str(self.base_model)}
            return source

        sources = {name: filled(source) for name, source in spec["sources"].items()}
        return {"helpfulness_rm": "", "safety_rm": "", "reward": {**spec, "sources": sources}}

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

    def settings_option(self, stage: str, config_class: type, yaml_path: str) -> dict[str, Any]:
        """`{"settings": ...}`: the values a stage takes from its YAML file and `--<stage>.*` overrides, as one of
        the options run_stage records (an edited YAML file is then a change a rerun names, not a silent one)."""
        return {"settings": stage_settings(config_class, yaml_path, self.config.overrides.get(stage))}

    def check_stage_configs(self) -> None:
        """Build every stage config the run will use, with placeholder checkpoints, so a bad YAML key, override
        or missing input stops the run before any work (ValueError naming it)."""
        from ..dpo import DPOConfig
        from ..ppo import PPOConfig
        from ..rejection_sampling import RejectionSamplingConfig
        from ..reward_model import RewardModelConfig

        config = self.config
        placeholders = {target: "-" for target in TARGETS}
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
        for option in ("reward", "ppo_reward"):
            for name, source in (getattr(config, option) or {}).get("sources", {}).items():  # servers: when scoring
                if "model" in source and not round_model_target(source):
                    require_reward_model_dir(source["model"], f"{option}: sources: {name}")
                if source.get("likelihood") == ROUND_BASE and config.sft_model:
                    raise ValueError(f"{option}: sources: {name}: likelihood: {ROUND_BASE} is the model this run "
                                     "pretrains; it starts from sft_model instead: give the base model's folder")  # fmt: skip
                if "likelihood" in source and source["likelihood"] != ROUND_BASE:
                    require_model_dir(source["likelihood"], f"{option}: sources: {name}: likelihood")
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
            from ..pretrain import PretrainConfig
            from ..sft import SFTConfig

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
            self.settings(stage, config_class, path, policy="-", output_dir="-", **self.reward_fields(placeholders, stage),
                          **prompts)  # also PPO before its first round  # fmt: skip
        self.settings("dpo", DPOConfig, config.dpo_config, model="-", output_dir="-", dataset="-")

    def check_data_files(self) -> None:
        """Read every file of the user's the run will use (prompts, preference data, held-out pairs, the
        annotated pairs of rounds 1..N that are there) and check the given models fit the SFT model's
        tokenizer, so that a bad record or model stops the run before any work, not rounds later."""
        from ..data import load_preferences, load_tokenizer
        from ..prompts import load_prompts

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

    def run_stage(
        self,
        round_number: int,
        stage: str,
        work: Callable[[Path], dict[str, Any]],
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run `work(stage_dir)` on every process unless the stage is marked done; the main process marks it done
        with the facts its `work` returned and records it in the manifest. Returns the stage's recorded facts.
        `options`, the rounds options the stage's work depends on (and its `settings`, what its YAML file and
        overrides give), are recorded with its facts; a finished stage recorded with other values is still kept
        (never redone behind the user's back), with a line that says which options it did not follow."""
        folder, main = self.stage_dir(round_number, stage), self.processes.is_main_process
        options = json.loads(json.dumps(options, default=str)) if options else None  # as the marker holds them
        marker = folder / ROUND_STAGE_MARKER
        done = is_done(folder, ROUND_STAGE_MARKER)
        # Every process looks before any can go on: the main process may finish a stage whose work is its own
        # (reading pair files) and write its marker before a slow process has looked, which would then skip the
        # stage's closing barrier and leave the processes one collective apart (a hang until the group's timeout).
        self.processes.wait_for_everyone()
        if done:
            facts = json.loads(marker.read_text())
            if main:
                print(f"[round {round_number}] {stage}: done in an earlier run, skipped ({folder})", flush=True)
                # A marker older than `options`, or than one of them (an option added since), says nothing of it.
                changed = changed_options(facts.get("options", options) or {}, options or {})
                if changed:
                    print(f"[round {round_number}] {stage}: note: kept as it was made, with {', '.join(changed)}; "
                          f"to make it with the new options, run under another --name", flush=True)  # fmt: skip
                if "settings" in (options or {}) and "settings" not in (facts.get("options") or {}):
                    # Made by an align from before stages recorded their YAML settings: an edit of the YAML file
                    # or a new default since cannot be named, so say that it is not checked rather than nothing.
                    print(f"[round {round_number}] {stage}: note: kept as it was made; it predates align's record of "
                          f"a stage's YAML settings, so an edit of its YAML file or a new default since is not seen; "
                          f"to make it with the current settings, run under another --name", flush=True)  # fmt: skip
            return facts
        if main:
            print(f"[round {round_number}] {stage} ...", flush=True)
        started = time.time()
        facts = work(folder)
        if main:
            facts["seconds"] = round(time.time() - started, 1)
            if options:
                facts["options"] = options
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
        for stage in ("pretrain", "sft"):  # before the manifest is touched: another world's run is left as it is
            self.require_world(stage)
        if self.processes.is_main_process:
            self.manifest.data["data_sources"] = self.config.input_sources()
            self.manifest.save()
            for name, sources in self.manifest.data["data_sources"].items():
                print(f"[rounds] {name}: {', '.join(sources)}", flush=True)
            for n in range(1, self.config.round + 1):
                stages = ["rejection sampling"] * self.config.rejection_sampling + [self.config.policy_stage(n) or ""]
                print(f"[rounds] round {n}: {' + '.join(s.upper() if s in POLICY_STAGES else s for s in stages if s)}",
                      flush=True)  # fmt: skip
        self.policy = self.round_zero()
        if any(s != WORLD for t in TARGETS for s in split_sources(getattr(self.config, f"{t}_data"))):
            self.run_stage(0, "base_pairs", self.normalize_base_pairs)
        # Each round's helpfulness reward model by round, for the diagnostics' "earlier models on the latest pairs".
        self.helpfulness_rms: dict[int, Path] = {}
        if self.config.reward_model_init == "previous":
            self.base_reward_models = {target: self.base_reward_model(target) for target in TARGETS}
            self.helpfulness_rms[0] = self.base_reward_models["helpfulness"]
        self.judges = self.judge_models()
        for round_number in range(1, self.config.round + 1):
            self.policy = self.run_round(round_number, self.policy)
        return Manifest(self.manifest.path).data  # as the main process wrote it

    def round_zero(self) -> Path:
        """The chat model every round starts from: given, or (the demo) pretrained + SFT on the world once under
        round-0/."""
        if self.config.sft_model:
            return self.given(0, "sft", self.config.sft_model, "sft_model")
        from ..pretrain import PretrainConfig, pretrain
        from ..sft import SFTConfig, sft

        world_seed = self.config.world_seed  # the world the rounds collect on and are judged in
        pretrained = self.run_stage(0, "pretrain", lambda folder: {
            "final": str(pretrain(self.settings("pretrain", PretrainConfig, self.config.pretrain_config,
                                                output_dir=str(folder), dataset=WORLD, world_seed=world_seed))),
            "world_seed": world_seed,
            "config": self.config.pretrain_config, **stage_done_facts(folder),
        }, self.settings_option("pretrain", PretrainConfig, self.config.pretrain_config))  # fmt: skip
        chat = self.run_stage(0, "sft", lambda folder: {
            "final": str(sft(self.settings("sft", SFTConfig, self.config.sft_config, model=pretrained["final"],
                                           output_dir=str(folder), dataset=WORLD, world_seed=world_seed))),
            "world_seed": world_seed,
            "config": self.config.sft_config, "parent": pretrained["final"], **stage_done_facts(folder),
        }, self.settings_option("sft", SFTConfig, self.config.sft_config))  # fmt: skip
        return Path(chat["final"])

    def require_world(self, stage: str) -> None:
        """A round-0 stage done in an earlier run must have been made in this run's world (ValueError)."""
        marker = self.stage_dir(0, stage) / ROUND_STAGE_MARKER
        if self.config.sft_model or not marker.is_file():
            return
        # Markers written before 2026-12-03 lack the field: round 0 was always made in world 0 then.
        made_in = json.loads(marker.read_text()).get("world_seed", 0)
        if made_in != self.config.world_seed:
            raise ValueError(f"{self.stage_dir(0, stage)}: made in world seed {made_in}, this run has --world_seed "
                             f"{self.config.world_seed}; run it under another --name")  # fmt: skip

    def normalize_base_pairs(self, folder: Path) -> dict[str, Any]:
        """The user's base preference files, each set read in its own format, saved once as TRL-format JSONL
        (`round-0/base_pairs/<target>.jsonl`) that every reward-model stage then reads ("world" stays as is)."""
        from ..data import load_preferences

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
        from ..reward_model import RewardModelConfig, train_reward_model

        def train(folder: Path) -> dict[str, Any]:
            config = self.settings(f"{target}_rm", RewardModelConfig, getattr(self.config, f"{target}_rm_config"),
                                   model=str(self.sft_model), target=target, output_dir=str(folder),
                                   **self.reward_model_data(0, target))  # fmt: skip
            return {"final": str(train_reward_model(config)), "config": recorded_config(config),
                    "parent": str(self.sft_model), **stage_done_facts(folder)}  # fmt: skip

        settings = self.settings_option(f"{target}_rm", RewardModelConfig, getattr(self.config, f"{target}_rm_config"))
        return Path(self.run_stage(0, f"reward_model_{target}", train, settings)["final"])

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
        from ..reward_model import RewardModelConfig, train_reward_model

        judges = {}
        for target in TARGETS:
            given = getattr(self.config, f"judge_{target}_rm")
            if given:
                judges[target] = self.given(0, f"judge_{target}", given, f"judge_{target}_rm")
                continue

            yaml_path = self.config.judge_config or getattr(self.config, f"{target}_rm_config")

            def train(folder: Path, yaml_path: str = yaml_path, target: str = target) -> dict[str, Any]:
                config = self.settings(
                    "judge", RewardModelConfig, yaml_path,
                    model=str(self.sft_model), target=target, output_dir=str(folder),
                    helpfulness_data=self.config.helpfulness_eval_pairs, safety_data=self.config.safety_eval_pairs,
                    data_format=self.config.eval_format, helpfulness_format=None, safety_format=None,
                    eval_data="none", world_seed=self.config.world_seed, seed=self.config.seed,
                )  # fmt: skip
                return {"final": str(train_reward_model(config)), "config": recorded_config(config),
                        "parent": str(self.sft_model), **stage_done_facts(folder)}  # fmt: skip

            options = {"seed": self.config.seed, **self.settings_option("judge", RewardModelConfig, yaml_path)}
            judges[target] = Path(self.run_stage(0, f"judge_{target}", train, options)["final"])
        return judges

    @property
    def base_model(self) -> Path:
        """The pretrained model of round 0 (the demo's; a run given `sft_model` has none)."""
        return self.stage_dir(0, "pretrain") / "final"

    @property
    def sft_model(self) -> Path:
        return Path(self.config.sft_model) if self.config.sft_model else self.stage_dir(0, "sft") / "final"

    def prompt_source(self) -> dict[str, Any]:
        """The `prompts` field of rejection sampling and PPO: the user's prompts, or the stage YAML's (world)."""
        return {"prompts": self.config.prompts if self.config.on_user_data else WORLD}

    def run_round(self, n: int, policy: Path) -> Path:
        """One round from `policy` (the previous round's); returns this round's policy."""
        if self.config.pair_source == "comparison batch":
            collect.wait_for_annotations(self, n, policy)
        collected = self.run_stage(n, "collect", lambda folder: collect.run(self, n, policy, folder),
                                   collect.round_options(self))  # fmt: skip
        collect.require_enough_pairs(self, n, collected)
        models = {}
        for target in TARGETS:
            stage = f"reward_model_{target}"
            trained = self.run_stage(n, stage, lambda folder, t=target: reward_models.run(self, n, t, folder),
                                     reward_models.round_options(self, target))  # fmt: skip
            models[target] = Path(trained["final"])
        earlier_helpfulness_rms = dict(self.helpfulness_rms)
        self.helpfulness_rms[n] = models["helpfulness"]
        checkpoints = {"previous_policy": policy, "sft": self.sft_model, **models}
        start = policy
        if self.config.rejection_sampling:
            sampled = self.run_stage(
                n, "rejection_sampling", lambda folder: rejection_sampling.run(self, n, policy, models, folder),
                rejection_sampling.round_options(self, n),
            )
            start = Path(sampled["final"])
        new_policy = start
        if stage := self.config.policy_stage(n):  # PPO or DPO, from the rejection-sampled model
            module = POLICY_STAGE_MODULES[stage]
            tuned = self.run_stage(n, stage, lambda folder: module.run(self, n, start, models, folder),
                                   module.round_options(self))  # fmt: skip
            new_policy = Path(tuned["final"])
            if self.config.rejection_sampling:  # its rejection-sampled start is judged beside it
                checkpoints["rejection_sampled"] = start
        checkpoints["policy"] = new_policy
        if n == 1 and self.config.reward_model_init == "previous":
            checkpoints.update({f"base_{t}": self.base_reward_models[t] for t in TARGETS})
        if self.evaluate_round is not None:
            setup = self.evaluation_setup()
            if self.config.rejection_sampling:  # the diagnostics judge what it keeps (align.world.diagnostics)
                from ..rejection_sampling import recorded_keep_rule

                kept_by = {"reward_fields": self.reward_fields, **recorded_keep_rule(sampled["config"])}
                setup = {**setup, "rejection_sampling": kept_by}
            setup = {**setup, "earlier_helpfulness_rms": earlier_helpfulness_rms}
            self.run_stage(n, "evaluate", lambda folder: self.evaluate_round(n, checkpoints, folder, setup))
        return new_policy

    def collected(self, n: int, target: str, first: int = 1) -> list[str]:
        """Every non-empty batch of `target` pairs collected in rounds first..n."""
        paths = [self.stage_dir(r, "collect") / f"{target}.jsonl" for r in range(first, n + 1)]
        return [str(path) for path in paths if not path.is_file() or path.stat().st_size > 0]

    # -- evaluation inputs -------------------------------------------------------------------------------

    def evaluation_setup(self) -> dict[str, Any]:
        """What `evaluate_round` judges with: `prompts` (records), `gold` (the world's scorers judge), `judges`
        (target -> checkpoint, on real data), `held_out` (target -> pairs for reward-model accuracy)."""
        if self._evaluation_setup is None:
            from ..prompts import load_prompts
            from ..reward_model import named_held_out_pairs

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
