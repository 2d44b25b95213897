#!/usr/bin/env bash
# Rendered by sftctl 0.1.0 from preset oom-fallback for ms-swift 4.x (--swift-version)
# Layout: 1 process on GPU 6
# Purpose: LoRA SFT when memory runs out, batch 1 x 32 accumulation, no packing, sdpa
set -euo pipefail
unset NPROC_PER_NODE NNODES
export CUDA_VISIBLE_DEVICES=6
if [ -z "${SWANLAB_API_KEY:-}" ] && [ -n "${SWANLAB_TOKEN:-}" ]; then export SWANLAB_API_KEY="$SWANLAB_TOKEN"; fi
exec swift sft \
    --model Qwen/Qwen2.5-7B-Instruct \
    --tuner_type lora \
    --dataset CodyWhy/mh-sharegpt-20250820 \
    --torch_dtype bfloat16 \
    --max_length 2048 \
    --packing false \
    --gradient_checkpointing true \
    --learning_rate 1e-4 \
    --num_train_epochs 1 \
    --warmup_ratio 0.1 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 50 \
    --output_dir ./output/Qwen2.5-7B-Instruct-sft \
    --report_to swanlab \
    --swanlab_project multi-model-psychology \
    --swanlab_mode cloud \
    --swanlab_exp_name Qwen2.5-7B-Instruct-sft \
    --attn_impl sdpa \
    --per_device_train_batch_size 1 \
    --gradient_accumulation_steps 32
