"""Plugins: a task and a core from another package's entry points train through `lstmlab train`; a broken
plugin is named, and every other command keeps working.

The plugin package is examples/plugin/ itself, made importable the way pip would install it: its module
and a .dist-info folder (METADATA, entry_points.txt written from its pyproject.toml) on PYTHONPATH of a
second process. The test environment itself is never changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml
from conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugin"


def install_as_dist_info(site: Path, name: str, version: str, entry_points: dict[str, dict[str, str]],
                         modules: dict[str, str]) -> Path:
    """What `pip install` leaves behind, reduced to what importlib.metadata reads."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, points in entry_points.items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in points.items()), ""]
    (dist / "entry_points.txt").write_text("\n".join(lines))
    return site


def install_example(site: Path) -> Path:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    return install_as_dist_info(site, project["name"], project["version"], project["entry-points"],
                                {"lstmlab_parity": (EXAMPLE / "lstmlab_parity.py").read_text()})


def lstmlab(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "lstmlab", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def config(tmp_path: Path, **sections) -> Path:
    raw = {**TINY, "experiment": "plugin", **sections}
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_plugin_task_and_core_train_through_lstmlab_train(tmp_path):
    site = install_example(tmp_path / "site")
    cfg = config(tmp_path, task={"name": "parity", "seq_len": 4, "n_train": 256, "n_val": 64, "n_test": 64},
                 model={"type": "mgu", "layers": 2, "hidden_size": 8})
    out = lstmlab(site, "train", str(cfg), "-q", "--runs-dir", "runs", "--data-dir", "data", cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    run = tmp_path / "runs" / "plugin" / "L2-mgu-s0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["task"] == "parity" and summary["model_type"] == "mgu"
    assert summary["baseline"] == 0.5 and summary["metric"] == "accuracy"
    H, D = 8, 8  # 2 tokens embedded at hidden_size: W (D -> 2H) + b, U (H -> 2H) per layer; head H -> 2
    assert summary["params"] == 2 * H + 2 * (D * 2 * H + 2 * H + H * 2 * H) + H * 2 + 2
    assert "warning" not in out.stderr
    env = json.loads((run / "env.json").read_text())  # where the core's code came from, not "torch.nn"
    assert env["backend"] == summary["backend"] and env["backend"].startswith("plugin:mgu (lstmlab-parity ")
    assert env["backend"].endswith(" (lstmlab_parity:make_mgu))")


def test_unknown_names_list_the_plugins(tmp_path):
    site = install_example(tmp_path / "site")
    cfg = config(tmp_path)
    out = lstmlab(site, "train", str(cfg), "--set", "task.name=nope", "--print-config", cwd=tmp_path)
    assert out.returncode == 2 and "valid tasks:" in out.stderr and "parity" in out.stderr
    out = lstmlab(site, "train", str(cfg), "--set", "model.type=nope", "--print-config", cwd=tmp_path)
    assert out.returncode == 2 and "'mgu'" in out.stderr and "'scratch-lstm'" in out.stderr


def test_a_broken_plugin_is_named_and_other_commands_still_work(tmp_path):
    site = install_as_dist_info(
        tmp_path / "site", "lstmlab-broken", "0.2",
        {"lstmlab.tasks": {"wobbly": "lstmlab_broken:WobblyTask", "notatask": "lstmlab_fine:NotATask"},
         "lstmlab.cores": {"shaky": "lstmlab_broken:make_shaky"}},
        {"lstmlab_broken": "raise ImportError('needs a library that is not installed')\n",
         "lstmlab_fine": "class NotATask:\n    pass\n"},
    )
    out = lstmlab(site, "train", str(config(tmp_path)), "-q", "--runs-dir", "runs", "--data-dir", "data",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "plugin task 'wobbly' from lstmlab-broken 0.2 (lstmlab_broken:WobblyTask) could not be loaded: " \
           "ImportError: needs a library that is not installed" in out.stderr
    assert "plugin task 'notatask'" in out.stderr and "not a lstmlab.tasks.base.Task subclass" in out.stderr
    assert "Traceback" not in out.stderr

    asked = lstmlab(site, "train", str(config(tmp_path)), "--set", "task.name=wobbly", cwd=tmp_path)
    assert asked.returncode == 2 and "Traceback" not in asked.stderr
    assert "task.name: unknown task 'wobbly'" in asked.stderr
    assert "needs a library that is not installed" in asked.stderr

    # a runs dir of its own: in runs/, the lstm runs above would refuse another model.type before it loads
    core = lstmlab(site, "train", str(config(tmp_path)), "--set", "model.type=shaky", "--runs-dir", "runs-shaky",
                   "--data-dir", "data", cwd=tmp_path)
    assert core.returncode == 2 and "Traceback" not in core.stderr
    assert "plugin core 'shaky' from lstmlab-broken 0.2" in core.stderr and "not installed" in core.stderr


def test_a_plugin_cannot_take_a_built_in_name(tmp_path):
    source = (EXAMPLE / "lstmlab_parity.py").read_text()
    site = install_as_dist_info(tmp_path / "site", "lstmlab-clash", "1.0",
                                {"lstmlab.tasks": {"adding": "lstmlab_parity:ParityTask"}},
                                {"lstmlab_parity": source})
    out = lstmlab(site, "generate-data", "--task", "adding", "--set", "task.n_train=20", "--data-dir", "data",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "plugin task 'adding'" in out.stderr and "built-in task's" in out.stderr
    meta = json.loads(next((tmp_path / "data").glob("adding-*/meta.json")).read_text())
    assert meta["metric"] == "mse", "the built-in adding task ran, not the plugin"

