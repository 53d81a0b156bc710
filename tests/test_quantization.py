"""bitsandbytes 4-bit and 8-bit on the CPU presets, and a QLoRA step (peft on a 4-bit model).

Every linear layer of the `tiny` and `small` presets has widths that are multiples of 32 (bitsandbytes' 4-bit CPU
kernels work in blocks of 32), so transformers quantizes all of them; the output head stays in full precision, as
transformers does for every model. Skipped only where bitsandbytes is not installed (it is in the dev extra).
"""

import pytest
import torch

bitsandbytes = pytest.importorskip("bitsandbytes")

from transformers import BitsAndBytesConfig  # noqa: E402

from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM  # noqa: E402

SCHEMES = {
    "4bit": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
    "8bit": dict(load_in_8bit=True),
}


def saved_preset(preset: str, folder) -> AlignLlamaForCausalLM:
    config = AlignLlamaConfig.from_preset(preset, pad_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    model = AlignLlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return model


def quantized(folder, scheme: str) -> AlignLlamaForCausalLM:
    return AlignLlamaForCausalLM.from_pretrained(
        folder, quantization_config=BitsAndBytesConfig(**SCHEMES[scheme]), device_map="cpu", dtype=torch.float32
    ).eval()


@pytest.mark.parametrize("scheme", ["4bit", "8bit"])
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_quantized_presets_run_forward_and_generate(preset, scheme, tmp_path):
    full = saved_preset(preset, tmp_path)
    model = quantized(tmp_path, scheme)
    layer = model.model.layers[0]
    expected = bitsandbytes.nn.Linear4bit if scheme == "4bit" else bitsandbytes.nn.Linear8bitLt
    for linear in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.mlp.gate_proj, layer.mlp.down_proj):
        assert isinstance(linear, expected)
    ids = torch.randint(3, full.config.vocab_size, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # a left-padded row
    with torch.no_grad():
        logits, reference = model(ids, attention_mask=mask).logits, full(ids, attention_mask=mask).logits
    real = mask.bool()
    assert torch.isfinite(logits).all()
    # Quantization error, not a broken model: the quantized logits follow the full-precision ones closely.
    correlation = torch.corrcoef(torch.stack([logits[real].flatten(), reference[real].flatten()]))[0, 1]
    assert correlation > 0.95, correlation
    generated = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert generated.shape == (2, 18)


def test_a_qlora_step_trains_the_adapters_of_a_4bit_model(tmp_path):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    saved_preset("tiny", tmp_path)
    model = prepare_model_for_kbit_training(quantized(tmp_path, "4bit"), use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(3, model.config.vocab_size, (4, 16))
    losses = []
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
    changed = [name for name, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[name])]
    assert any("lora_B" in name for name in changed)
