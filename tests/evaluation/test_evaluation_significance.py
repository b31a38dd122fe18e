"""McNemar's exact test for paired rates (off-target, repetition): the counts, the p-value, the edge cases."""

from __future__ import annotations

from math import comb

import pytest

from evaluation.significance import mcnemar_exact, paired_rate


def test_mcnemar_exact_matches_the_binomial_tail():
    # 10 discordant pairs all one way: 2 * (1/2)^10
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact(0, 10) == mcnemar_exact(10, 0)  # two-sided
    assert mcnemar_exact(7, 3) == pytest.approx(2 * sum(comb(10, i) for i in range(4)) / 1024)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0  # balanced or no discordance: no evidence


def test_paired_rate_counts_only_segments_judged_in_both():
    base = [1.0, 1.0, 0.0, None, 1.0, 0.0]
    new = [0.0, 0.0, 0.0, 1.0, 1.0, None]
    got = paired_rate(base, new)
    assert got["segments"] == 4 and got["only_base"] == 2 and got["only_new"] == 0
    assert got["base"] == pytest.approx(75.0) and got["new"] == pytest.approx(25.0) and got["delta"] == -50.0
    assert got["p_value"] == pytest.approx(0.5) and got["significant"] is False


def test_paired_rate_flags_a_clear_drop_and_refuses_unpaired_input():
    got = paired_rate([1.0] * 12 + [0.0] * 8, [0.0] * 20)
    assert got["significant"] is True and got["p_value"] < 0.001
    with pytest.raises(ValueError, match="same segments"):
        paired_rate([1.0], [1.0, 0.0])
