"""Fixtures for the data-pipeline tests: build records from a recipe without Ray, and one embedded Ray
cluster shared by the pipeline tests of a module."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def build_records():
    """recipe dict -> every record its builders make (no filters), in unit order."""
    from cluster.config import validate
    from pipelines.data import inventory
    from pipelines.data.builders import build_unit, plan_units
    from pipelines.data.builders.context import BuildContext
    from pipelines.data.recipe import PrepareRecipe

    def run(data: dict) -> list[dict]:
        recipe = validate(PrepareRecipe, data)
        infos = inventory.scan(recipe)
        ctx = BuildContext(recipe, infos)
        rows = [r for u in plan_units(recipe, infos) for r in build_unit(u, ctx)]
        for r in rows:
            r["messages"] = json.loads(r["messages"]) if r["messages"] else None
            r["checks"] = json.loads(r["checks"]) if r["checks"] else []
        return rows

    return run


@pytest.fixture
def ntrex():
    return {"type": "multi_parallel", "path": "ntrex128", "languages": ["en", "de", "zh", "sw", "fr"], "limit": 40}


@pytest.fixture
def alpaca():
    return {
        "alpaca_en": {"type": "alpaca", "path": "instructions/alpaca_en_2000.json", "lang": "en", "limit": 60},
        "alpaca_zh": {"type": "alpaca", "path": "instructions/alpaca_zh_2000.json", "lang": "zh", "limit": 60},
    }


@pytest.fixture(scope="module")
def data_ray():
    """One embedded private Ray cluster (2 CPUs) per test module; `run_prepare` attaches to it instead of starting
    its own. Module scope, not session: a session-wide in-process cluster would outlive this folder, and every
    later `ray_session` of the test process (the serving tests') would silently reuse it with its environment."""
    from cluster.ray_session import ray_session

    with ray_session(num_cpus=2) as address:
        yield address


@pytest.fixture(scope="session")
def small_recipe():
    """(model, output_dir, **section overrides) -> a recipe dict using every builder over the shared data,
    small enough for a test run (about 600 records)."""
    return _small_recipe


def _small_recipe(model: str, output_dir: str, **overrides) -> dict:
    data = {
        "kind": "prepare",
        "name": "small",
        "model": model,
        "max_seq_len": 768,
        "output_dir": output_dir,
        "sources": {
            "alpaca_en": {"type": "alpaca", "path": "instructions/alpaca_en_2000.json", "lang": "en", "limit": 40},
            "alpaca_zh": {"type": "alpaca", "path": "instructions/alpaca_zh_2000.json", "lang": "zh", "limit": 40},
            "ntrex": {"type": "multi_parallel", "path": "ntrex128", "languages": ["en", "de", "zh", "sw", "fr"],
                      "limit": 24},
        },
        "builders": {
            "instructions": {"type": "instructions", "sources": ["alpaca_en", "alpaca_zh"]},
            "translation": {"type": "translation", "sources": ["ntrex"]},
            "interactive": {"type": "interactive", "sources": ["ntrex"], "turns": 3},
            "crosslingual": {"type": "crosslingual", "sources": ["alpaca_en", "alpaca_zh"], "directions_per_item": 1},
            "preference": {"type": "preference", "sources": ["ntrex", "alpaca_en", "alpaca_zh"], "share": 0.5},
        },
        "mixing": {"ratios": {"instructions": 0.4, "translation": 0.3, "interactive": 0.15, "crosslingual": 0.15},
                   "temperature": 1.5, "total": 200, "seed": 0},
        "shards": {"num_shards": 3},
        "ray": {"chunk_records": 30, "progress": False},
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return data
