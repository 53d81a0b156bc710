"""A few AdamW steps of the tiny model under torch FSDP2 on CPU processes (gloo), for `tests/test_modeling.py`.

    torchrun --nproc_per_node 2 tests/fsdp_cpu_run.py OUT_DIR {straight|save|resume}

Every decoder layer is one FSDP unit (as `recipes/accelerate/fsdp.yaml` wraps them). Each process takes its
half of a fixed batch. `straight` runs steps 0-3 and writes `final/` (the full model, gathered, loadable on one
process); `save` runs steps 0-1 and writes a sharded checkpoint with torch.distributed.checkpoint; `resume` loads
it and runs steps 2-3. Losses (averaged over processes) go to OUT_DIR/losses_<mode>.json.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import fully_shard

from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM
from align.modeling.modeling_align_llama import AlignLlamaDecoderLayer

STEPS = 4
BATCH, LENGTH = 4, 32


def tiny_model() -> AlignLlamaForCausalLM:
    torch.manual_seed(0)
    return AlignLlamaForCausalLM(AlignLlamaConfig.from_preset("tiny", vocab_size=256, max_position_embeddings=128))


def batches() -> torch.Tensor:
    return torch.randint(256, (STEPS, BATCH, LENGTH), generator=torch.Generator().manual_seed(1))


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = tiny_model()
    for module in model.modules():
        if isinstance(module, AlignLlamaDecoderLayer):
            fully_shard(module)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
    steps = {"straight": range(STEPS), "save": range(2), "resume": range(2, STEPS)}[mode]
    if mode == "resume":
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=str(out / "sharded"))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    losses = {}
    data = batches()
    for step in steps:
        rows = data[step, rank * BATCH // world : (rank + 1) * BATCH // world]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses[step] = mean.item() / world
    if mode == "save":
        model_state, optimizer_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(out / "sharded"))
    if mode == "straight":
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            single = tiny_model()
            single.load_state_dict(full)
            single.save_pretrained(out / "final")
    if rank == 0:
        (out / f"losses_{mode}.json").write_text(json.dumps(losses))
    dist.barrier()  # every process done before teardown (gloo aborts a process torn down mid-collective)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
