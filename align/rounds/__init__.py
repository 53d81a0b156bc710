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
3. `rejection_sampling` (unless `rejection_sampling: false`): best-of-K with the new reward models, then SFT of
   the latest policy on the kept answers of this round pooled with every earlier round's
   (`rejection_sampling/sft/final`);
4. `ppo` (from round `ppo_from_round`): PPO from the rejection-sampled model, pi_0 being that model; or `dpo`
   (from round `dpo_from_round`, Llama 3's recipe): DPO from that model, also its reference, on the round's
   pairs (`RoundsConfig.policy_stage` says which: the one that started later);
   rejection sampling and PPO score with the Llama 2 gate over the round's reward models, or with the rounds'
   reward spec (`reward`, `align.reward_sources`), where `round:helpfulness` / `round:safety` name them
   (and `likelihood: round:base` the run's pretrained model);
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

The package: `config` (the settings and their checks), `records` (the manifest), `runner` (`Rounds`: the books,
the checks before any work, round 0, each round's order) and one module per stage of a round, each with a
`run(rounds, n, ...)` that returns the stage's facts: `collect`, `reward_models`, `rejection_sampling`, `ppo`,
`dpo`. A new stage after rejection sampling is one such module and one entry in `runner.POLICY_STAGE_MODULES`.

Under `accelerate launch` with several processes, the training stages (pretraining, SFT, reward models,
rejection sampling, PPO, DPO) run on every process, split as their own recipes split them. `collect` in the world
samples and labels the two data sets on two processes (each set has its own seeded stream, so the pairs are
those of one process); pairs from files or annotations are read by the main process. `evaluate` splits its
greedy answers over the processes by whole generate batches (`eval_batch_size` prompts, padded as on one
process, so the answers are the same) and judges on the main process. Markers and the manifest are written by
the main process, so `runs_dir` must be one folder every process sees (a shared file system across nodes).
"""

from .config import (
    CHAINED_FIELDS,
    DEMO_REWARD,
    DEMO_TEMPERATURES,
    POLICY_STAGES,
    ROUND_BASE,
    ROUND_MODEL,
    ROUND_STAGE_MARKER,
    STAGE_CONFIGS,
    STAGES,
    TARGETS,
    USER_INPUTS,
    AnnotationNeeded,
    RoundsConfig,
    parse_overrides,
    parse_rounds_reward,
    stage_config_class,
)
from .records import Manifest, package_versions, stage_config, stage_done_facts
from .runner import RoundEvaluator, Rounds, require_own_run_dir

__all__ = [
    "CHAINED_FIELDS", "DEMO_REWARD", "DEMO_TEMPERATURES", "POLICY_STAGES", "ROUND_BASE", "ROUND_MODEL", "ROUND_STAGE_MARKER", "STAGE_CONFIGS",
    "STAGES", "TARGETS", "USER_INPUTS", "AnnotationNeeded", "Manifest", "RoundEvaluator", "Rounds", "RoundsConfig",
    "package_versions", "parse_overrides", "parse_rounds_reward", "require_own_run_dir", "stage_config",
    "stage_config_class", "stage_done_facts",
]  # fmt: skip
