"""COMET through the real path: a Ray actor drives `.venv-comet`'s interpreter, which loads a locally built
checkpoint with `comet.load_from_checkpoint` and predicts. The scores must equal COMET's own, run directly.
"""

import json
import subprocess

import pytest

from cluster.locations import comet_python
from evaluation.directions import Direction
from evaluation.metrics.base import MetricInput
from evaluation.metrics.comet import Comet, CometError
from evaluation.metrics.registry import get_metric
from evaluation.recipe import MetricsSettings

pytestmark = pytest.mark.slow

SRC = ["The cat sits on the mat.", "It is raining today.", "I like green tea."]
REF = ["Die Katze sitzt auf der Matte.", "Heute regnet es.", "Ich mag grünen Tee."]
HYP = ["Die Katze sitzt auf der Matte.", "Es regnet heute.", "Ich trinke Kaffee."]
ZH_SRC, ZH_HYP, ZH_REF = ["Good morning."], ["早上好。"], ["早上好。"]


@pytest.fixture(scope="module")
def cluster():
    """One embedded Ray cluster for the module's COMET actors (the runner attaches to it)."""
    from cluster.ray_session import ray_session

    with ray_session(num_cpus=2) as address:
        yield address


def _direct(checkpoint, samples):
    code = (
        "import json, sys\n"
        "from comet import load_from_checkpoint\n"
        "m = load_from_checkpoint(sys.argv[1], local_files_only=True)\n"
        "p = m.predict(json.loads(sys.argv[2]), batch_size=2, gpus=0, accelerator='cpu', progress_bar=False)\n"
        "print('RESULT', json.dumps([float(s) for s in p.scores]))\n"
    )
    out = subprocess.run([str(comet_python()), "-c", code, str(checkpoint), json.dumps(samples)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line.split(" ", 1)[1])


def test_tiny_comet_through_the_actor(tiny_comet, cluster):
    metric = get_metric("comet", MetricsSettings(names=["comet"], comet_model=str(tiny_comet), comet_batch_size=2))
    inputs = [MetricInput(Direction.parse("en-de"), SRC, HYP, [REF]),
              MetricInput(Direction.parse("en-zh"), ZH_SRC, ZH_HYP, [ZH_REF])]
    de, zh = metric.score_many(inputs, sentence_level=True)
    assert len(de.sentence_scores) == 3 and len(zh.sentence_scores) == 1
    assert de.score == pytest.approx(sum(de.sentence_scores) / 3)
    assert "class:RegressionMetric" in de.signature and "version:2.2.7" in de.signature
    samples = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(SRC + ZH_SRC, HYP + ZH_HYP, REF + ZH_REF)]
    direct = _direct(tiny_comet / "checkpoints" / "model.ckpt", samples)
    assert de.sentence_scores + zh.sentence_scores == pytest.approx(direct, abs=1e-5)


def test_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(CometError, match="checkpoint not found"):
        Comet(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "model.ckpt").write_bytes(b"x")
    with pytest.raises(CometError, match=r"hparams\.yaml is missing"):
        Comet(tmp_path)


def test_comet_in_a_scored_run(tiny_comet, cluster, tmp_path):
    """`--comet-model` through the runner: COMET scores sit beside the sacrebleu ones in rows and generations."""
    from evaluation.outputs import find_run, read_generations, read_scores
    from xalign.cli import main

    hyps = tmp_path / "hyps"
    hyps.mkdir()
    (hyps / "en-de.txt").write_text("".join(h + "\n" for h in HYP))
    data = tmp_path / "set.jsonl"
    data.write_text("".join(json.dumps({"src_lang": "en", "tgt_lang": "de", "source": s, "reference": r}) + "\n"
                            for s, r in zip(SRC, REF)))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"kind: evaluate\nname: tiny\ntest_set: {{format: jsonl, path: {data}}}\ndirections: [en-de]\n")
    assert main(["evaluate", "--suite", str(suite), "--hyp-dir", str(hyps), "--comet-model", str(tiny_comet),
                 "--output", str(tmp_path / "out"), "run_id=c", "metrics.comet_batch_size=2"]) == 0
    run = find_run("c", tmp_path / "out")
    row = read_scores(run)["rows"][0]
    assert set(row["scores"]) == {"bleu", "chrf", "chrf++", "ter", "off_target", "repetition", "comet"}
    gen = read_generations(run, "hyps", "en-de")
    assert row["scores"]["comet"] == pytest.approx(sum(g["scores"]["comet"] for g in gen) / 3)
    assert "COMET" in (run.root / "report.md").read_text()
