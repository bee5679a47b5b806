"""The README stays in step with the code: the config reference and the CI command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lstmlab.config import REFERENCE_END, REFERENCE_START, config_reference

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quickstart_has_exactly_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert commands[0].startswith("pip install torch==2.13.0 && ")
    assert commands[0].endswith("lstmlab train configs/quickstart.yaml")


def test_ci_runs_the_readme_test_command_exactly():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci


def test_config_reference_is_up_to_date():
    readme = (ROOT / "README.md").read_text()
    block = readme.split(REFERENCE_START, 1)[1].split(REFERENCE_END, 1)[0]
    assert block.strip() == config_reference().strip(), "run `python -m lstmlab.config README.md`"


def test_every_config_in_configs_is_valid():
    from lstmlab.config import load_config

    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert any(p.name == "quickstart.yaml" for p in configs)
    for path in configs:
        assert list(load_config(path).runs()), path


def bash_lines() -> list[list[str]]:
    """Each ```bash block of the README as its command lines, comments cut off."""
    readme = (ROOT / "README.md").read_text()
    return [[line.split(" #", 1)[0].strip() for line in block.splitlines()]
            for block in re.findall(r"```bash\n(.+?)\n```", readme, re.S)]


def test_mlflow_ui_is_run_after_installing_an_extra_that_has_the_ui():
    """mlflow-skinny (the [mlflow] extra) has no UI: `mlflow ui` there stops with "No module named 'flask'"."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11's TOML reader")
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    uses = 0
    for lines in bash_lines():
        for i, line in enumerate(lines):
            if not line.startswith("mlflow ui"):
                continue
            uses += 1
            groups = [g for before in lines[:i] for g in re.findall(r'pip install -e "\.\[([^\]]+)\]"', before)]
            installed = {extra for group in groups for extra in group.split(",")}
            packages = {Requirement(r).name for extra in installed for r in extras[extra]}
            assert "mlflow" in packages, f"{line!r} follows only extras {sorted(installed)}: {sorted(packages)}"
    assert uses >= 1
    # the UI is hundreds of MB: [dev] keeps to mlflow-skinny
    dev = [Requirement(r) for r in extras["dev"]]
    assert "mlflow" not in {r.name for r in dev}
    assert not any("mlflow-ui" in r.extras for r in dev if r.name == "lstmlab")


def readme_train_runs() -> set[str]:
    """Every run folder (runs-dir/experiment/run-name) that a `lstmlab train configs/...` line of the README makes."""
    import shlex

    from lstmlab.config import load_config, seed_sweep
    from lstmlab.run.folder import run_name

    made = set()
    readme = (ROOT / "README.md").read_text().replace("\\\n", " ")  # continued lines joined
    for command in re.findall(r"^lstmlab train (configs/[^\n`]+)", readme, re.M):
        words = shlex.split(command.split(" #", 1)[0])
        flags = {"--set": [], "--sweep": [], "--seeds": [], "--runs-dir": ["runs"]}
        for flag, value in zip(words[1:], words[2:], strict=False):
            if flag in flags:
                flags[flag].append(value)
        seeds = int(flags["--seeds"][-1]) if flags["--seeds"] else None
        cfg = load_config(ROOT / words[0], flags["--set"], [*flags["--sweep"], *seed_sweep(seeds, flags["--sweep"])])
        made |= {f"{flags['--runs-dir'][-1]}/{p.experiment}/{run_name(p, tuple(cfg.sweep))}" for p in cfg.runs()}
    return made


def test_sample_examples_name_a_run_that_a_readme_command_makes():
    readme = (ROOT / "README.md").read_text()
    samples = [run for run in re.findall(r"lstmlab sample (\S+)", readme) if run != "RUN"]
    assert samples
    made = readme_train_runs()
    assert "runs/quickstart/L2-scratch-lstm-s9" in made  # the parser reads flags: --seeds 10
    for run in samples:
        assert run in made, f"`lstmlab sample {run}`: no README `lstmlab train` command makes it"
