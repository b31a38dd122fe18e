import pytest

from cluster.cli import build_parser, main
from cluster.config import RecipeError, load_recipe
from evaluation.cli import build_recipe, find_suite
from evaluation.recipe import EvalRecipe


def _args(*argv):
    return build_parser().parse_args(["evaluate", *argv])


def test_suite_names_and_flags_become_recipe_keys(tmp_path):
    assert find_suite("flores200-quick").name == "eval-flores200-quick.yaml"
    assert find_suite("eval-wmt22").name == "eval-wmt22.yaml"
    r = build_recipe(_args("--suite", "flores200-quick", "--model", "some/folder", "--endpoint", "http://h:8000",
                           "--api", "translate", "--comet-model", str(tmp_path), "--output", "o", "limit=2"))
    assert r.engine.model == "some/folder" and r.endpoint.url == "http://h:8000" and r.endpoint.api == "translate"
    assert r.metrics.names[-1] == "comet" and r.metrics.comet_model == str(tmp_path)
    assert r.output_dir == "o" and r.limit == 2
    r = build_recipe(_args("--suite", "flores200-demo", "--prompt", "few_shot", "--resume", "run-7"))
    assert r.generation.prompt == "few_shot" and r.run_id == "run-7" and r.resume is True
    # With --hyp-dir, --model names the system instead of choosing an engine model.
    assert build_recipe(_args("--suite", "wmt22-systems", "--hyp-dir", "x", "--model", "m")).engine.model == "default"


def test_recipe_errors_name_the_key():
    with pytest.raises(RecipeError, match="--suite is required"):
        build_recipe(_args())
    with pytest.raises(RecipeError, match="recipe not found: eval-nope"):
        build_recipe(_args("--suite", "nope"))
    with pytest.raises(RecipeError, match=r"metrics.names: .*unknown metric"):
        build_recipe(_args("--suite", "flores200-quick", "metrics.names=[bleu, meteor]"))
    with pytest.raises(RecipeError, match="comet_model is not set"):
        build_recipe(_args("--suite", "flores200-quick", "metrics.names=[bleu, comet]"))
    with pytest.raises(RecipeError, match="limit: Input should be greater than 0"):
        load_recipe(EvalRecipe, "eval-flores200-quick", ["limit=0"])


def test_bad_inputs_exit_with_a_message(tiny_model, tmp_path, capsys):
    assert main(["evaluate", "--suite", "wmt22-systems", "--hyp-dir", str(tmp_path), f"output_dir={tmp_path}"]) == 1
    assert "no hypotheses for de-en" in capsys.readouterr().out
    assert main(["evaluate", "--suite", "flores200-quick", "languages=[de, klingon]"]) == 1
    assert "unknown language code 'klingon'" in capsys.readouterr().out
    assert main(["evaluate", "--suite", "flores200-quick", "--model", str(tmp_path)]) == 1
    assert "no config.json" in capsys.readouterr().out
    argv = ["evaluate", "--suite", "flores200-quick", "--model", str(tiny_model), "--output", str(tmp_path)]
    assert main([*argv, "--resume", "gone"]) == 1  # refused before any cluster starts
    assert "no generation checkpoints" in capsys.readouterr().out
    assert main(["evaluate", "compare", "only-one"]) == 2
    assert main(["evaluate", "compare", "nope-a", "nope-b", "--output", str(tmp_path)]) == 1
    assert "run 'nope-a' not found" in capsys.readouterr().out
