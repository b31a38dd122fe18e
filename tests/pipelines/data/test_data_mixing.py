"""Mixing: exact builder ratios, per-language temperature, total size, seeded selection."""

from collections import Counter

import pytest

from pipelines.data import mixing, stats
from pipelines.data.recipe import Mixing
from pipelines.data.schema import new_record, to_table

AVAILABLE = {
    "instructions": {"eng_Latn": 1900, "zho_Hans": 1800},
    "translation": {"eng_Latn": 3000, "deu_Latn": 800, "swh_Latn": 100},
    "interactive": {"deu_Latn": 300, "fra_Latn": 300},
}


def test_builder_ratios_are_exact():
    cfg = Mixing(ratios={"instructions": 0.4, "translation": 0.45, "interactive": 0.15}, total=3000)
    plan = mixing.plan(AVAILABLE, cfg, list(AVAILABLE))
    got = {b: sum(per.values()) for b, per in plan.targets.items()}
    assert sum(got.values()) == 3000
    for b, r in cfg.ratios.items():
        assert abs(got[b] / 3000 - r) <= 0.02  # the recipe's tolerance; largest remainder makes it exact
        assert got[b] == round(3000 * r)


def test_temperature_flattens_languages():
    def share_of_swahili(t):
        plan = mixing.plan(AVAILABLE, Mixing(ratios={"translation": 1.0}, total=2000, temperature=t), ["translation"])
        return plan.targets["translation"]["swh_Latn"] / 2000

    proportional, flat = share_of_swahili(1.0), share_of_swahili(5.0)
    assert proportional == pytest.approx(100 / 3900, abs=0.001)
    assert flat > 3 * proportional


def test_default_total_needs_no_repeats_and_no_ratios_keeps_everything():
    cfg = Mixing(ratios={"instructions": 0.5, "interactive": 0.5})
    plan = mixing.plan(AVAILABLE, cfg, list(AVAILABLE))
    assert plan.total == 1200 and not plan.as_dict()["upsampled"]  # interactive (600) limits it
    everything = mixing.plan(AVAILABLE, Mixing(), list(AVAILABLE))
    assert everything.targets == AVAILABLE


def test_upsampling_is_reported_and_empty_builders_fail():
    plan = mixing.plan(AVAILABLE, Mixing(ratios={"interactive": 1.0}, total=1500), list(AVAILABLE))
    assert plan.as_dict()["upsampled"]["interactive"] == {"deu_Latn": 2.5, "fra_Latn": 2.5}
    with pytest.raises(mixing.MixingError, match=r"\['crosslingual'\] have no records"):
        mixing.plan(AVAILABLE, Mixing(ratios={"crosslingual": 1.0}), [*AVAILABLE, "crosslingual"])


def test_select_group_exact_counts_repeats_and_seed():
    rows = [new_record(sample_id=f"s{i:03d}", kind="sft", builder="b", lang="x", input_ids=[1], labels=[1],
                       num_tokens=1) for i in range(40)]

    def select(target: int, seed: int = 0, order: list[dict] = rows) -> list[dict]:
        return mixing.select_group(to_table(order), target, seed=seed, num_shards=4).to_pylist()

    small = select(15)
    assert len(small) == 15 and len({r["sample_id"] for r in small}) == 15
    assert small == select(15, order=list(reversed(rows)))  # order-free
    assert {r["sample_id"] for r in small} != {r["sample_id"] for r in select(15, seed=1)}
    big = select(100)
    copies = Counter(r["sample_id"].split("#")[0] for r in big)
    assert len(big) == 100 and set(copies.values()) == {2, 3}  # two full passes, then 20 more
    assert {r["shard"] for r in big} == {0, 1, 2, 3} and all(r["order_key"] >= 0 for r in big)
    assert select(0) == [] and mixing.select_group(to_table([]), 5, 0, 4).num_rows == 0


def test_largest_remainder():
    assert mixing.largest_remainder(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert sum(mixing.largest_remainder(997, {"a": 0.3, "b": 0.3, "c": 0.4}).values()) == 997


def test_counting_in_arrow_equals_counting_rows():
    """The Ray pass counts with an Arrow aggregation; the reference counts dicts. Rejects keep their reason."""
    rows = [new_record(sample_id=str(i), kind="sft" if i % 5 else "dpo", builder="b" if i % 2 else "c",
                       lang="deu_Latn" if i % 3 else "fra_Latn", reject_reason=None if i % 4 else "too_short",
                       reject_stage=None if i % 4 else "length") for i in range(60)]
    counts = stats.count_table(to_table(rows))
    assert counts == stats.count_rows(rows) and sum(counts.values()) == 60
    assert counts[("sft", "b", "deu_Latn", stats.KEPT, stats.KEPT)] > 0
    assert sum(n for k, n in counts.items() if k[3] == "too_short") == 15


def test_block_candidates_hold_every_pick_of_the_whole_group():
    """Mixing on the cluster sends each block's lowest-ranked rows per group to the group-wise pick: the picks
    from those candidates equal the picks from the whole group, for trimmed and repeated groups alike."""
    import pyarrow as pa

    from pipelines.data.schema import RECORD_SCHEMA
    from pipelines.data.stages import mix_candidates, select

    def record(builder: str, lang: str, i: int, kind: str = "sft", reason: str | None = None) -> dict:
        return new_record(sample_id=f"{builder}/{lang}/{i:04d}", kind=kind, builder=builder, lang=lang,
                          input_ids=[1, i], labels=[-100, i], num_tokens=2, reject_reason=reason)

    rows = ([record("translation", "deu_Latn", i) for i in range(300)]
            + [record("translation", "swh_Latn", i) for i in range(7)]
            + [record("interactive", "deu_Latn", i) for i in range(50)]
            + [record("translation", "deu_Latn", 900 + i, reason="lang_mismatch") for i in range(20)]
            + [record("preference", "deu_Latn", i, kind="dpo") for i in range(10)])
    available = {"translation": {"deu_Latn": 300, "swh_Latn": 7}, "interactive": {"deu_Latn": 50}}
    targets = {mixing.group_key("translation", "deu_Latn"): 40, mixing.group_key("translation", "swh_Latn"): 16,
               mixing.group_key("interactive", "deu_Latn"): 0}
    limits = mixing.candidate_limits(targets, available)
    assert limits == {"translation\tdeu_Latn": 40, "translation\tswh_Latn": None}  # a zero target draws nothing

    blocks = [to_table(rows[i::4], RECORD_SCHEMA) for i in range(4)]  # rows of every group in every block
    candidates = pa.concat_tables([mix_candidates(b, limits, seed=3) for b in blocks])
    assert candidates.num_rows == 4 * 40 + 7  # 40 per block of the trimmed group (75 each), every repeated row
    assert mix_candidates(RECORD_SCHEMA.empty_table(), limits, seed=3).num_rows == 0
    for group, target in targets.items():
        if not target:
            continue
        mine = candidates.filter(pa.compute.equal(candidates["group"], group))
        whole = to_table([r for r in rows if mixing.group_key(r["builder"], r["lang"]) == group
                          and r["kind"] == "sft" and r["reject_reason"] is None])
        expected = mixing.select_group(whole, target, seed=3, num_shards=2).to_pylist()
        got = select(mine, targets, seed=3, num_shards=2).to_pylist()
        assert got == expected and len(got) == target
