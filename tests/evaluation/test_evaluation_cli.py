import pytest

from cluster.config import RecipeError, load_recipe
from evaluation.recipe import EvalRecipe
from xalign.cli import build_parser, main
from xalign.commands.evaluate import build_recipe, find_suite, hyp_system


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
    # With --hyp-dir, engine.model (--model) names the model that wrote the files: the system's name.
    args = _args("--suite", "wmt22-systems", "--hyp-dir", "x", "--model", "m")
    assert build_recipe(args).engine.model == "m" and hyp_system(args) == "m"
    assert hyp_system(_args("--suite", "wmt22-systems", "--hyp-dir", "x", "engine.model=sys-b")) == "sys-b"
    assert hyp_system(_args("--suite", "wmt22-systems", "--hyp-dir", "x")) is None  # the folder's name


def test_flags_are_spellings_of_override_keys():
    """A flag is exactly its key's override: the same value either way, and both at once is an error naming the key
    (whichever comes first), so neither silently wins."""
    by_flag = build_recipe(_args("--suite", "flores200-quick", "--model", "007", "--prompt", "few_shot"))
    by_key = build_recipe(_args("--suite", "flores200-quick", "engine.model='007'", "generation.prompt=few_shot"))
    assert by_flag == by_key and by_flag.engine.model == "007"  # a flag's value stays a string
    for argv in (["--model", "a", "engine.model=b"], ["engine.model=b", "--model", "a"], ["--model", "a", "engine={}"],
                 ["--resume", "r1", "resume=false"]):
        with pytest.raises(RecipeError, match=r"(engine\.model|engine|resume): given twice"):
            build_recipe(_args("--suite", "flores200-quick", *argv))
    with pytest.raises(RecipeError, match=r"endpoint\.api: Input should be 'chat' or 'translate'"):
        build_recipe(_args("--suite", "flores200-quick", "endpoint.api=rest"))


def test_compare_is_a_sub_command():
    args = _args("compare", "run-a", "run-b", "--samples", "50")
    assert (args.action, args.run_a, args.run_b, args.samples, args.output) == (
        "compare", "run-a", "run-b", 50, "outputs/reports")
    run = _args("--suite", "flores200-quick", "limit=2")  # the default sub-command
    assert run.action == "run" and run.overrides == ["limit=2"]
    assert _args("run", "--suite", "flores200-quick").recipe == "flores200-quick"
    assert main(["evaluate", "compare", "only-one"]) == 2  # argparse: RUN_B is missing


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
