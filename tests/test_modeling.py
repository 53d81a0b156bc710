"""The model against transformers' Llama: same weights, same numbers; plus the contract of the config."""

import json

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from align.modeling import (
    PRESETS,
    AlignLlamaConfig,
    AlignLlamaForCausalLM,
    AlignLlamaForSequenceClassification,
    convert_mha_to_gqa,
    export_to_llama,
    to_llama_config,
)
from align.modeling.modeling_align_llama import CACHE_FIELD

ATOL = 1e-5


def make_pair(config, cls=AlignLlamaForCausalLM, llama_cls=LlamaForCausalLM, seed=0):
    """Our model and transformers' Llama with identical random weights, both in eval mode."""
    torch.manual_seed(seed)
    ours = cls(config).eval()
    theirs = llama_cls(to_llama_config(config)).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def padded_batch(vocab_size, lengths, side, pad_id=0, seed=1):
    """Random token rows of the given lengths padded to the longest on `side`; returns ids, mask."""
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad_id)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens = torch.randint(1, vocab_size, (n,), generator=gen)
        where = slice(0, n) if side == "right" else slice(T - n, T)
        ids[row, where], mask[row, where] = tokens, 1
    return ids, mask


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_logits_match_llama_without_padding(num_kv_heads):
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=256, num_key_value_heads=num_kv_heads)
    ours, theirs = make_pair(config)
    ids = torch.randint(0, 256, (3, 17))
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("num_kv_heads", [4, 2], ids=["mha", "gqa"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_logits_match_llama_with_padding(num_kv_heads, side):
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=256, num_key_value_heads=num_kv_heads, pad_token_id=0)
    ours, theirs = make_pair(config)
    ids, mask = padded_batch(256, [9, 5, 2], side)
    # transformers' Llama counts positions from index 0 unless told otherwise; ours counts from each row's
    # first real token, so give it the same positions explicitly.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    our_logits = ours(ids, attention_mask=mask).logits
    their_logits = theirs(ids, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    assert torch.isfinite(our_logits).all()
    torch.testing.assert_close(our_logits[real], their_logits[real], atol=ATOL, rtol=0)


def test_left_padding_does_not_change_a_row():
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=256, pad_token_id=0)
    torch.manual_seed(0)
    model = AlignLlamaForCausalLM(config).eval()
    ids, mask = padded_batch(256, [8, 3], "left")
    batched = model(ids, attention_mask=mask).logits
    alone = model(ids[1:, -3:]).logits
    torch.testing.assert_close(batched[1, -3:], alone[0], atol=ATOL, rtol=0)


def test_sequence_classification_matches_llama():
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=256, pad_token_id=0, num_labels=1)
    ours, theirs = make_pair(config, AlignLlamaForSequenceClassification, LlamaForSequenceClassification)
    ids, mask = padded_batch(256, [7, 4, 6], "right")
    ours_scores = ours(ids, attention_mask=mask).logits
    assert ours_scores.shape == (3, 1)
    torch.testing.assert_close(ours_scores, theirs(ids, attention_mask=mask).logits, atol=ATOL, rtol=0)
    # Left padding reads the same last token.
    left_ids, left_mask = padded_batch(256, [7, 4, 6], "left")
    torch.testing.assert_close(ours(left_ids, attention_mask=left_mask).logits, ours_scores, atol=ATOL, rtol=0)


@pytest.mark.parametrize("side", ["none", "left"])
def test_greedy_generate_matches_llama(side):
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=256, pad_token_id=0, eos_token_id=None)
    ours, theirs = make_pair(config)
    if side == "none":
        ids, mask = torch.randint(1, 256, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    else:
        ids, mask = padded_batch(256, [6, 3], "left")
    kwargs = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
    our_tokens = ours.generate(ids, **kwargs)
    assert our_tokens.shape == (2, ids.shape[1] + 12)
    assert torch.equal(our_tokens, theirs.generate(ids, **kwargs))
    # The cache changes nothing but speed.
    assert torch.equal(our_tokens, ours.generate(ids, **{**kwargs, "use_cache": False}))


def test_kv_cache_holds_only_kv_heads():
    sizes = {}
    for num_kv_heads in (4, 1):
        config = AlignLlamaConfig.from_preset("tiny", vocab_size=256, num_key_value_heads=num_kv_heads)
        model = AlignLlamaForCausalLM(config).eval()
        cache = getattr(model(torch.randint(0, 256, (2, 10)), use_cache=True), CACHE_FIELD)
        layer = cache.layers[0]
        assert layer.keys.shape == (2, num_kv_heads, 10, config.head_dim)
        assert layer.values.shape == (2, num_kv_heads, 10, config.head_dim)
        sizes[num_kv_heads] = sum(lay.keys.numel() + lay.values.numel() for lay in cache.layers)
    assert sizes[4] == 4 * sizes[1]  # memory scales with kv heads, not query heads


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_cached_decoding_equals_full_forward(tiny_model, name):
    """The cache continues under its current name and under the name of transformers < 5.24."""
    ids = torch.randint(0, 256, (2, 12))
    full = tiny_model(ids).logits
    out = tiny_model(ids[:, :8], use_cache=True)
    step = tiny_model(ids[:, 8:10], **{name: getattr(out, CACHE_FIELD)}, use_cache=True)
    last = tiny_model(ids[:, 10:], **{name: getattr(step, CACHE_FIELD)}, use_cache=True)
    torch.testing.assert_close(torch.cat([out.logits, step.logits, last.logits], 1), full, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="not both"):
        tiny_model(ids[:, 10:], cache=getattr(step, CACHE_FIELD), past_key_values=getattr(step, CACHE_FIELD))


@pytest.mark.parametrize("side", ["right", "left"])
def test_eager_attention_returns_weights_and_the_logits_of_sdpa(side, tmp_path):
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=256, pad_token_id=0)
    torch.manual_seed(0)
    AlignLlamaForCausalLM(config).save_pretrained(tmp_path)
    sdpa = AlignLlamaForCausalLM.from_pretrained(tmp_path).eval()
    eager = AlignLlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    ids, mask = padded_batch(256, [9, 5, 2], side)
    out = eager(ids, attention_mask=mask, output_attentions=True)
    real = mask.bool()
    torch.testing.assert_close(out.logits[real], sdpa(ids, attention_mask=mask).logits[real], atol=ATOL, rtol=0)
    assert len(out.attentions) == config.num_hidden_layers
    weights = out.attentions[0]  # (B, heads, T, T)
    assert weights.shape == (3, config.num_attention_heads, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, config.num_attention_heads, 9))
    # A real query spreads its weight over real keys at or before it, nothing else.
    query, key = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    allowed = (key <= query)[None] & real[:, None, :]  # (B, T, T)
    for row in range(3):
        on_real_queries = weights[row][:, real[row]]  # (heads, real T, T)
        assert (on_real_queries[:, ~allowed[row][real[row]]] == 0).all()
    with pytest.raises(ValueError, match="output_attentions: attention weights need attn_implementation='eager'"):
        sdpa(ids, attention_mask=mask, output_attentions=True)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_sequences_by_position_ids_stay_apart(tiny_model, implementation):
    """No attention mask and positions restarting at 0: each packed sequence gives its logits alone."""
    tiny_model.set_attn_implementation(implementation)
    first, second = torch.randint(1, 256, (1, 5)), torch.randint(1, 256, (1, 4))
    packed = tiny_model(torch.cat([first, second], 1), position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3]]))
    torch.testing.assert_close(packed.logits[:, :5], tiny_model(first).logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(packed.logits[:, 5:], tiny_model(second).logits, atol=ATOL, rtol=0)


def test_unknown_keyword_arguments_are_a_type_error(tiny_model):
    ids = torch.randint(0, 256, (1, 5))
    with pytest.raises(
        TypeError, match="AlignLlamaForCausalLM.forward\\(\\) got an unexpected keyword argument 'atention_mask'"
    ):
        tiny_model(ids, atention_mask=torch.ones_like(ids))
    with pytest.raises(TypeError, match="unexpected keyword argument 'token_type_ids'"):
        tiny_model.model(ids, token_type_ids=torch.zeros_like(ids))
    # What transformers' trainers and peft pass is taken: output flags, return_dict, the token count of the loss.
    out = tiny_model(ids, labels=ids, output_hidden_states=True, num_items_in_batch=torch.tensor(4), return_dict=False)
    assert isinstance(out, tuple) and out[0].ndim == 0


def test_gradient_checkpointing_gives_same_gradients(tiny_config):
    torch.manual_seed(0)
    model = AlignLlamaForCausalLM(tiny_config).train()
    ids = torch.randint(0, 256, (2, 16))
    model(ids, labels=ids).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(ids, labels=ids).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, plain[name], atol=1e-6, rtol=0, msg=name)


def test_labels_give_next_token_cross_entropy(tiny_model):
    ids = torch.randint(0, 256, (2, 9))
    out = tiny_model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_save_load_round_trip_is_safetensors(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "align_llama"
    loaded = AlignLlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 256, (1, 7))
    torch.testing.assert_close(loaded(ids).logits, tiny_model(ids).logits, atol=0, rtol=0)


def test_auto_classes_round_trip(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is AlignLlamaConfig
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path)) is AlignLlamaForCausalLM
    assert type(AutoModelForCausalLM.from_config(tiny_model.config)) is AlignLlamaForCausalLM
    reward = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=1)
    assert type(reward) is AlignLlamaForSequenceClassification
    # The reward model keeps the decoder weights and gets a fresh scalar head.
    torch.testing.assert_close(reward.model.embed_tokens.weight, tiny_model.model.embed_tokens.weight)
    assert reward.score.weight.shape == (1, tiny_model.config.hidden_size)


def test_loads_a_transformers_llama_directory(tmp_path):
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=256)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(to_llama_config(config)).eval()
    llama.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"
    ours = AlignLlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert ours.config.num_key_value_heads == 2 and ours.config.rope_theta == 10000.0
    ids = torch.randint(0, 256, (2, 11))
    torch.testing.assert_close(ours(ids).logits, llama(ids).logits, atol=ATOL, rtol=0)


def test_exports_to_a_transformers_llama_directory(tiny_model, tmp_path):
    export_to_llama(tiny_model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"
    llama = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 256, (2, 11))
    torch.testing.assert_close(llama(ids).logits, tiny_model(ids).logits, atol=ATOL, rtol=0)


def test_export_writes_the_tokenizer_and_generates_what_align_does(tokenizer, tmp_path):
    """A checkpoint saved with its tokenizer exports with it; transformers' text-generation pipeline then gives
    the same text from the plain Llama directory as from align's model."""
    from transformers import AutoTokenizer, pipeline

    config = AlignLlamaConfig.from_preset(
        "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    torch.manual_seed(0)
    AlignLlamaForCausalLM(config).save_pretrained(tmp_path / "align")
    tokenizer.save_pretrained(tmp_path / "align")
    ours = AlignLlamaForCausalLM.from_pretrained(tmp_path / "align")
    export_to_llama(ours, tmp_path / "llama")  # the tokenizer is found beside the weights
    llama_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "llama")
    assert llama_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert llama_tokenizer.chat_template == tokenizer.chat_template
    chat = [{"role": "user", "content": "What is 12 plus 30?"}]
    texts = [
        pipeline("text-generation", model=model, tokenizer=tok)(chat, max_new_tokens=10, do_sample=False)
        for model, tok in ((ours, tokenizer), (LlamaForCausalLM.from_pretrained(tmp_path / "llama"), llama_tokenizer))
    ]
    assert texts[0] == texts[1] and texts[0][0]["generated_text"][-1]["role"] == "assistant"


# Every RoPE type of transformers' Llama, with the fields it needs (head_dim 16 -> 8 frequencies). The context is 64
# positions; the scaled types were "pretrained" on 16 and the dynamic one on 32, so a 48-token input is past both.
ROPE_TYPES = {
    "default": {},
    "linear": {"factor": 4.0},
    "dynamic": {"factor": 2.0},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 16},
    "longrope": {
        "short_factor": [1.0 + i / 8 for i in range(8)],
        "long_factor": [2.0 + i for i in range(8)],
        "original_max_position_embeddings": 16,
    },
    "llama3": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
}


@pytest.mark.parametrize("rope_type", sorted(ROPE_TYPES))
def test_every_rope_type_matches_transformers_llama_past_the_original_context(rope_type, tmp_path):
    """Llama 3.x checkpoints carry `llama3` scaling: align's model gives transformers' logits (fp32, 1e-5) at
    positions past the original context, after a save / load round trip through a Llama directory."""
    rope = {"rope_type": rope_type, "rope_theta": 500000.0, **ROPE_TYPES[rope_type]}
    llama_config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32 if rope_type == "dynamic" else 64, rope_parameters=rope,
        tie_word_embeddings=True, eos_token_id=[1, 2],
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config).save_pretrained(tmp_path / "llama")
    llama = LlamaForCausalLM.from_pretrained(tmp_path / "llama").eval()
    ours = AlignLlamaForCausalLM.from_pretrained(tmp_path / "llama").eval()
    assert ours.config.rope_parameters == llama.config.rope_parameters
    ids = torch.randint(0, 256, (2, 48))
    torch.testing.assert_close(ours(ids).logits, llama(ids).logits, atol=1e-5, rtol=0)
    # Generation with a KV cache crosses the original context too (the dynamic types recompute per call).
    prompt = ids[:, :12]
    expected = llama.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = ours.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(got, expected)
    # The config round-trips: align's checkpoint and its export say what the user's said.
    ours.save_pretrained(tmp_path / "align")
    export_to_llama(AlignLlamaForCausalLM.from_pretrained(tmp_path / "align"), tmp_path / "back")
    back = json.loads((tmp_path / "back" / "config.json").read_text())
    original = json.loads((tmp_path / "llama" / "config.json").read_text())
    assert back["rope_parameters"] == original["rope_parameters"]
    assert (back["tie_word_embeddings"], back["eos_token_id"]) == (True, [1, 2])


def test_attention_bias_mlp_bias_and_head_dim_as_in_llama_config(tmp_path):
    llama_config = LlamaConfig(
        vocab_size=256, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, attention_bias=True, mlp_bias=True, hidden_act="gelu",
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config).save_pretrained(tmp_path)
    llama = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ours = AlignLlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert ours.model.layers[0].self_attn.q_proj.weight.shape == (64, 48)
    assert ours.model.layers[0].self_attn.q_proj.bias is not None and ours.model.layers[0].mlp.up_proj.bias is not None
    ids = torch.randint(0, 256, (2, 11))
    torch.testing.assert_close(ours(ids).logits, llama(ids).logits, atol=1e-5, rtol=0)


def test_bad_rope_parameters_name_the_field():
    with pytest.raises(ValueError, match=r"rope_parameters.rope_type: unknown RoPE type 'ntk'"):
        AlignLlamaConfig(rope_parameters={"rope_type": "ntk", "rope_theta": 10000.0})
    with pytest.raises(ValueError, match=r"rope_parameters: .*factor"):
        AlignLlamaConfig(rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0})
    with pytest.raises(ValueError, match=r"rope_parameters.rope_theta: must be a positive number"):
        AlignLlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": -1.0})
    with pytest.raises(ValueError, match="hidden_act: unknown activation 'swish2'"):
        AlignLlamaConfig(hidden_act="swish2")
    # An old align checkpoint's top-level rope_theta still loads (transformers folds it in).
    assert AlignLlamaConfig(rope_theta=500000.0).rope_parameters == {"rope_type": "default", "rope_theta": 500000.0}


def test_mha_to_gqa_mean_pools_kv_heads():
    config = AlignLlamaConfig.from_preset("tiny", vocab_size=256, num_key_value_heads=4)
    torch.manual_seed(0)
    mha = AlignLlamaForCausalLM(config).eval()
    gqa = convert_mha_to_gqa(mha, num_key_value_heads=2)
    assert gqa.config.num_key_value_heads == 2 and mha.config.num_key_value_heads == 4
    hd = config.head_dim
    for layer_mha, layer_gqa in zip(mha.model.layers, gqa.model.layers):
        for proj in ("k_proj", "v_proj"):
            old = getattr(layer_mha.self_attn, proj).weight  # (4 * hd, C)
            new = getattr(layer_gqa.self_attn, proj).weight  # (2 * hd, C)
            assert new.shape == (2 * hd, config.hidden_size)
            torch.testing.assert_close(new[:hd], (old[:hd] + old[hd : 2 * hd]) / 2)
            torch.testing.assert_close(new[hd:], (old[2 * hd : 3 * hd] + old[3 * hd :]) / 2)
        torch.testing.assert_close(layer_gqa.self_attn.q_proj.weight, layer_mha.self_attn.q_proj.weight)
    # Converting to as many kv heads as there are changes nothing.
    same = convert_mha_to_gqa(mha, num_key_value_heads=4)
    ids = torch.randint(0, 256, (1, 8))
    torch.testing.assert_close(same(ids).logits, mha(ids).logits)
    with pytest.raises(ValueError, match="num_key_value_heads"):
        convert_mha_to_gqa(mha, num_key_value_heads=3)


@pytest.mark.parametrize("preset, published", [("7b", 6.74e9), ("13b", 13.0e9), ("34b", 33.7e9), ("70b", 69.0e9)])
def test_preset_parameter_counts(preset, published):
    config = AlignLlamaConfig.from_preset(preset)
    assert config.head_dim == 128 and config.max_position_embeddings == 4096
    with torch.device("meta"):
        model = AlignLlamaForCausalLM(config)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - published) / published < 0.005, count


def test_presets_are_the_paper_shapes():
    assert PRESETS["70b"] == dict(
        hidden_size=8192,
        num_attention_heads=64,
        num_key_value_heads=8,
        num_hidden_layers=80,
        intermediate_size=28672,
        vocab_size=32000,
    )
    config = AlignLlamaConfig.from_preset("7b")
    assert (config.rope_theta, config.rms_norm_eps, config.tie_word_embeddings) == (10000.0, 1e-5, False)
    assert AlignLlamaConfig.from_preset("small", num_hidden_layers=3).num_hidden_layers == 3


def test_cpu_presets_fit_the_shipped_tokenizer_and_bitsandbytes_blocks():
    """The CPU presets' vocabulary is the demo tokenizer's (no id decodes to nothing) and their SwiGLU width is
    Meta's rule rounded to 32, the block of bitsandbytes' 4-bit CPU kernels (7B's 11008 is the rule at 256)."""
    from align.data import load_tokenizer
    from align.modeling import llama_intermediate_size
    from conftest import ROOT

    tokenizer = load_tokenizer(f"{ROOT}/data/tokenizer")
    for preset in ("tiny", "small"):
        assert PRESETS[preset]["vocab_size"] == len(tokenizer)
        hidden = PRESETS[preset]["hidden_size"]
        assert PRESETS[preset]["intermediate_size"] == llama_intermediate_size(hidden, multiple_of=32)
        assert PRESETS[preset]["intermediate_size"] % 32 == 0
    assert llama_intermediate_size(4096) == PRESETS["7b"]["intermediate_size"] == 11008
    assert llama_intermediate_size(5120) == PRESETS["13b"]["intermediate_size"] == 13824
    assert tokenizer.decode([len(tokenizer) - 1]) != ""


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_attention_heads=5), r"num_attention_heads: must divide hidden_size=64.*allowed: \[1, 2, 4, 8"),
        (dict(num_key_value_heads=3), r"num_key_value_heads: must divide num_attention_heads=4.*allowed: \[1, 2, 4\]"),
        (dict(hidden_size=0), r"hidden_size: must be a positive integer"),
        (dict(num_hidden_layers=-1), r"num_hidden_layers: must be a positive integer"),
        (dict(vocab_size=2.5), r"vocab_size: must be a positive integer"),
        (dict(rms_norm_eps=0.0), r"rms_norm_eps: must be positive"),
    ],
)
def test_bad_configs_raise_value_error_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        AlignLlamaConfig.from_preset("tiny", **overrides)


def test_unknown_preset_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"preset: unknown preset '7B'.*'13b', '34b', '70b', '7b', 'small', 'tiny'"):
        AlignLlamaConfig.from_preset("7B")


def test_too_long_input_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="max_position_embeddings=128"):
        tiny_model(torch.zeros(1, 129, dtype=torch.long))


def test_fsdp_on_cpu_matches_one_process_resumes_from_a_sharded_checkpoint_and_loads_on_one_process(tmp_path):
    """torch FSDP2 (one unit per decoder layer, 2 gloo processes, half the batch each) gives the losses of one
    process on the whole batch; a sharded checkpoint resumes to the same losses; the gathered model loads on
    one process with the weights of the single-process run."""
    import subprocess
    import sys

    import fsdp_cpu_run

    from conftest import ROOT, free_port

    def torchrun(mode):
        port = str(free_port())
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
        done = subprocess.run(
            [*command, "tests/fsdp_cpu_run.py", str(tmp_path), mode], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return {int(k): v for k, v in json.loads((tmp_path / f"losses_{mode}.json").read_text()).items()}

    straight, saved, resumed = torchrun("straight"), torchrun("save"), torchrun("resume")
    model = fsdp_cpu_run.tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
    for step, rows in enumerate(fsdp_cpu_run.batches()):
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        assert straight[step] == pytest.approx(loss.item(), abs=1e-4), step
    assert saved == {0: pytest.approx(straight[0], abs=1e-6), 1: pytest.approx(straight[1], abs=1e-6)}
    assert resumed == {2: pytest.approx(straight[2], abs=1e-5), 3: pytest.approx(straight[3], abs=1e-5)}
    loaded = AlignLlamaForCausalLM.from_pretrained(tmp_path / "final")
    for name, value in model.state_dict().items():
        assert torch.allclose(loaded.state_dict()[name], value, atol=1e-4), name


# A process in which `import align` fails, as for a user who only has transformers: it loads the checkpoint with
# the code the checkpoint carries and prints the logits and greedy tokens of fixed inputs as JSON.
_LOAD_WITHOUT_ALIGN = r"""
import importlib.abc, json, sys
class NoAlign(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "align" or name.startswith("align."):
            raise ImportError(f"{name} is blocked in this process")
sys.meta_path.insert(0, NoAlign())
try:
    import align  # noqa: F401
    raise SystemExit("align was importable")
except ImportError:
    pass
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
path, head, ids, mask = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
ids, mask = torch.tensor(ids), torch.tensor(mask)
auto = AutoModelForCausalLM if head == "causal" else AutoModelForSequenceClassification
model = auto.from_pretrained(path, trust_remote_code=True).eval()
result = {"class": type(model).__module__ + "." + type(model).__name__}
with torch.no_grad():
    result["logits"] = model(ids, attention_mask=mask).logits.tolist()
    if head == "causal":
        kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
        result["generated"] = model.generate(ids, **kwargs).tolist()
print(json.dumps(result))
"""


@pytest.mark.parametrize("head", ["causal", "reward"])
def test_a_checkpoint_loads_with_trust_remote_code_where_align_cannot_be_imported(head, tmp_path):
    import os
    import subprocess
    import sys

    config = AlignLlamaConfig.from_preset("tiny", vocab_size=256, pad_token_id=0, eos_token_id=None, num_labels=1)
    torch.manual_seed(0)
    model = (AlignLlamaForCausalLM if head == "causal" else AlignLlamaForSequenceClassification)(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForCausalLM"] == "modeling_align_llama.AlignLlamaForCausalLM"
    assert {"configuration_align_llama.py", "modeling_align_llama.py"} <= {
        p.name for p in (tmp_path / "ckpt").iterdir()
    }

    ids, mask = padded_batch(256, [6, 3], "left")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_ALIGN, str(tmp_path / "ckpt"), head, json.dumps(ids.tolist()),
         json.dumps(mask.tolist())],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads(done.stdout.strip().splitlines()[-1])
    assert remote["class"].startswith("transformers_modules.") and "align." not in remote["class"]
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(torch.tensor(remote["logits"]), logits, atol=0, rtol=0)
    if head == "causal":
        kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert remote["generated"] == model.generate(ids, **kwargs).tolist()
