"""`data/build_world.py`: everything the world writes is reproducible from its seed."""

import importlib.util
import json
from pathlib import Path

from align.data import load_preferences
from align.sft import read_dialogue_records

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "build_world.py"
spec = importlib.util.spec_from_file_location("build_world", SCRIPT)
build_world = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_world)

SMALL = ["--documents", "300", "--prompts", "40", "--sft", "40", "--pairs", "40"]


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    first = build_world.main(["--seed", "5", "--out", str(tmp_path / "a"), *SMALL])
    build_world.main(["--seed", "5", "--out", str(tmp_path / "b"), *SMALL])
    build_world.main(["--seed", "6", "--out", str(tmp_path / "c"), *SMALL])
    names = sorted(p.name for p in (tmp_path / "a").iterdir() if p.name != "manifest.json")
    assert names == [
        "corpus.txt",
        "preferences_helpfulness.jsonl",
        "preferences_safety.jsonl",
        "prompts_test.jsonl",
        "prompts_train.jsonl",
        "sft.jsonl",
    ]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "corpus.txt").read_bytes() != (tmp_path / "c" / "corpus.txt").read_bytes()
    assert first["counts"]["documents"] == 300
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["seed"] == 5


def test_written_pairs_load_with_load_preferences(tmp_path):
    build_world.main(["--out", str(tmp_path), *SMALL])
    pairs = load_preferences(tmp_path / "preferences_safety.jsonl")
    assert len(pairs) > 20 and set(pairs["strength"]) <= {
        "significantly_better",
        "better",
        "slightly_better",
        "negligibly_better",
        "unsure",
    }
    assert any(pairs["is_safety"])


def test_written_demonstrations_load_as_sft_dialogues(tmp_path):
    build_world.main(["--out", str(tmp_path), *SMALL])
    records = read_dialogue_records(str(tmp_path / "sft.jsonl"))
    assert len(records) == 40
    assert all(r["messages"][-1]["role"] == "assistant" and r["loss_on"] in ("all", "last") for r in records)
