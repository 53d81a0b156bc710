"""Hub push/pull with the real huggingface_hub client against a local Hub-compatible server (tests/hub_server.py),
and to a local folder; failures leave the local checkpoint intact."""

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file

from align.hub import HubError, pull_checkpoint, push_checkpoint
from align.modeling import AlignLlamaForCausalLM
from hub_server import HubServer


@pytest.fixture
def checkpoint(tmp_path, tiny_model, tokenizer):
    folder = tmp_path / "final"
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def hub(monkeypatch):
    """The local Hub; the suite's offline switch is lifted for it alone (it only ever talks to 127.0.0.1)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with HubServer(token="hf_test_token") as server:
        yield server


def same_weights(a, b):
    left, right = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_push_and_pull_round_trip_through_the_hub_keeps_weights_and_revisions(tmp_path, checkpoint, hub):
    url = push_checkpoint(
        checkpoint, "me/align-demo", "round-3-ppo", metrics={"gold_helpfulness": 0.7}, endpoint=hub.endpoint,
        token="hf_test_token",
    )  # fmt: skip
    assert "me/align-demo/commit/" in url
    # A second stage on its own branch must not change the first one.
    other = tmp_path / "other"
    model = AlignLlamaForCausalLM.from_pretrained(checkpoint)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    model.save_pretrained(other)
    push_checkpoint(other, "me/align-demo", "round-3-rs", endpoint=hub.endpoint, token="hf_test_token")
    pulled = pull_checkpoint("me/align-demo@round-3-ppo", tmp_path / "pulled", endpoint=hub.endpoint)
    assert same_weights(checkpoint, pulled)
    assert not same_weights(other, pulled)
    assert "gold_helpfulness | 0.7" in (pulled / "README.md").read_text()
    assert (pulled / "tokenizer.json").is_file()
    # The model's code travels with it: a user without align loads it with trust_remote_code (the card says so).
    assert {"configuration_align_llama.py", "modeling_align_llama.py"} <= {p.name for p in pulled.iterdir()}
    assert "trust_remote_code=True" in (pulled / "README.md").read_text()
    assert same_weights(other, pull_checkpoint("me/align-demo@round-3-rs", tmp_path / "rs", endpoint=hub.endpoint))
    branches = set(hub.state.repos["me/align-demo"]["branches"])
    assert {"main", "round-3-ppo", "round-3-rs"} <= branches


def test_push_failures_are_clear_and_leave_the_local_run_intact(tmp_path, checkpoint, hub):
    before = sorted(p.name for p in checkpoint.iterdir())
    with pytest.raises(HubError, match="me/x@round-1-rs failed: 401 Unauthorized"):
        push_checkpoint(checkpoint, "me/x", "round-1-rs", endpoint=hub.endpoint, token="wrong")
    with pytest.raises(HubError, match="me/x@round-1-rs failed"):
        push_checkpoint(checkpoint, "me/x", "round-1-rs", endpoint="http://127.0.0.1:9", token="hf_test_token")
    with pytest.raises(HubError, match="pull of me/nothing@main failed"):
        pull_checkpoint("me/nothing", tmp_path / "none", endpoint=hub.endpoint)
    assert sorted(p.name for p in checkpoint.iterdir()) == before
    assert not (tmp_path / "none").exists()


def test_a_local_folder_works_as_a_target(tmp_path, checkpoint):
    store = tmp_path / "shared_storage"
    store.mkdir()
    where = push_checkpoint(checkpoint, str(store), "round-2-sft", metrics={"steps": 10})
    assert where.endswith("round-2-sft")
    pulled = pull_checkpoint(f"file://{store}@round-2-sft", tmp_path / "pulled")
    assert same_weights(checkpoint, pulled)
    with pytest.raises(HubError, match="no checkpoint at"):
        pull_checkpoint(f"{store}@round-9", tmp_path / "missing")


def test_a_lora_adapter_is_pushed_pulled_and_merged_to_the_same_logits(tmp_path, checkpoint, hub):
    from peft import get_peft_model

    from align.lora import lora_config, merge_adapter

    model = get_peft_model(AlignLlamaForCausalLM.from_pretrained(checkpoint), lora_config({"r": 4, "dropout": 0.0}))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)  # as if trained: B starts at zero
    model.save_pretrained(tmp_path / "adapter")
    push_checkpoint(tmp_path / "adapter", "me/adapters", "round-1-sft-lora", endpoint=hub.endpoint,
                    token="hf_test_token")  # fmt: skip
    pulled = pull_checkpoint("me/adapters@round-1-sft-lora", tmp_path / "pulled", endpoint=hub.endpoint)
    merged = AlignLlamaForCausalLM.from_pretrained(merge_adapter(pulled, tmp_path / "merged", base=checkpoint))
    ids = torch.randint(3, 250, (1, 12))  # the tiny model's vocabulary is 256
    with torch.no_grad():
        expected, got = model.eval()(input_ids=ids).logits, merged.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, AlignLlamaForCausalLM.from_pretrained(checkpoint)(input_ids=ids).logits)


def test_local_targets_are_told_from_repo_ids_and_their_cards_load_the_folder(tmp_path, checkpoint, monkeypatch):
    from transformers import AutoModelForCausalLM

    from align.hub import is_hub_target

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert is_hub_target("me/align-demo") and is_hub_target("align-demo")
    for local in ("runs/hub", "./hub/mine", "/abs/hub", "~/hub", "a/b/c", "file:///tmp/x", "s3://bucket/x"):
        assert not is_hub_target(local), local  # runs/hub: its first folder exists here, though it does not yet
    push_checkpoint(checkpoint, "runs/hub", "round-1-sft")  # created, not sent to the Hub
    card = (tmp_path / "runs" / "hub" / "round-1-sft" / "README.md").read_text()
    path = str(tmp_path / "runs" / "hub" / "round-1-sft")
    assert f'AutoModelForCausalLM.from_pretrained("{path}")' in card and "revision=" not in card
    AutoModelForCausalLM.from_pretrained(path)  # the card's snippet works
    with pytest.raises(HubError, match=r"for a local folder, write \./hub/new"):
        push_checkpoint(checkpoint, "hub/new", "round-1-sft")  # offline: an "owner/name" goes to the Hub


def test_pickle_weights_are_refused_on_pull_and_on_load(tmp_path, checkpoint):
    """Only safetensors come in: a pulled checkpoint with a pickle weight file fails the pull (nothing kept), a
    folder whose only weights are pickle files is refused by every loader, with how to convert."""
    import shutil

    from align.checkpoint import require_model_dir

    store = tmp_path / "store"
    push_checkpoint(checkpoint, str(store), "round-1-sft")
    torch.save({"x": torch.zeros(1)}, store / "round-1-sft" / "pytorch_model.bin")
    with pytest.raises(HubError, match=r"carries pickle weights \(pytorch_model.bin\), refused: convert them"):
        pull_checkpoint(f"{store}@round-1-sft", tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()

    pickled = tmp_path / "pickled"
    shutil.copytree(checkpoint, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pickled holds pickle weights only \(pytorch_model.bin\), which align"):
        require_model_dir(pickled, "sft_model")
    (pickled / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"sft_model: .*pickled has no weights \(model.safetensors\)"):
        require_model_dir(pickled, "sft_model")


def test_a_pull_never_replaces_a_folder_align_did_not_write(tmp_path, checkpoint):
    """Pulling into a folder of the user's is refused with nothing changed; pulling again into the folder of an
    earlier pull replaces it."""
    store = tmp_path / "store"
    push_checkpoint(checkpoint, str(store), "round-1-sft")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's notes")
    with pytest.raises(HubError, match=r"mine: already holds files align did not write \(notes.txt\)"):
        pull_checkpoint(f"{store}@round-1-sft", mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    pulled = pull_checkpoint(f"{store}@round-1-sft", tmp_path / "pulled")
    assert pull_checkpoint(f"{store}@round-1-sft", pulled) == pulled and (pulled / "config.json").is_file()
