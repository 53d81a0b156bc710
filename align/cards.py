"""Model cards: the README.md align writes beside what it trains (a run folder) and with what it pushes (a Hub
repo or a storage folder), from what the run knows and nothing else:

- the model's real architecture and family, from its `config.json` (a user's Qwen2 is tagged `qwen2`, not
  `llama-2`), and what kind of checkpoint it is (a causal LM, a reward model, a LoRA adapter);
- where it came from (the base model) and the stage that trained it;
- the training data, by name and content hash, from the stage's `DONE.json` (`data_sources`);
- the stage's settings, from its `run_config.json`;
- the metrics that exist (no section when there are none);
- how to load it, which depends on the architecture: transformers alone for the architectures it ships;
  `pip install align-rlhf` + `import align`, or `trust_remote_code=True`, or `align export` to a plain Llama
  for align's own decoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .io import read_text

DISTRIBUTION = "align-rlhf"
FAMILIES = {"align_llama": "Llama 2 (align's decoder)", "llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3",
            "mistral": "Mistral", "gemma": "Gemma", "gemma2": "Gemma 2", "phi3": "Phi-3"}  # fmt: skip
ALIGN_CODE_FILES = ("configuration_align_llama.py", "modeling_align_llama.py")


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(read_text(path))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def describe_checkpoint(folder: Path) -> dict[str, Any]:
    """What `folder` holds: `kind` ("adapter", "reward model" or "causal LM"), `model_type`, `family`,
    `architecture`, `align_code` (it carries align's modeling code), `tokenizer` (it holds one) and, for an
    adapter, `adapter_base`."""
    adapter = _json_or_empty(folder / "adapter_config.json")
    config = _json_or_empty(folder / "config.json")
    if adapter and not config and adapter.get("base_model_name_or_path"):  # the base's architecture, when at hand
        config = _json_or_empty(Path(adapter["base_model_name_or_path"]) / "config.json")
    architecture = (config.get("architectures") or ["unknown"])[0]
    model_type = config.get("model_type", "unknown")
    if adapter:
        kind = "adapter"
    elif architecture.endswith("ForSequenceClassification"):
        kind = "reward model"
    else:
        kind = "causal LM"
    return {
        "kind": kind,
        "model_type": model_type,
        "family": FAMILIES.get(model_type, model_type),
        "architecture": architecture,
        "align_code": all((folder / name).is_file() for name in ALIGN_CODE_FILES),
        "adapter_base": adapter.get("base_model_name_or_path"),
        "tokenizer": (folder / "tokenizer_config.json").is_file(),
    }


def _loading(described: dict[str, Any], where: str) -> list[str]:
    """The card's "How to load it" section for a checkpoint at `where` (Python arguments, quoted)."""
    auto = "AutoModelForSequenceClassification" if described["kind"] == "reward model" else "AutoModelForCausalLM"
    if described["kind"] == "adapter":
        base = json.dumps(str(described["adapter_base"]))
        tokenizer_from = where if described["tokenizer"] else base
        return [f"A LoRA adapter (peft) on `{described['adapter_base']}`, which it needs:", "", "```python",
                *(["import align  # registers align's decoder, the base's architecture"]
                  if described["model_type"] == "align_llama" else []),
                "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                f"base = AutoModelForCausalLM.from_pretrained({base})",
                f"model = PeftModel.from_pretrained(base, {where})",
                f"tokenizer = AutoTokenizer.from_pretrained({tokenizer_from})", "```"]  # fmt: skip
    if described["model_type"] != "align_llama":
        return [f"A transformers `{described['architecture']}`: transformers alone loads it, no align needed.", "",
                "```python", f"from transformers import {auto}, AutoTokenizer",
                f"model = {auto}.from_pretrained({where})", f"tokenizer = AutoTokenizer.from_pretrained({where})",
                "```"]  # fmt: skip
    lines = [f"align's Llama 2 decoder (`{described['architecture']}`). With align installed (`pip install "
             f"{DISTRIBUTION}`: the distribution's name; `align` on the package index is another project), "
             "importing it registers the architecture with transformers:", "",
             "```python", "import align", f"from transformers import {auto}, AutoTokenizer",
             f"model = {auto}.from_pretrained({where})", f"tokenizer = AutoTokenizer.from_pretrained({where})",
             "```"]  # fmt: skip
    if described["align_code"]:
        lines += ["", "Without align, with transformers alone: the folder carries the configuration and modeling code "
                  "(`auto_map`); read it, then pass `trust_remote_code=True` (to the tokenizer too, which reads the "
                  "same config.json):", "", "```python", f"from transformers import {auto}, AutoTokenizer",
                  f"model = {auto}.from_pretrained({where}, trust_remote_code=True)",
                  f"tokenizer = AutoTokenizer.from_pretrained({where}, trust_remote_code=True)", "```"]  # fmt: skip
    if described["kind"] == "causal LM":
        lines += ["", "For tools that only know Llama (serving engines, converters): `align export --model "
                  f"{where.split(',')[0]} --output_dir llama-dir` writes a plain `LlamaForCausalLM` directory with the "
                  "tokenizer (pull a Hub revision first: `pull_checkpoint`)."]  # fmt: skip
    return lines


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value).replace("|", "\\|")


def model_card(
    folder: str | Path,
    *,
    title: str,
    where: str,
    stage: str | None = None,
    base: str | None = None,
    metrics: dict[str, Any] | None = None,
    run_folder: str | Path | None = None,
    note: str = "",
) -> str:
    """The card of the checkpoint `folder`, loaded from `where` (Python arguments: '"me/x", revision="r"').
    `run_folder` is the stage's folder holding DONE.json and run_config.json (default: `folder`'s parent when it
    holds them); `metrics` default to the numbers of DONE.json; `note` follows the first paragraph."""
    folder = Path(folder)
    run_folder = Path(run_folder) if run_folder is not None else folder.parent
    done = _json_or_empty(run_folder / "DONE.json")
    settings = _json_or_empty(run_folder / "run_config.json")
    if metrics is None:
        metrics = {key: value for key, value in done.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "processes"}  # fmt: skip
    described = describe_checkpoint(folder)
    tags = ["align", "rlhf", described["model_type"], *([stage] if stage else [])]
    if described["model_type"] == "align_llama":
        tags.append("llama-2")
    pipeline = "text-classification" if described["kind"] == "reward model" else "text-generation"
    from .hub import is_hub_target  # hub imports this module

    is_hub_id = base is not None and is_hub_target(base)
    lines = ["---", "library_name: " + ("peft" if described["kind"] == "adapter" else "transformers"),
             f"pipeline_tag: {pipeline}", f"tags: [{', '.join(dict.fromkeys(tags))}]",
             *([f"base_model: {base}"] if is_hub_id else []), "---", f"# {title}", ""]  # fmt: skip
    origin = f"from `{base}`" if base else "from randomly initialised weights"
    what = {"causal LM": "model", "adapter": "LoRA adapter"}.get(described["kind"], described["kind"])
    stage_text = f" (stage `{stage}`)" if stage else ""
    known = described["model_type"] != "unknown"
    subject = f"A {described['family']} {what}" if known else f"A {what} of an architecture its folder does not name"
    lines.append(f"{subject} trained with align, the Llama 2 alignment pipeline on the Hugging "
                 f"Face stack{stage_text}, {origin}.{' ' + note if note else ''}")  # fmt: skip
    sources = done.get("data_sources") or {}
    if sources:
        lines += ["", "## Training data", ""]
        lines += [f"- {name}: {', '.join(map(str, values))}" for name, values in sources.items()]
        named = " ".join(str(value) for values in sources.values() for value in values)
        notes = [*(["A file is named with the first 16 hex digits of its SHA-256."] if "(sha256 " in named else []),
                 *(["`world(seed=N)` is align's synthetic demo world."] if "world(seed=" in named else [])]  # fmt: skip
        lines += ["", " ".join(notes)] if notes else []
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_value(value)} |" for name, value in metrics.items()]
    lines += ["", "## How to load it", "", *_loading(described, where)]
    if settings:
        lines += ["", "## Settings", "", "The stage's configuration (`run_config.json`):", "", "<details>", "",
                  "```json", json.dumps(settings, indent=2, default=str), "```", "", "</details>"]  # fmt: skip
    return "\n".join(lines) + "\n"


def run_card(output_dir: str | Path, stage: str | None, base: str | None) -> str:
    """The README.md of a training run's folder, written once its model (`final/`) and DONE.json are."""
    output_dir = Path(output_dir)
    return model_card(output_dir / "final", title=output_dir.name, where=f'"{output_dir / "final"}"', stage=stage,
                      base=base, run_folder=output_dir,
                      note="The model is `final/`; `checkpoint-N/` are resumable training states.")  # fmt: skip
