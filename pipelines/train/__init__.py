"""`xalign train`: Ray Train (TorchTrainer) wrapping DeepSpeed; SFT (full, LoRA) and DPO; checkpoints,
resume with the exact data position, Hugging Face export. See pipelines/train/README.md."""
