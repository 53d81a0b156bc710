"""Reward sources and the reward spec: what scores the answers of rejection sampling and PPO, and how the
scores combine into the reward they optimise.

A source turns (prompt messages, answer text) pairs into one score each, on the scale of a reward model's
output (a logit):

- `{"model": DIR}`: a sequence-classification reward model, any transformers architecture, scored with *its
  own* tokenizer and chat template: the answer text (decoded from the policy's tokens) is rendered again for
  it, so that the policy and the reward models need not share a vocabulary (public reward models do not);
- `{"likelihood": DIR}`: a causal LM (typically the pretrained base model the policy came from), whose score of an
  answer is its mean log-probability per token after the prompt (`align.logprobs.answer_logprobs`): what a model
  that has read a lot of text finds likely. On the demo world the base model ranks a right sum or fact above
  its near miss 97% of the time where the reward models are near chance (docs/world.md), so as an extra source
  of the gate it adds the content the reward models miss. With `relative_to: TEXT` (e.g. the policy's refusal)
  the score is the answer's mean log-probability minus that text's after the same prompt: 0 for that text
  whatever the prompt. Without it the term is a mean log-probability, -1 to -4 where the base model knows the
  answers little: added to logit(R_c) it squeezes every reward towards 0, where best-of-K's min_reward_gain
  finds the best answer no better than the most frequent one, often a refusal (docs/reward-spec.md);
- `{"function": "package.module:name"}`: a Python function called as `name(prompts, answers)` with two lists,
  returning a list of floats (a format check, a length penalty, a rule-based filter), importable from the
  working directory or the Python path;
- `{"url": URL, "timeout": 30, "retries": 3}`: an HTTP endpoint that answers a POST of
  `{"prompts": [...], "answers": [...]}` with `{"scores": [...]}`; a timeout or a failed request is retried
  with a growing pause, and a server that stays away is one `RewardSourceError` naming it (PPO and rejection
  sampling stop where their last checkpoint or shard line is, and resume from there once it is back).

The spec names the sources and how they combine (`combine`):

- "llama2_gate" (the default, docs/method.md §7): sources `helpfulness` and `safety`; the reward of an answer is
  R_c = the safety score on safety prompts or when it falls below `safety_threshold`, the helpfulness score
  otherwise, on the sigmoids of their scores (`align.rewards.gated_reward`); PPO maximises whiten(logit(R_c)).
  Another source with a `weight` adds weight x score to logit(R_c), on every answer or, with `scope: helpfulness`,
  only where R_c is the helpfulness score (the safety score alone judges where safety rules);
- "weighted_sum": the sum of weight x score over the sources (weight 1 unless given);
- "min": the smallest weight x score.

A source with weight 0 (under the gate: any source without a weight) is scored and logged, not optimised: a
held-out judge to watch for reward hacking. In a config the spec is a mapping, a JSON string or a .yaml/.json
file:

    reward:
      combine: llama2_gate
      sources:
        helpfulness: {model: runs/rm_helpfulness/final}
        safety: {model: runs/rm_safety/final}
        knowledge: {likelihood: runs/pretrained/final, weight: 1.0, scope: helpfulness}
        brevity: {function: my_rewards:short_answers, weight: 0.1}

Without one, the stages build the default from their `helpfulness_rm` and `safety_rm` options. In code:
`RewardScorer.load(parse_reward_spec(spec, helpfulness_rm, safety_rm))`, then `.scores(prompts, answers)` and
`.reward(scores, is_safety)`; `loaded={folder: (model, tokenizer)}` scores with reward models already in memory.
"""

from __future__ import annotations

import http.client
import importlib
import json
import logging
import math
import numbers
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .data.chat import Message
from .rewards import SAFETY_THRESHOLD, gated_reward, logit, score, uses_safety

logger = logging.getLogger(__name__)
COMBINES = ("llama2_gate", "weighted_sum", "min")
GATE_SOURCES = ("helpfulness", "safety")
SOURCE_KINDS = ("model", "likelihood", "function", "url")
SOURCE_KEYS = {*SOURCE_KINDS, "weight", "scope", "relative_to", "timeout", "retries"}
SCOPES = ("all", "helpfulness")
REWARD_HELP = (
    "how answers are scored: a mapping, JSON or .yaml file {combine: llama2_gate | weighted_sum | min, sources: "
    "{name: {model: DIR} | {likelihood: DIR, relative_to: TEXT} | {function: module:name} | {url: URL}, weight: w, "
    "scope: all | helpfulness}} (default: the Llama 2 gate over helpfulness_rm and safety_rm)"
)


class RewardSourceError(RuntimeError):
    """A reward source that cannot score (a server that stays away, a function that returns the wrong thing)."""


@dataclass
class RewardSpec:
    """Which sources score the answers and how their scores combine (module docstring)."""

    combine: str = "llama2_gate"
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    from_options: bool = False  # built from the stage's helpfulness_rm / safety_rm options

    def where(self, name: str) -> str:
        """How errors name source `name`: the option it came from (`helpfulness_rm`) or its place in the spec."""
        return f"{name}_rm" if self.from_options else f"reward: sources: {name}"

    def weight(self, name: str) -> float:
        """The weight of source `name` in the reward (under the gate its two sources are the gate, weight 1)."""
        default = 1.0 if self.combine != "llama2_gate" or name in GATE_SOURCES else 0.0
        return float(self.sources[name].get("weight", default))

    def scope(self, name: str) -> str:
        """Where source `name`'s term applies under the gate: "all" answers or only the "helpfulness"-gated ones."""
        return self.sources[name].get("scope", "all")

    def models(self) -> dict[str, str]:
        """The reward-model folders of the spec, by source name."""
        return {name: source["model"] for name, source in self.sources.items() if "model" in source}


def parse_reward_spec(value: Any, helpfulness_rm: str | None = None, safety_rm: str | None = None) -> RewardSpec:
    """The spec a config's `reward` value gives (a mapping, a JSON string or a .yaml / .json file), or, when it
    is empty, the Llama 2 gate over `helpfulness_rm` and `safety_rm` (which a spec leaves unset); ValueError
    naming what is wrong."""
    if value in (None, "", {}):
        missing = [name for name, path in (("helpfulness_rm", helpfulness_rm), ("safety_rm", safety_rm)) if not path]
        if missing:
            raise ValueError(f"{missing[0]}: required, a reward model checkpoint (or give a reward spec: reward)")
        sources = {"helpfulness": {"model": helpfulness_rm}, "safety": {"model": safety_rm}}
        return RewardSpec("llama2_gate", sources, from_options=True)
    given = [name for name, path in (("helpfulness_rm", helpfulness_rm), ("safety_rm", safety_rm)) if path]
    if given:  # two places naming the reward models would leave one of them silently unused
        raise ValueError(f"reward: a reward spec names its own sources; leave {' and '.join(given)} unset with it")
    if isinstance(value, str):
        value = _read_spec_text(value)
    if not isinstance(value, dict):
        raise ValueError(f"reward: expected a mapping {{combine, sources}}, got {value!r:.80}")
    unknown = set(value) - {"combine", "sources"}
    if unknown:
        raise ValueError(f"reward: unknown keys {sorted(unknown)}, expected 'combine' and 'sources'")
    combine = value.get("combine", "llama2_gate")
    if combine not in COMBINES:
        raise ValueError(f"reward: combine: expected one of {list(COMBINES)}, got {combine!r}")
    sources = value.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise ValueError("reward: sources: expected a mapping of source name -> {model | function | url}")
    for name, source in sources.items():
        _check_source(name, source)
    scoped = [name for name, source in sources.items() if source.get("scope", "all") != "all"]
    if scoped and (combine != "llama2_gate" or scoped[0] in GATE_SOURCES):
        raise ValueError(f"reward: sources: {scoped[0]}: scope: only an extra source of the llama2_gate has one")
    if combine == "llama2_gate":
        missing = [name for name in GATE_SOURCES if name not in sources]
        if missing:
            raise ValueError(
                f"reward: the llama2_gate needs sources named {list(GATE_SOURCES)}; {missing[0]!r} is missing"
            )
    spec = RewardSpec(combine, {name: dict(source) for name, source in sources.items()})
    if not any(spec.weight(name) for name in spec.sources):
        raise ValueError("reward: every source has weight 0; nothing would be optimised")
    return spec


def _read_spec_text(text: str) -> Any:
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise ValueError(f"reward: no file at {path}")
        from .io import load_yaml, read_text

        try:
            return load_yaml(read_text(path))
        except yaml.YAMLError as error:
            raise ValueError(f"reward: {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"reward: expected a JSON mapping or a .yaml / .json file, got {text!r:.80}") from None


def _check_source(name: str, source: Any) -> None:
    if not isinstance(source, dict):
        raise ValueError(f"reward: sources: {name}: expected a mapping like {{model: DIR}}, got {source!r:.60}")
    unknown = set(source) - SOURCE_KEYS
    if unknown:
        raise ValueError(f"reward: sources: {name}: unknown keys {sorted(unknown)}, allowed: {sorted(SOURCE_KEYS)}")
    kinds = [kind for kind in SOURCE_KINDS if kind in source]
    if len(kinds) != 1:
        raise ValueError(f"reward: sources: {name}: give exactly one of {list(SOURCE_KINDS)}, got {kinds}")
    if not isinstance(source[kinds[0]], str) or not source[kinds[0]]:
        raise ValueError(f"reward: sources: {name}: {kinds[0]}: expected a string, got {source[kinds[0]]!r}")
    if "function" in source and ":" not in source["function"]:
        raise ValueError(f"reward: sources: {name}: function: expected 'module:name', got {source['function']!r}")
    weight = source.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise ValueError(f"reward: sources: {name}: weight: expected a number, got {weight!r}")
    if source.get("scope", "all") not in SCOPES:
        raise ValueError(f"reward: sources: {name}: scope: expected one of {list(SCOPES)}, got {source['scope']!r}")
    if "relative_to" in source and "likelihood" not in source:
        raise ValueError(f"reward: sources: {name}: relative_to: only a likelihood source has one")
    if "relative_to" in source and (not isinstance(source["relative_to"], str) or not source["relative_to"].strip()):
        raise ValueError(
            f"reward: sources: {name}: relative_to: expected an answer's text, got {source['relative_to']!r:.60}"
        )
    for key, kind in (("timeout", (int, float)), ("retries", int)):
        if key in source and (isinstance(source[key], bool) or not isinstance(source[key], kind) or source[key] < 0):
            raise ValueError(f"reward: sources: {name}: {key}: expected a number >= 0, got {source[key]!r}")


# -- the sources ----------------------------------------------------------------------------------------------

Scorer = Callable[[Sequence[Sequence[Message]], Sequence[str]], torch.Tensor]


class LoadedModelSource:
    """A reward model already in memory, scored with the tokenizer given (e.g. one shared with the policy)."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def __call__(self, prompts: Sequence[Sequence[Message]], answers: Sequence[str]) -> torch.Tensor:
        return score(self.model, self.tokenizer, prompts, answers, self.batch_size).raw


class RewardModelSource(LoadedModelSource):
    """A sequence-classification reward model folder, loaded with its own tokenizer and chat template
    (`fallback_tokenizer`, the policy's, when its folder has none, with a log line)."""

    def __init__(
        self,
        path: str | Path,
        device: torch.device | str = "cpu",
        batch_size: int = 32,
        name: str = "",
        fallback_tokenizer: Any = None,
    ) -> None:
        from .checkpoint import check_vocabulary, require_reward_model_dir
        from .data import load_tokenizer
        from .modeling import load_sequence_classifier

        what = name or "reward model"
        self.path = require_reward_model_dir(path, what)
        has_tokenizer = any((self.path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
        if has_tokenizer or fallback_tokenizer is None:
            tokenizer = load_tokenizer(self.path)
        else:
            logger.warning("%s: %s has no tokenizer; scoring with the policy's", what, self.path)
            tokenizer = fallback_tokenizer
        check_vocabulary(tokenizer, self.path, what)
        model = load_sequence_classifier(self.path, what, num_labels=None).to(device).eval()
        model.requires_grad_(False)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        super().__init__(model, tokenizer, batch_size)


class LikelihoodSource:
    """A causal LM folder (with its own tokenizer and chat template): an answer's score is its mean log-probability
    per token after the prompt (`align.logprobs.answer_logprobs`), minus that of `relative_to` (an answer's text,
    e.g. a refusal) after the same prompt when given."""

    def __init__(
        self,
        path: str | Path,
        device: torch.device | str = "cpu",
        batch_size: int = 32,
        name: str = "",
        relative_to: str | None = None,
    ) -> None:
        from .checkpoint import check_vocabulary, require_model_dir
        from .data import load_tokenizer
        from .modeling.loading import load_causal_lm

        what = name or "likelihood model"
        self.path = require_model_dir(path, what)
        self.tokenizer = load_tokenizer(self.path)
        check_vocabulary(self.tokenizer, self.path, what)
        self.model = load_causal_lm(self.path, what).to(device).eval()
        self.model.requires_grad_(False)
        self.batch_size, self.relative_to = batch_size, relative_to

    def __call__(self, prompts: Sequence[Sequence[Message]], answers: Sequence[str]) -> torch.Tensor:
        from .logprobs import answer_logprobs
        from .sharding import is_sharded

        scores = answer_logprobs(self.model, self.tokenizer, prompts, answers, self.batch_size)
        if self.relative_to is None:
            return scores
        # One reference score per distinct prompt (best-of-K scores K answers to each), except for a sharded
        # model: it runs a collective per forward, so each process must run as many as the others, i.e. one per
        # answer, whatever its prompts. A model placed whole on every process keeps one per prompt.
        keys = [json.dumps(list(prompt), sort_keys=True) for prompt in prompts]
        if is_sharded(self.model):
            keys = [f"{i}:{key}" for i, key in enumerate(keys)]
        distinct = dict(zip(keys, prompts))
        reference = answer_logprobs(
            self.model, self.tokenizer, list(distinct.values()), [self.relative_to] * len(distinct), self.batch_size
        )
        by_key = dict(zip(distinct, reference.tolist()))
        return scores - torch.tensor([by_key[key] for key in keys], dtype=scores.dtype)


class FunctionSource:
    """`module:name`, imported once (from the working directory or the Python path), called with lists of
    prompts and answers."""

    def __init__(self, target: str, name: str = "") -> None:
        module_name, _, function_name = target.partition(":")
        if os.getcwd() not in sys.path:  # `python recipes/ppo.py` puts recipes/ first, not the user's folder
            sys.path.append(os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(
                f"reward: sources: {name}: function {target!r}: cannot import {module_name} ({error})"
            ) from None
        self.function = getattr(module, function_name, None)
        if not callable(self.function):
            raise ValueError(
                f"reward: sources: {name}: function {target!r}: {module_name} has no function {function_name!r}"
            )
        self.target, self.name = target, name

    def __call__(self, prompts: Sequence[Sequence[Message]], answers: Sequence[str]) -> torch.Tensor:
        try:
            values = self.function(list(prompts), list(answers))
        except Exception as error:  # the user's code: its failure is named, not shown as align's traceback
            reason = str(error).splitlines()[0] if str(error) else ""
            raise RewardSourceError(
                f"reward: sources: {self.name}: function {self.target} raised {type(error).__name__}"
                f"{': ' + reason if reason else ''}; fix it and rerun (the run resumes from its last checkpoint)"
            ) from error
        return _as_scores(values, len(answers), f"function {self.target}")


class HttpSource:
    """A reward server: POST {"prompts", "answers"} -> {"scores"}, with a timeout and bounded retries."""

    def __init__(self, url: str, timeout: float = 30.0, retries: int = 3, name: str = "") -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"reward: sources: {name}: url: expected http:// or https://, got {url!r}")
        self.url, self.timeout, self.retries, self.name = url, float(timeout), int(retries), name

    def __call__(self, prompts: Sequence[Sequence[Message]], answers: Sequence[str]) -> torch.Tensor:
        body = json.dumps({"prompts": list(prompts), "answers": list(answers)}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                reply = json.loads(raw.decode("utf-8"))
                break
            except UnicodeDecodeError as error:
                raise RewardSourceError(
                    f"reward server {self.name} at {self.url}: its reply is not UTF-8 text (byte {error.start}); "
                    'expected JSON {"scores": [...]}'
                ) from None
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError,
                    json.JSONDecodeError) as error:  # fmt: skip  (IncompleteRead: a reply cut short)
                if attempt == self.retries:
                    reason = getattr(error, "reason", None) or error
                    raise RewardSourceError(
                        f"reward server {self.name} at {self.url}: no answer after {self.retries + 1} tries "
                        f"({reason}); start it again and rerun: the run resumes from its last checkpoint"
                    ) from None
                time.sleep(min(2.0**attempt, 30.0) * 0.5)
        scores = reply.get("scores") if isinstance(reply, dict) else None
        return _as_scores(scores, len(answers), f"reward server {self.url}")


def _as_scores(values: Any, count: int, what: str) -> torch.Tensor:
    """The scores a source returned as a float tensor; RewardSourceError naming `what` unless they are `count`
    finite numbers (a list, tuple, tensor or array; a number written as a string is refused, not converted)."""
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):  # a tensor or an array
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or len(values) != count:
        raise RewardSourceError(f"{what}: expected a list of {count} scores, got {str(values)[:80]}")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Real)]
    if bad:
        raise RewardSourceError(f"{what}: expected numbers, got {bad[0]!r} in {str(values)[:80]}")
    scores = torch.tensor([float(v) for v in values])
    if not torch.isfinite(scores).all():
        raise RewardSourceError(f"{what}: returned a score that is not finite: {str(values)[:80]}")
    return scores


def load_source(
    name: str, source: dict[str, Any], device: torch.device | str, batch_size: int, fallback_tokenizer: Any = None
) -> Scorer:
    """The scorer of one spec entry (`fallback_tokenizer`: `RewardModelSource`'s)."""
    if "model" in source:
        return RewardModelSource(source["model"], device, batch_size, name, fallback_tokenizer)
    if "likelihood" in source:
        return LikelihoodSource(source["likelihood"], device, batch_size, name, source.get("relative_to"))
    if "function" in source:
        return FunctionSource(source["function"], name)
    return HttpSource(source["url"], source.get("timeout", 30.0), source.get("retries", 3), name)


# -- scoring and combining ------------------------------------------------------------------------------------


class RewardScorer:
    """The sources of a spec, ready to score; combines their scores (module docstring)."""

    def __init__(self, spec: RewardSpec, sources: dict[str, Scorer], safety_threshold: float = SAFETY_THRESHOLD):
        self.spec, self.sources, self.safety_threshold = spec, sources, safety_threshold

    @classmethod
    def load(
        cls,
        spec: RewardSpec,
        device: torch.device | str = "cpu",
        batch_size: int = 32,
        safety_threshold: float = SAFETY_THRESHOLD,
        fallback_tokenizer: Any = None,
        loaded: Mapping[str | Path, tuple[Any, Any]] | None = None,
    ) -> RewardScorer:
        """Load every source of `spec` (reward models onto `device`; `fallback_tokenizer` for a reward model
        folder saved without its tokenizer). `loaded`: reward models the caller already holds, as (model,
        tokenizer) by their folder; a `model` source naming one of those folders scores with it instead of
        loading it again."""
        held = {Path(folder).resolve(): pair for folder, pair in (loaded or {}).items()}
        sources = {}
        for name, source in spec.sources.items():
            if "model" in source and (pair := held.get(Path(source["model"]).resolve())) is not None:
                sources[name] = LoadedModelSource(*pair, batch_size)
            else:
                sources[name] = load_source(spec.where(name), source, device, batch_size, fallback_tokenizer)
        return cls(spec, sources, safety_threshold)

    @classmethod
    def from_models(
        cls,
        helpfulness_rm: Any,
        safety_rm: Any,
        tokenizer: Any,
        batch_size: int = 32,
        safety_threshold: float = SAFETY_THRESHOLD,
    ) -> RewardScorer:
        """The Llama 2 gate over two reward models in memory that share `tokenizer`."""
        spec = RewardSpec("llama2_gate", {"helpfulness": {"model": "<in memory>"}, "safety": {"model": "<in memory>"}})
        sources = {"helpfulness": LoadedModelSource(helpfulness_rm, tokenizer, batch_size),
                   "safety": LoadedModelSource(safety_rm, tokenizer, batch_size)}  # fmt: skip
        return cls(spec, sources, safety_threshold)

    def models(self) -> list[Any]:
        """The reward models among the sources (the ones held in memory)."""
        return [source.model for source in self.sources.values() if isinstance(source, LoadedModelSource)]

    def likelihood_models(self) -> list[Any]:
        """The causal LMs of the `likelihood` sources (run through their trunk and LM head: sharded by those)."""
        return [source.model for source in self.sources.values() if isinstance(source, LikelihoodSource)]

    def scores(self, prompts: Sequence[Sequence[Message]], answers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Each source's raw score of each answer, by source name."""
        return {name: source(prompts, answers).float().cpu() for name, source in self.sources.items()}

    def reward(self, scores: dict[str, torch.Tensor], is_safety: torch.Tensor) -> torch.Tensor:
        """The reward of each answer: R_c under the gate (a probability, as in docs/method.md §7, moved on the logit
        scale by weighted extra sources), else the weighted sum or minimum of the scores."""
        spec = self.spec
        weighted = {name: spec.weight(name) * scores[name] for name in scores if name not in GATE_SOURCES or
                    spec.combine != "llama2_gate"}  # fmt: skip
        if spec.combine == "llama2_gate":
            safety, helpfulness = (torch.sigmoid(scores[name]) for name in ("safety", "helpfulness"))
            gated = gated_reward(safety, helpfulness, is_safety, self.safety_threshold)
            helpfulness_gated = ~uses_safety(safety, is_safety, self.safety_threshold)
            extra = [value * helpfulness_gated if spec.scope(name) == "helpfulness" else value
                     for name, value in weighted.items() if spec.weight(name)]  # fmt: skip
            return torch.sigmoid(logit(gated) + sum(extra)) if extra else gated
        active = [value for name, value in weighted.items() if spec.weight(name)]
        if spec.combine == "weighted_sum":
            return torch.stack(active).sum(0)
        return torch.stack(active).min(0).values

    def optimised(self, reward: torch.Tensor) -> torch.Tensor:
        """What PPO maximises before whitening: logit(R_c) under the gate, the reward itself otherwise."""
        return logit(reward) if self.spec.combine == "llama2_gate" else reward

    def logged(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-source values as the stages record them: the gate's sources as sigmoids (their probability, as the
        Llama 2 gate reads them), every other source's raw score."""
        return {
            name: torch.sigmoid(value) if self.spec.combine == "llama2_gate" and name in GATE_SOURCES else value
            for name, value in scores.items()
        }
