"""The README stays in step with the code: the config reference and the CI command."""

from __future__ import annotations

import re
from pathlib import Path

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
