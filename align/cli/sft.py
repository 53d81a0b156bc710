"""Supervised fine-tuning on a chat format, loss on answers only (docs/method.md §4; docs/stages/sft.md).

    align sft --config recipes/configs/sft/world_small.yaml
    accelerate launch -m align sft --config recipes/configs/sft/7b.yaml --model /path/to/Llama-2-7b-hf
    align sft --config recipes/configs/sft/world_small.yaml --lora '{"r": 8, "alpha": 16}'
    align sft --config recipes/configs/sft/world_small.yaml --export_llama runs/sft/llama
    python recipes/sft.py --config recipes/configs/sft/world_small.yaml      # the same, as a script

Starts from a checkpoint of this toolkit or any local Llama 2 directory. Every field of `SFTConfig` is a YAML
key and a command-line option (`--help`); a run resumes from its last complete checkpoint. `--export_llama DIR`
also writes the final model as a plain transformers Llama directory.
"""

from dataclasses import dataclass, field

from accelerate import PartialState

from align.checkpoint import EXPORT_LLAMA_HELP, export_llama
from align.config import ONE_LINE_ERRORS, exit_with_error, parse_config
from align.sft import SFTConfig, sft


@dataclass
class RecipeConfig(SFTConfig):
    export_llama: str | None = field(default=None, metadata={"help": EXPORT_LLAMA_HELP})


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config = parse_config(RecipeConfig, argv, prog, description=__doc__)
    try:
        final = sft(config)
        if config.export_llama and PartialState().is_main_process:
            print(f"plain Llama directory: {export_llama(final, config.export_llama)}")
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error), prog)
    print(f"fine-tuned model: {final}")


if __name__ == "__main__":
    main()
