"""Pretrain a Llama 2 model on raw text (docs/method.md §2; docs/stages/pretrain.md) with `align.pretrain`.

    align pretrain --config recipes/configs/pretrain/world_small.yaml
    accelerate launch -m align pretrain --config recipes/configs/pretrain/7b.yaml --max_steps 200
    python recipes/pretrain.py --config recipes/configs/pretrain/world_small.yaml      # the same, as a script

Every field of `PretrainConfig` is a YAML key and a command-line option (listed below); the command line
wins. A run resumes from its last complete checkpoint when started again with the same output_dir.
"""

from align.config import ONE_LINE_ERRORS, exit_with_error, parse_config
from align.pretrain import PretrainConfig, pretrain


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config = parse_config(PretrainConfig, argv, prog, description=__doc__)
    try:
        final = pretrain(config)
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error), prog)
    print(f"pretrained model: {final}")


if __name__ == "__main__":
    main()
