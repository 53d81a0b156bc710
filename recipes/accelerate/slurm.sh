#!/bin/bash
# Example SLURM job: one `accelerate launch` per node, ranks and the main address from SLURM.
#   sbatch --nodes 8 recipes/accelerate/slurm.sh recipes/sft.py --config recipes/configs/sft/7b.yaml
# Check the layout first: python -m align.plan --preset 70b --stage sft --gpus 64 --strategy fsdp
#SBATCH --job-name=align
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=96
#SBATCH --exclusive
set -euo pipefail
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-recipes/accelerate/multi_node_fsdp.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_ADDRESS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}  # nodes read checkpoints from shared storage, not the Hub
srun bash -c "accelerate launch --config_file $ACCELERATE_CONFIG \
    --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank \$SLURM_PROCID --main_process_ip $MAIN_ADDRESS --main_process_port 29500 \
    $*"
