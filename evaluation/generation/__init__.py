"""Hypothesis generation: Ray Data + vLLM engine actors (offline batch), or a running endpoint."""
