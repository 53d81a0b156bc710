"""Pretrain a Llama 2 model (PIPELINE.md §2) with `align.pretrain`.

    python recipes/pretrain.py --config recipes/configs/pretrain/world_small.yaml
    accelerate launch recipes/pretrain.py --config recipes/configs/pretrain/7b.yaml --max_steps 200

Every field of `PretrainConfig` is a YAML key and a command-line option (`--help` lists them); the command
line wins. A run resumes from its last complete checkpoint when started again with the same output_dir.
"""

from align.config import ONE_LINE_ERRORS, exit_with_error, parse_config
from align.pretrain import PretrainConfig, pretrain


def main() -> None:
    config = parse_config(PretrainConfig)
    try:
        final = pretrain(config)
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error))
    print(f"pretrained model: {final}")


if __name__ == "__main__":
    main()
