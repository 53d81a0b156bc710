"""Sharding models over the processes with torch's FSDP2 (`fully_shard`), for the RL stages.

Llama 2 ran 70B PPO on FSDP (docs/method.md §7): the models did not fit whole on one GPU. PPO and rejection
sampling use these helpers for the models they hold:

- `shard_model(model)`: every decoder layer (the model's `_no_split_modules`, as transformers and
  `recipes/accelerate/fsdp.yaml` wrap them) becomes one FSDP unit, then the model itself (or the submodules
  given as `roots`, for a model called through its parts). Each process keeps 1/N of every weight; a forward
  gathers one layer's weights at a time and frees them after, so the peak is one layer whole, not the model.
- Every process must then run the same number of forwards, since each one is a collective: the stages give
  each process the same number of rows, chunked the same way, and generate with `synced_gpus=True` (a process
  whose rows are all finished keeps stepping until every process is done, discarding its steps).
- `gathered_model(model)`: the whole model, unsharded, on the main process (for `save_pretrained`); every
  process must call it.

On one process there is nothing to shard over: `shard_model` leaves the model as it is, so a run gives the same
results on one process and on several. Offloading sharded weights to CPU memory (FSDP2's `CPUOffloadPolicy`)
needs a GPU and is not offered yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from peft import PeftModel, get_peft_model
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from .lora import base_model
from .modeling import decoder_trunk

SHARD_FROZEN_HELP = (
    "shard the frozen models (reference, reward models; rejection sampling's policy too) over the processes with "
    "FSDP2 instead of placing them whole on every process (align.plan's --shard_frozen)"
)
FSDP_HELP = (
    "shard the trained policy and value model over the processes with FSDP2 (one unit per decoder layer), "
    "generating with every process stepping together (align.plan's --strategy fsdp)"
)


def sharding_active() -> bool:
    """Whether there are processes to shard over (a process group of more than one)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard_model(
    model: torch.nn.Module, roots: Sequence[torch.nn.Module] | None = None, mixed_precision: str = "no"
) -> torch.nn.Module:
    """Shard `model` in place with FSDP2: each decoder layer, then each of `roots` (default: the model); a no-op
    on one process. `roots` are the modules the caller runs forward on (a value model read through its trunk
    and its score head, not its own forward). Returns `model`."""
    if not sharding_active():
        return model
    policy = (
        {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)}
        if mixed_precision == "bf16"
        else {}
    )
    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    if not layer_classes:
        raise ValueError(f"{type(model).__name__}: no _no_split_modules to shard by (a transformers model has them)")
    for module in model.modules():
        if type(module).__name__ in layer_classes:
            fully_shard(module, **policy)
    for root in roots or [model]:
        fully_shard(root, **policy)
    return model


def causal_lm_parts(causal_lm: torch.nn.Module, what: str) -> list[torch.nn.Module]:
    """The trunk and LM head of a causal LM, the units it is sharded by (PPO and the likelihood reward source run
    them one by one). A model that ties its LM head to its input embeddings would have one weight in two units:
    refused with one line."""
    head = causal_lm.get_output_embeddings()
    if head.weight is causal_lm.get_input_embeddings().weight:
        raise ValueError(
            f"{what}: the model ties its LM head to its input embeddings (tie_word_embeddings), which FSDP2 "
            f"sharding (fsdp / shard_frozen) does not split yet; run without sharding"
        )
    return [decoder_trunk(causal_lm), head]


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether any part of `model` is an FSDP2 unit."""
    return any(isinstance(module, FSDPModule) for module in model.modules())


def _unsharded_class(model: torch.nn.Module) -> type:
    # fully_shard swaps a module's class for `FSDP<Class>(FSDPModule, Class)`.
    cls = type(model)
    return next(base for base in cls.__bases__ if base is not FSDPModule) if isinstance(model, FSDPModule) else cls


def gathered_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """The whole of a (possibly sharded) transformers model, or peft model around one, unsharded on the CPU of
    the main process (None on the others; a sharded model needs every process to call this). An unsharded model
    is returned as it is."""
    if not is_sharded(model):
        return model
    state = full_state_dict(model)
    if dist.get_rank() != 0:
        return None
    base = base_model(model)
    with torch.device("meta"):
        whole = _unsharded_class(base)(base.config)
        if isinstance(model, PeftModel):  # the same adapters around it (their weights come with the state)
            whole = get_peft_model(whole, model.peft_config[model.active_adapter])
    whole.load_state_dict(state, assign=True)
    buffers = dict(model.named_buffers())  # FSDP2 leaves buffers (rotary frequencies) whole on every process
    for name, buffer in whole.named_buffers():
        if buffer.is_meta:
            owner, _, attribute = name.rpartition(".")
            whole.get_submodule(owner).register_buffer(attribute, buffers[name].cpu(), persistent=False)
    if getattr(model, "generation_config", None) is not None:
        whole.generation_config = model.generation_config
    return whole.eval()


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s whole state dict on the CPU of the main process (empty elsewhere when sharded; every process
    must call it), or its own state dict when it is not sharded."""
    if not is_sharded(module):
        return module.state_dict()
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a whole state dict (as `full_state_dict` returns) into `module`, sharding it as the module is."""
    if is_sharded(module):
        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))
    else:
        module.load_state_dict(state)


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state keyed by parameter name (the same on any number of processes and with or
    without sharding), on the main process (empty elsewhere); every process must call it."""
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load `full_optimizer_state`'s result into `optimizer` (sharding it as the model is)."""
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
