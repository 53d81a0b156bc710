"""The pretrained base model's likelihood of an answer as a judge of rm_contrasts.py's pairs (issue 33).

The demo's reward models rank a right sum or fact against its near miss at about chance (rm_contrasts.py), yet
the pretrained model they start from ranks them right almost every time by how likely it finds each answer
(rounds_compound.md, fourteenth session): the knowledge is in the base model, and a scalar head trained on 2,500
noisy preference pairs does not learn to read it.

`python eval/experiments/base_likelihood.py DIR...` prints rm_contrasts.py's table with causal LMs as the judges,
each answer scored by its mean log-probability per token after the prompt (align.logprobs.answer_logprobs, what
the `likelihood` reward source of align.reward_sources scores with; a round uses the base model as
`{likelihood: round:base}` in its reward spec).
"""

from __future__ import annotations

from typing import Any


def likelihood_judge(path: str) -> Any:
    """The causal LM in `path` as a scorer of world prompts' answers (rm_contrasts.py's `Scorer`)."""
    from align.reward_sources import LikelihoodSource

    source = LikelihoodSource(path, name="model")
    return lambda prompts, answers: source([p.messages for p in prompts], answers).tolist()


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """`python eval/experiments/base_likelihood.py DIR...`: rm_contrasts.py's table with causal LMs as the judges,
    each answer scored by its mean log-probability under the model."""
    from rm_contrasts import judge_contrasts  # this script's folder

    from align.checkpoint import require_model_dir

    return judge_contrasts(
        argv, __doc__, "causal LM directories (a pretrained base, an SFT model, a policy)",
        lambda path: require_model_dir(path, "model"), lambda path: likelihood_judge(str(path)),
        "model (mean log-likelihood)", "base_likelihood",
    )  # fmt: skip


if __name__ == "__main__":
    main()
