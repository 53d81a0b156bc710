"""align.world.collection: the policy's answers a round's collection gives the world's annotator."""

from align.data import load_tokenizer
from align.generation import chat_prompt_texts, complete
from align.modeling import load_causal_lm
from align.world import World
from align.world.collection import sample_answers


def test_greedy_first_puts_the_greedy_answer_before_the_same_samples(chat_model):
    """With `greedy_first` each prompt's first answer is the policy's greedy answer (what the evaluation judges)
    and the others are the samples the same seed gives without it, so the option changes nothing else."""
    model, tokenizer = load_causal_lm(chat_model, "policy"), load_tokenizer(chat_model)
    prompts = World(seed=0).prompts(6, "train", seed=5)
    with_greedy = sample_answers(model, tokenizer, prompts, 3, seed=1, greedy_first=True)
    sampled = sample_answers(model, tokenizer, prompts, 2, seed=1)
    greedy = complete(model, tokenizer, chat_prompt_texts(tokenizer, [p.messages for p in prompts]), max_new_tokens=48)
    assert [answers[0] for answers in with_greedy] == greedy
    assert [answers[1:] for answers in with_greedy] == sampled
    assert sample_answers(model, tokenizer, prompts, 3, seed=1, greedy_first=True) == with_greedy  # reproducible
