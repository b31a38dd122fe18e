"""Randomness keyed by the recipe seed and a record's identity, never by execution order.

Every random choice (template, direction, follow-up, sampling rank, shard) is a function of
`(seed, what, record key)`, so the output does not depend on how Ray splits, orders or retries the work.
"""

from __future__ import annotations

import hashlib
import random


def _key(seed: int, parts: tuple[object, ...]) -> bytes:
    return "\x1f".join([str(seed), *map(str, parts)]).encode()


def rng(seed: int, *parts: object) -> random.Random:
    """A private generator for one record (str seeds are hashed with SHA-512: stable across processes)."""
    return random.Random(_key(seed, parts).decode())


def key64(seed: int, *parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(_key(seed, parts), digest_size=8).digest(), "big")


def uniform(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by the key."""
    return key64(seed, *parts) / 2**64
