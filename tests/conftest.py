"""Shared test set-up: offline Hugging Face, deterministic CPU torch, tiny models built in code."""

import os
import shutil

# Without this a local path that does not exist is taken for a Hub repo id and retried for about a minute.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import align  # noqa: E402,F401  (registers the Auto classes)
from align.data import train_tokenizer  # noqa: E402
from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    """A free local port for a server or a rendezvous: tests may run side by side (pytest -n), and two launches
    on torchrun's default port would meet each other ("0" is not accepted by torchrun's store)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two_processes(script: str, *args: str, timeout: float | None = None):
    """Run a recipe as 2 processes on the CPU (gloo). accelerate's `--cpu --num_processes 2` starts only one
    process (its simple launcher needs an mpirun hostfile for more), so use the torchrun launcher; the stages
    select the CPU themselves when there is no GPU. `timeout` (seconds) turns a hang (processes a collective
    apart) into a failure."""
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        script,
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          timeout=timeout)  # fmt: skip


def one_and_two_process_losses(recipe: str, args: list[str], out) -> tuple[dict, dict]:
    """Train with `recipe` twice: 2 processes with gradient accumulation 1 (in `out/two`) and 1 process
    accumulating 2 micro-batches (in `out/one`); returns the logged loss by step of each, (one, two). The two
    see the same examples per optimizer step, so their losses should match."""
    import subprocess
    import sys

    from align.tracking import read_metrics

    two = launch_two_processes(recipe, *args, "--output_dir", str(out / "two"), "--gradient_accumulation_steps", "1")
    assert two.returncode == 0, two.stderr[-2000:]
    command = [sys.executable, recipe, *args, "--output_dir", str(out / "one"), "--gradient_accumulation_steps", "2"]
    one = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert one.returncode == 0, one.stderr[-2000:]

    def losses(run: str) -> dict:
        return {r["step"]: r["loss"] for r in read_metrics(out / run / "metrics.jsonl") if "loss" in r}

    return losses("one"), losses("two")


# A few lines of text in the style of the chat data; enough for a 600-token BPE vocabulary.
TOKENIZER_TEXT = [
    "The quick brown fox jumps over the lazy dog. What is 12 plus 30? The answer is 42.",
    "Act as a pirate. Only talk about the sea. Always answer in one sentence.",
    "Hello! How can I help you today? I cannot help with that, but here is a safer idea.",
    "Paris is the capital of France. Seven is a prime number. Bread needs flour, water and yeast.",
] * 20


@pytest.fixture
def tiny_config() -> AlignLlamaConfig:
    """The `tiny` preset with a small vocabulary: 2 layers, 4 query heads, 2 kv heads."""
    return AlignLlamaConfig.from_preset("tiny", vocab_size=256, max_position_embeddings=128)


@pytest.fixture
def tiny_model(tiny_config) -> AlignLlamaForCausalLM:
    torch.manual_seed(0)
    return AlignLlamaForCausalLM(tiny_config).eval()


@pytest.fixture(scope="session")
def tokenizer():
    """A Llama-2-style tokenizer trained in code (600 tokens, byte fallback, the Llama 2 chat template)."""
    return train_tokenizer(TOKENIZER_TEXT, vocab_size=600)


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    """A tiny model pretrained for 150 steps on the world corpus (about 15 s)."""
    from align.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("pretrain")
    return pretrain(
        PretrainConfig(
            output_dir=str(out),
            dataset="world",
            model_preset="tiny",
            seq_length=128,
            per_device_batch_size=8,
            max_steps=150,
            warmup_steps=10,
            lr=3e-3,
            save_steps=1000,
            logging_steps=50,
            world_documents=6000,
        )
    )


@pytest.fixture(scope="session")
def chat_model(pretrained, tmp_path_factory):
    """The tiny pretrained model after 2 epochs of SFT on 400 world demonstrations (about 15 s)."""
    from align.sft import SFTConfig, sft

    out = tmp_path_factory.mktemp("sft")
    return sft(
        SFTConfig(
            model=str(pretrained),
            output_dir=str(out),
            dataset="world",
            world_dialogues=400,
            max_length=512,
            num_train_epochs=2,
            lr=3e-3,
            per_device_batch_size=8,
            gradient_accumulation_steps=1,
            logging_steps=10,
            save_steps=1000,
            warmup_ratio=0.05,
        )
    )


@pytest.fixture(scope="session")
def reward_models(chat_model, tmp_path_factory):
    """Helpfulness and safety reward models trained from the tiny chat model (about 40 s)."""
    from align.reward_model import RewardModelConfig, train_reward_model

    out = tmp_path_factory.mktemp("rm")
    models = {}
    for target in ("helpfulness", "safety"):
        models[target] = train_reward_model(
            RewardModelConfig(
                model=str(chat_model),
                target=target,
                output_dir=str(out / target),
                helpfulness_data="world",
                safety_data="world",
                world_pairs=3000,
                max_length=256,
                num_train_epochs=2,
                lr=1e-3,
                per_device_batch_size=16,
                gradient_accumulation_steps=1,
                logging_steps=20,
                save_steps=1000,
            )
        )
    return models


CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def byte_level_tokenizer(
    texts, vocab_size: int = 700, chat_template: str | None = CHATML_TEMPLATE, specials: list[str] | None = None,
    bos: str | None = "<|endoftext|>", eos: str = "<|endoftext|>", pad: str | None = None,
):  # fmt: skip
    """A GPT-2-style byte-level BPE tokenizer (not Llama's vocabulary) with ChatML special tokens, the kind a
    user brings: `<|endoftext|>` is its bos and eos (as GPT-2's), it has no pad and no unk; `chat_template=None`
    leaves it without a chat template. `specials`, `bos`, `eos` and `pad` give another family's tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = specials or ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        additional_special_tokens=[token for token in specials if token not in (bos, eos, pad)],
        chat_template=chat_template,
        model_max_length=512,
    )


@pytest.fixture(scope="session")
def chatml_tokenizer():
    return byte_level_tokenizer(TOKENIZER_TEXT)


@pytest.fixture(scope="session")
def user_models(tmp_path_factory):
    """A user's project (`tests/user_project.py`) with its chat model and both reward models, trained by the
    library on the user's files only (about 15 s): (data paths, {"sft", "helpfulness", "safety"})."""
    from pathlib import Path

    from user_project import write_user_project

    from align.reward_model import RewardModelConfig, train_reward_model
    from align.sft import SFTConfig, sft

    out = Path(tmp_path_factory.mktemp("user"))
    data = write_user_project(out / "project")
    small = dict(max_length=256, per_device_batch_size=4, gradient_accumulation_steps=1, save_steps=1000)
    chat = sft(SFTConfig(model=data["model"], dataset=data["sft"], output_dir=str(out / "sft"), num_train_epochs=3,
                         lr=3e-3, **small))  # fmt: skip
    models = {"sft": str(chat)}
    for target in ("helpfulness", "safety"):
        models[target] = str(train_reward_model(RewardModelConfig(
            model=str(chat), target=target, output_dir=str(out / target), helpfulness_data=data["helpfulness"],
            safety_data=data["safety"], eval_data=data[f"{target}_eval"], num_train_epochs=2, lr=1e-3, **small,
        )))  # fmt: skip
    return data, models


# -- a real browser: Debian's chromium through its chromedriver (.ci/run installs both; nothing is downloaded) --

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="no chromium/chromedriver here (Debian: "
                                   "apt-get install chromium chromium-driver; .ci/run installs them)")  # fmt: skip


def browser(width: int = 1280, height: int = 900):
    """Headless chromium driven by selenium; its console messages are readable with `get_log('browser')`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)  # no driver download
