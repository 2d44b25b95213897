#!/usr/bin/env bash
# Rendered by sftctl 0.1.0 from preset lora-qwen2.5-7b for ms-swift 4.x (--swift-version)
# Layout: 1 process on GPU 6
# Purpose: LoRA SFT quick start for Qwen2.5-7B-Instruct on GPU 6
set -euo pipefail
unset NPROC_PER_NODE NNODES
export CUDA_VISIBLE_DEVICES=6
export NO_PROXY=127.0.0.1,localhost,::1
export no_proxy=127.0.0.1,localhost,::1
export SWANLAB_PROJECT=multi-model-psychology
if [ -z "${SWANLAB_API_KEY:-}" ] && [ -n "${SWANLAB_TOKEN:-}" ]; then export SWANLAB_API_KEY="$SWANLAB_TOKEN"; fi
exec swift sft \
    --model Qwen/Qwen2.5-7B-Instruct \
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
    --output_dir ./output/qwen2.5-7b-sft \
    --report_to swanlab \
    --swanlab_project multi-model-psychology \
    --swanlab_mode cloud \
    --swanlab_exp_name qwen2p5-7b-sft \
    --attn_impl flash_attn \
    --per_device_train_batch_size 8 \
    --gradient_accumulation_steps 4
