#!/usr/bin/env bash
# Rendered by sftctl 0.1.0 from preset lora-20b for ms-swift 4.x (--swift-version)
# Layout: 1 process on GPU 6
# Purpose: LoRA SFT for ~20B models on one GPU, batch 2 x 16 accumulation = 32
set -euo pipefail
unset NPROC_PER_NODE NNODES
export CUDA_VISIBLE_DEVICES=6
if [ -z "${SWANLAB_API_KEY:-}" ] && [ -n "${SWANLAB_TOKEN:-}" ]; then export SWANLAB_API_KEY="$SWANLAB_TOKEN"; fi
exec swift sft \
    --model openai/gpt-oss-20b \
    --tuner_type lora \
    --dataset CodyWhy/mh-sharegpt-20250820 \
    --torch_dtype bfloat16 \
    --max_length 3072 \
    --packing true \
    --gradient_checkpointing true \
    --learning_rate 2e-4 \
    --num_train_epochs 1 \
    --warmup_ratio 0.1 \
    --save_steps 200 \
    --save_total_limit 3 \
    --logging_steps 20 \
    --output_dir ./output/gpt-oss-20b-sft \
    --report_to swanlab \
    --swanlab_project multi-model-psychology \
    --swanlab_mode cloud \
    --swanlab_exp_name gpt-oss-20b-sft \
    --attn_impl flash_attn \
    --per_device_train_batch_size 2 \
    --gradient_accumulation_steps 16
