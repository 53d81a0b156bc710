"""Direct preference optimisation on preference pairs, with TRL's DPOTrainer (docs/stages/dpo.md).

    align dpo --config world_small                       # the demo: the world SFT model on the world's pairs
    align dpo --model runs/sft/final --dataset pairs.jsonl --output_dir runs/dpo
    align dpo --model my-chat-model --dataset hh.jsonl --data_format hh-rlhf --loss_type ipo --beta 0.5
    align dpo --model my-chat-model --dataset pairs.jsonl --loss_type sigmoid,sft --loss_weights 1,0.2  # Llama 3
    accelerate launch -m align dpo --config 7b_lora --model /path/to/chat-model --dataset pairs.jsonl
    python recipes/dpo.py --config recipes/configs/dpo/world_small.yaml      # the same, as a script

Every field of `DPOConfig` is a YAML key and a command-line option (`--help`); a run resumes from its last
complete checkpoint. The pairs may be in any format `align.data.load_preferences` reads (`--data_format`).
"""

from align.config import ONE_LINE_ERRORS, exit_with_error, parse_config
from align.dpo import DPOConfig, dpo


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config = parse_config(DPOConfig, argv, prog, description=__doc__)
    try:
        final = dpo(config)
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error), prog)
    print(f"DPO-trained model: {final}")


if __name__ == "__main__":
    main()
