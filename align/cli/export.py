"""Export an align checkpoint as a plain transformers Llama directory (`model_type: llama`, with its tokenizer),
which transformers' `LlamaForCausalLM`, vLLM, llama.cpp's converters and TRL load without align installed.

    align export --model runs/demo/round-3/ppo/final --output_dir runs/demo/llama
    python -m align.cli.export --model runs/sft/final --output_dir exported/sft

The training commands do the same at their end with `--export_llama DIR`. The directory is written atomically:
it appears complete or not at all.
"""

from dataclasses import dataclass, field

from ..checkpoint import export_llama
from ..config import ONE_LINE_ERRORS, exit_with_error, parse_config


@dataclass
class ExportConfig:
    model: str = field(metadata={"help": "an align causal-LM checkpoint directory (a stage's final/)"})
    output_dir: str = field(metadata={"help": "where the plain Llama directory is written"})


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config = parse_config(ExportConfig, argv, prog, description=__doc__)
    try:
        written = export_llama(config.model, config.output_dir)
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error), prog)
    print(f"plain Llama directory: {written}")


if __name__ == "__main__":
    main()
