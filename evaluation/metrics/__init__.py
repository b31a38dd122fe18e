"""Metrics, one module each, behind the contract in `evaluation.metrics.base`; `registry` names them.

This package's `__init__` imports nothing: the COMET worker (`python -m evaluation.metrics.comet_worker`) runs
under `.venv-comet`, which has neither Ray nor xalign's dependencies.
"""
