"""The chart points at real code: every RayJob entrypoint parses with the real `xalign` parser and names
recipes that exist and validate, and the RayService's serveConfigV2 is a valid Ray Serve config whose
import path builds the real serving app."""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import subprocess
from typing import Any

import pytest
import yaml
from helm_render import VALUE_SETS, Helm

from cluster.config import RecipeError, find_recipe
from xalign.cli import build_parser
from xalign.recipes import load_any


def _rayjobs(helm: Helm) -> list[tuple[str, dict[str, Any]]]:
    jobs = [(name, doc) for name in sorted(VALUE_SETS) for doc in helm.render(name).of_kind("RayJob")]
    stages = {doc["metadata"]["labels"]["app.kubernetes.io/component"] for _, doc in jobs}
    assert stages == {"job-prepare", "job-train", "job-evaluate"}, stages
    return jobs


def _parse(argv: list[str]) -> argparse.Namespace | str:
    """The parsed command, or argparse's complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        return f"`xalign {shlex.join(argv)}` does not parse with the xalign CLI: {err.getvalue().strip()}"


def _recipe_and_overrides(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The recipe a parsed command names and its `key=value` overrides (evaluate's `--suite` is its recipe)."""
    return args.recipe, list(args.overrides)


def test_rayjob_entrypoints_parse_with_the_xalign_cli(helm: Helm) -> None:
    problems = []
    for name, job in _rayjobs(helm):
        argv = shlex.split(job["spec"]["entrypoint"])
        assert argv[0] == "xalign", (name, argv)
        stage = job["metadata"]["labels"]["app.kubernetes.io/component"].removeprefix("job-")
        args = _parse(argv[1:])
        if isinstance(args, str):
            problems.append(f"{name}: {args}")
            continue
        assert args.command == stage, (name, argv)
        recipe, overrides = _recipe_and_overrides(args)
        assert recipe and all("=" in item for item in overrides), (name, argv)
        if stage == "evaluate":
            assert args.model, (name, argv)
    assert not problems, "\n".join(sorted(set(problems)))


_PRINT_ARGV = "printf '%s\\0'"  # each word the shell passes on, NUL-terminated


def test_rayjob_entrypoints_survive_the_shells_they_pass_through(helm: Helm) -> None:
    """KubeRay's submitter runs `ray job submit -- <entrypoint>` in bash, `ray job submit` re-joins the words
    with shlex.join, and Ray's job supervisor runs the result with /bin/sh: the argv xalign sees is the one
    the tests parse (quoted paths with spaces or quotes stay one argument)."""
    seen = set()
    for name, job in _rayjobs(helm):
        entrypoint = job["spec"]["entrypoint"]
        if entrypoint in seen:
            continue
        seen.add(entrypoint)
        submitter = subprocess.run(["bash", "-c", f"{_PRINT_ARGV} {entrypoint}"], capture_output=True, text=True)
        words = submitter.stdout.split("\0")[:-1]
        supervisor = subprocess.run(["/bin/sh", "-c", f"{_PRINT_ARGV} {shlex.join(words)}"],
                                    capture_output=True, text=True)
        assert supervisor.stdout.split("\0")[:-1] == shlex.split(entrypoint), (name, entrypoint)
    assert any("'" in e for e in seen), "no value set exercises the quoting (values-ci.yaml resumes 'previous run')"


def test_rayjob_recipes_exist_and_validate_with_their_overrides(helm: Helm) -> None:
    problems, seen = [], set()
    for name, job in _rayjobs(helm):
        args = _parse(shlex.split(job["spec"]["entrypoint"])[1:])
        if isinstance(args, str):
            problems.append(f"{name}: {args}")
            continue
        recipe, overrides = _recipe_and_overrides(args)
        if (recipe, tuple(overrides)) in seen:
            continue
        seen.add((recipe, tuple(overrides)))
        try:
            assert find_recipe(recipe).parent.name == "recipes", (name, recipe)
            loaded = load_any(recipe, overrides)
        except RecipeError as exc:
            problems.append(f"{name}: {exc}")
            continue
        assert loaded.kind == args.command, (name, recipe, loaded.kind)
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("name", sorted(n for n in VALUE_SETS if "jobs" not in n))
def test_serve_config_is_a_valid_ray_serve_config(helm: Helm, name: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    rendered = helm.render(name)
    for rs in rendered.of_kind("RayService"):
        config = yaml.safe_load(rs["spec"]["serveConfigV2"])
        schema = ServeDeploySchema.model_validate(config)
        (app,) = schema.applications
        assert app.import_path == "serving.app:build"
        assert app.route_prefix == "/"
        recipe = app.args["recipe"]
        assert find_recipe(recipe).parent.name == "recipes"
        assert load_any(recipe).kind == "serve"


SERVE_SETS = sorted(n for n in VALUE_SETS if "jobs" not in n)


@pytest.mark.parametrize("name", SERVE_SETS)
def test_serve_import_path_builds_the_real_app(helm: Helm, name: str) -> None:
    """What Serve's controller does with serveConfigV2, up to starting replicas: import the builder, call it with
    the rendered args (unchanged), build the application and apply the config's per-deployment options."""
    from ray._common.utils import import_attr
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app

    from serving.recipe import from_args

    config = yaml.safe_load(helm.render(name).one("RayService")["spec"]["serveConfigV2"])
    (app,) = config["applications"]
    application = call_user_app_builder_with_args_if_necessary(import_attr(app["import_path"]), app["args"])
    assert isinstance(application, Application)
    built = build_app(application, name=app["name"])
    built.validate_single_fastapi_ingress()
    deployments = {d.name: d for d in built.deployments}
    ingress = deployments[built.ingress_deployment_name]
    # The engine replicas run exactly the recipe the rendered args describe, with the chart's actor resources.
    recipe = from_args(app["args"])
    assert ingress.init_args[0] == recipe.model_dump(mode="json")
    assert ingress.ray_actor_options["num_cpus"] == recipe.deployment.num_cpus
    assert ingress.ray_actor_options.get("num_gpus", 0) == recipe.deployment.num_gpus
    # Serve refuses a config whose `deployments` name a deployment the app lacks or carry invalid options.
    for options in app["deployments"]:
        assert options["name"] in deployments, (options["name"], sorted(deployments))
        deployments[options["name"]].options(**{k: v for k, v in options.items() if k != "name"})


def test_serve_config_matches_the_serving_app(helm: Helm) -> None:
    """The chart's serveConfigV2 agrees with serving.serve_config, the serving app's own generator."""
    from serving.recipe import from_args
    from serving.serve_config import ENGINE_DEPLOYMENT, IMPORT_PATH, serve_config

    config = yaml.safe_load(helm.render("ci").one("RayService")["spec"]["serveConfigV2"])
    (app,) = config["applications"]
    recipe = from_args(app["args"])
    reference = serve_config(recipe)
    assert app["import_path"] == IMPORT_PATH
    assert config["http_options"] == reference["http_options"]
    assert config["proxy_location"] == reference["proxy_location"]
    (engine,) = app["deployments"]
    assert engine["name"] == ENGINE_DEPLOYMENT
    assert (engine["num_replicas"], engine["autoscaling_config"]) == (2, None)

    # The values reach the recipe the replicas run.
    assert recipe.engine.model == "outputs/runs/ci-r1/export/model"
    assert recipe.adapters == {"de-formal": "outputs/runs/lora-de/export/adapter"}
    assert (recipe.deployment.num_cpus, recipe.deployment.num_gpus) == (2, 1)
    assert recipe.http.cors_origins == ["https://translate.example.com"]
    assert recipe.auth.required is True and recipe.auth.api_key_env == "XALIGN_API_KEY"
    assert recipe.limits.max_batch_items == 16

    defaults = yaml.safe_load(helm.render("defaults").one("RayService")["spec"]["serveConfigV2"])
    (engine,) = defaults["applications"][0]["deployments"]
    assert engine["num_replicas"] == "auto"
    assert engine["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16}
