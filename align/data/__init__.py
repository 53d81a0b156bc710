"""Data for every stage: the tokenizer, the Llama 2 chat format, preference pairs and Ghost Attention."""

from .chat import (
    LLAMA2_CHAT_TEMPLATE,
    DialogueError,
    answer_end_token_ids,
    answer_mask,
    render,
    tokenize_dialogue,
    validate_dialogue,
)
from .gatt import GattInstruction, build_gatt_dialogue, sample_instruction, tokenize_gatt_dialogue
from .preferences import FORMATS, STRENGTHS, PreferenceDataError, load_preferences, normalize_strength
from .tokenizer import CHAT_TEMPLATE_HELP, load_tokenizer, prepare_tokenizer, train_tokenizer

__all__ = [
    "CHAT_TEMPLATE_HELP",
    "answer_end_token_ids",
    "answer_mask",
    "FORMATS",
    "LLAMA2_CHAT_TEMPLATE",
    "STRENGTHS",
    "DialogueError",
    "GattInstruction",
    "PreferenceDataError",
    "build_gatt_dialogue",
    "load_preferences",
    "load_tokenizer",
    "normalize_strength",
    "prepare_tokenizer",
    "render",
    "sample_instruction",
    "tokenize_dialogue",
    "tokenize_gatt_dialogue",
    "train_tokenizer",
    "validate_dialogue",
]
