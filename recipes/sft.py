"""Supervised fine-tuning on the Llama 2 chat format (PIPELINE.md §4) with `align.sft`.

    python recipes/sft.py --config recipes/configs/sft/world_small.yaml
    accelerate launch recipes/sft.py --config recipes/configs/sft/7b.yaml --model /path/to/Llama-2-7b-hf
    python recipes/sft.py --config recipes/configs/sft/world_small.yaml --lora '{"r": 8, "alpha": 16}'

Starts from a checkpoint of this toolkit or any local Llama 2 directory. Every field of `SFTConfig` is a YAML
key and a command-line option (`--help`); a run resumes from its last complete checkpoint.
"""

from align.config import exit_with_error, parse_config
from align.sft import SFTConfig, sft


def main() -> None:
    config = parse_config(SFTConfig)
    try:
        final = sft(config)
    except (FileNotFoundError, ValueError) as error:
        exit_with_error(str(error))
    print(f"fine-tuned model: {final}")


if __name__ == "__main__":
    main()
