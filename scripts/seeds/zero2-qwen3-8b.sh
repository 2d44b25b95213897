#!/usr/bin/env bash
# Rendered by sftctl 0.1.0 from preset zero2-qwen3-8b for ms-swift 4.x (--swift-version)
# Layout: deepspeed over 8 process(es), one per GPU (0,1,2,3,4,5,6,7)
# Purpose: Full SFT of Qwen3-8B with DeepSpeed ZeRO-2, 8 processes on 8 GPUs
set -euo pipefail
unset NNODES
export CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7
export NPROC_PER_NODE=8
if [ -z "${SWANLAB_API_KEY:-}" ] && [ -n "${SWANLAB_TOKEN:-}" ]; then export SWANLAB_API_KEY="$SWANLAB_TOKEN"; fi
exec swift sft \
    --model Qwen/Qwen3-8B \
    --tuner_type full \
    --dataset train_dataset.json \
    --torch_dtype bfloat16 \
    --attn_impl flash_attn \
    --num_train_epochs 5 \
    --per_device_train_batch_size 16 \
    --per_device_eval_batch_size 16 \
    --gradient_accumulation_steps 2 \
    --learning_rate 1e-4 \
    --eval_steps 50 \
    --save_steps 100 \
    --save_total_limit 4 \
    --logging_steps 5 \
    --max_length 2048 \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 8 \
    --output_dir output \
    --report_to swanlab \
    --swanlab_project swift_sft_full \
    --swanlab_mode cloud \
    --deepspeed zero2 \
    --swanlab_exp_name zero2_Qwen3-8B
