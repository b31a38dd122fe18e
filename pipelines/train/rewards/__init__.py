"""GRPO rewards, one module each behind the contract in `base`; `registry` names them and `score` combines them.

Every reward is in [0, 1], higher is better; the recipe's `RewardSettings` weights combine them. COMET is not
offered yet: evaluation runs it in its own environment (`.venv-comet`), out of reach of a training worker.
"""
