#!/usr/bin/env bash
# Rendered by sftctl 0.1.0 from preset zero2-qwen3-30b-a3b for ms-swift 4.x (--swift-version)
# Layout: deepspeed over 5 process(es), one per GPU (0,1,2,3,4)
# Purpose: Full SFT of Qwen3-30B-A3B-Thinking-2507, ZeRO-2, torchrun on 5 GPUs
set -euo pipefail
unset NPROC_PER_NODE NNODES
export CUDA_VISIBLE_DEVICES=0,1,2,3,4
exec torchrun --nproc_per_node=5 --master_port=29500 --no_python swift sft \
    --model Qwen/Qwen3-30B-A3B-Thinking-2507 \
    --tuner_type full \
    --torch_dtype bfloat16 \
    --dataset 'liucong/Chinese-DeepSeek-R1-Distill-data-110k#1000' \
    --max_length 4096 \
    --system 'You are a helpful assistant.' \
    --num_train_epochs 3 \
    --per_device_train_batch_size 2 \
    --per_device_eval_batch_size 1 \
    --gradient_accumulation_steps 8 \
    --learning_rate 1e-5 \
    --warmup_ratio 0.1 \
    --gradient_checkpointing true \
    --eval_strategy steps \
    --eval_steps 50 \
    --save_steps 50 \
    --save_total_limit 3 \
    --logging_steps 5 \
    --output_dir output_qwen3_30b_full \
    --dataloader_num_workers 4 \
    --model_author swift \
    --model_name swift-robot \
    --deepspeed zero2
