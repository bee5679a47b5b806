"""lstmlab.run.reader: one folder written by a real (tiny) training, read back through RunView — the flat
config, the rows, the summary and its format, the weights — and the same folder rewritten as a format-1
folder of an earlier version, and as a damaged format-2 one."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from lstmlab.analysis.compare import compare_runs
from lstmlab.cli import app
from lstmlab.config import validate
from lstmlab.errors import UserError
from lstmlab.files import UnreadableFile
from lstmlab.models.sequence import build_model
from lstmlab.run.folder import FORMAT
from lstmlab.run.reader import RunView, WeightsDoNotFit, open_run
from lstmlab.run.train import train
from lstmlab.tasks.datasets import load as load_dataset

RAW = {
    "experiment": "tiny",
    "task": {"name": "temporal-order", "seq_len": 20, "n_train": 128, "n_val": 32, "n_test": 32},
    "model": {"type": "lstm", "layers": 2, "hidden_size": 6},
    "train": {"steps": 12, "batch_size": 16, "eval_every": 4, "lr": 0.01, "threads": 1, "device": "cpu",
              "diagnostics_every": 6},
}
RUN = "L2-lstm-s0"
FORMAT_2_ONLY = ("format", "test_metric", "best_val", "metric", "higher_is_better", "solved")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """<root>/runs/tiny/L2-lstm-s0, completed after 12 steps (evaluated at 4, 8 and 12), and <root>/data."""
    root = tmp_path_factory.mktemp("reader")
    train(validate(RAW), runs_dir=root / "runs", data_dir=root / "data", quiet=True, log=lambda _: None)
    return root


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run folder that a test may change."""
    return Path(shutil.copytree(trained / "runs" / "tiny" / RUN, tmp_path / "runs" / "tiny" / RUN))


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rewrite_summary(run: Path, drop=(), **changes) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in drop} | changes
    (run / "summary.json").write_text(json.dumps(summary))
    return summary


def leaves(config: dict, prefix: str = "") -> dict:
    """The test's own flattening: nested keys joined by dots, lists as tuples, an empty section as "{}"."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= leaves(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = tuple(value) if isinstance(value, list) else "{}" if value == {} else value
    return flat


def outputs(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(inputs)


# -- a folder written by training, read back ---------------------------------------------------------


def test_the_flat_config_is_config_yaml_by_dotted_key(trained):
    view = RunView(trained / "runs" / "tiny" / RUN)
    written = yaml.safe_load((view.path / "config.yaml").read_text())
    assert view.config == written
    assert view.flat["model.layers"] == 2 and view.flat["task.name"] == "temporal-order"
    assert view.flat["train.lr"] == 0.01 and view.flat["train.diagnostics_every"] == 6
    assert view.flat == leaves(written)
    assert view.lookup("model.layers") == (True, 2)
    assert view.lookup("model") == (True, json.dumps(written["model"], sort_keys=True))  # a section: JSON text
    assert view.lookup("model.nope") == (False, None)
    assert view.resolved().model.layers == 2 and view.experiment == "tiny" and view.name == RUN


def test_rows_are_metrics_csv_and_diagnostics_csv(trained):
    view = RunView(trained / "runs" / "tiny" / RUN)
    expected = csv_rows(view.path / "metrics.csv")
    assert [(r["step"], r["split"], r["loss"]) for r in view.rows] == [
        (int(r["step"]), r["split"], float(r["loss"])) for r in expected]
    assert [r["split"] for r in view.rows] == ["train", "val"] * 3 + ["test"]
    assert view.val_curve() == [(int(r["step"]), float(r["accuracy"])) for r in expected if r["split"] == "val"]
    assert view.last_step() == 12
    diagnostics = csv_rows(view.path / "diagnostics.csv")
    assert [r["step"] for r in view.diagnostics] == [int(r["step"]) for r in diagnostics] == [0, 6, 12]
    assert view.env["pack"] == json.loads((view.path / "env.json").read_text())["pack"]


def test_rows_that_do_not_fit_the_header_are_left_out(run):
    """A hand-edited metrics.csv: a row with a cell too many and one with a cell too few are no rows."""
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    lines[1] = lines[1].rstrip("\n") + ",extra\n"
    lines[2] = lines[2].rsplit(",", 1)[0] + "\n"
    (run / "metrics.csv").write_text("".join(lines))
    view = RunView(run)
    assert [(r["step"], r["split"]) for r in view.rows] == [(8, "train"), (8, "val"), (12, "train"), (12, "val"),
                                                            (12, "test")]
    assert all(set(r) == set(lines[0].strip().split(",")) for r in view.rows)
    assert [step for step, _ in view.val_curve()] == [8, 12]


def test_a_new_summary_says_its_format_and_is_read_as_written(trained):
    view = RunView(trained / "runs" / "tiny" / RUN)
    written = json.loads((view.path / "summary.json").read_text())
    assert list(written)[0] == "format" and written["format"] == FORMAT == 2
    assert view.summary == written and view.format == 2 and view.status == "completed"
    assert view.metric == "accuracy" and view.higher_is_better is True
    assert view.test_metric() == written["test_metric"] == written["test"]["accuracy"]
    assert view.best_val() == written["best_val"]["accuracy"]
    assert view.solved() is written["solved"]


# -- weights -------------------------------------------------------------------------------------------


def test_load_model_gives_the_best_or_the_latest_weights_outputs(run, trained):
    """best: the outputs of the checkpoint's best weights; latest: those of the weights it ended with; auto:
    best for the completed run, latest once it is not completed."""
    cfg = validate(yaml.safe_load((run / "config.yaml").read_text()))
    dataset = load_dataset(cfg.task, trained / "data")
    inputs = torch.from_numpy(dataset.splits["val"]["inputs"][:8])
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["best"]["step"] != ckpt["step"] == 12  # else best and latest could not be told apart
    expected = {}
    for source, state in (("best", ckpt["best"]["model"]), ("latest", ckpt["model"])):
        model = build_model(cfg.model, dataset.spec)  # torch.nn.LSTM, as it was trained
        model.load_state_dict(state)
        expected[source] = outputs(model, inputs)
    assert not torch.equal(expected["best"], expected["latest"])

    view = RunView(run)
    for choice, source, step in (("best", "best", ckpt["best"]["step"]), ("latest", "latest checkpoint", 12),
                                 ("auto", "best", ckpt["best"]["step"]),
                                 ("best-or-latest", "best", ckpt["best"]["step"])):
        model, used = view.load_model(choice, spec=dataset.spec)
        assert not model.training
        assert used == {"source": source, "step": step, "status": "completed", "checkpoint_step": 12}, choice
        assert torch.equal(outputs(model, inputs), expected["best" if source == "best" else "latest"]), choice

    rewrite_summary(run, status="interrupted")
    model, used = RunView(run).load_model("auto", spec=dataset.spec)
    assert used["source"] == "latest checkpoint" and used["status"] == "interrupted"
    assert torch.equal(outputs(model, inputs), expected["latest"])


def test_weights_that_do_not_fit_the_config_name_the_checkpoint(run, trained):
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["hidden_size"] = 7
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    dataset = load_dataset(validate(config).task, trained / "data")
    with pytest.raises(WeightsDoNotFit, match=r"checkpoint.pt: weights do not fit the model of config.yaml \("):
        RunView(run).load_model("best", spec=dataset.spec)


def test_a_missing_or_foreign_checkpoint_is_refused_naming_it(run):
    (run / "checkpoint.pt").unlink()
    with pytest.raises(UserError, match=f"^{run} has no checkpoint.pt yet \\(status completed\\)"):
        RunView(run).weights("auto")
    torch.save({"step": 3}, run / "checkpoint.pt")
    with pytest.raises(UnreadableFile, match="checkpoint.pt: is not an lstmlab checkpoint"):
        RunView(run).weights("latest")
    with pytest.raises(UserError, match="weights: unknown choice 'final'; valid: auto, best, latest, best-or-latest"):
        RunView(run).weights("final")


def test_a_checkpoint_without_best_weights_is_old_in_format_1_and_damaged_in_format_2(run):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    del ckpt["best"]
    torch.save(ckpt, run / "checkpoint.pt")
    with pytest.raises(UnreadableFile, match="has no best weights, though a format-2 run folder's checkpoint holds"):
        RunView(run).weights("auto")
    rewrite_summary(run, drop=("format",))  # the same folder as an earlier version wrote it
    view = RunView(run)
    assert view.format == 1
    for choice in ("auto", "latest", "best-or-latest"):
        state, used = view.weights(choice)
        assert used["source"] == "latest checkpoint" and state.keys() == ckpt["model"].keys()
        assert all(torch.equal(state[k], ckpt["model"][k]) for k in state)
    with pytest.raises(UnreadableFile, match=r"no best weights in it \(written by a version that kept none\); "
                                             "use --weights latest"):
        view.weights("best")


def test_a_run_stopped_before_its_first_evaluation_has_only_its_latest_weights(tmp_path, monkeypatch):
    """Ctrl-C (the test hook's SIGINT) at step 2 of a run that evaluates every 4: its checkpoint has no best
    weights yet. That is no damage: auto and best-or-latest read the latest, best says why it cannot."""
    config = tmp_path / "early.yaml"
    config.write_text(yaml.safe_dump(RAW))
    monkeypatch.setenv("LSTMLAB_TEST_SIGNAL", "INT@step=2")
    result = CliRunner().invoke(app, ["train", str(config), "-q", "--runs-dir", str(tmp_path / "runs"),
                                      "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 130, result.output
    view = RunView(tmp_path / "runs" / "tiny" / RUN)
    assert view.status == "interrupted" and view.format == FORMAT and view.checkpoint["best"]["step"] is None
    for choice in ("auto", "best-or-latest", "latest"):
        _, used = view.weights(choice)
        assert used == {"source": "latest checkpoint", "step": 2, "status": "interrupted", "checkpoint_step": 2}
    with pytest.raises(UnreadableFile, match=r"checkpoint.pt: no best weights in it \(the run stopped before its "
                                             r"first evaluation\); use --weights latest"):
        view.weights("best")


# -- format 1: an earlier version's folder -------------------------------------------------------------


def test_a_format_1_folder_reads_with_what_it_lacks_derived(run):
    """No format, test_metric, best_val, metric, higher_is_better or solved: the metric and its direction from
    the task registry, the test metric from metrics.csv's test row, the best validation metric from its val
    rows, solved from the solve threshold."""
    full = json.loads((run / "summary.json").read_text())
    rewrite_summary(run, drop=FORMAT_2_ONLY + ("test",))
    view = RunView(run)
    assert view.format == 1 and view.status == "completed"
    assert view.metric == "accuracy" and view.higher_is_better is True
    (test_row,) = [r for r in csv_rows(run / "metrics.csv") if r["split"] == "test"]
    assert view.test_metric() == float(test_row["accuracy"]) == pytest.approx(full["test_metric"])
    assert view.best_val() == max(float(r["accuracy"]) for r in csv_rows(run / "metrics.csv") if r["split"] == "val")
    assert view.best_val() == full["best_val"]["accuracy"]
    assert view.solved() is (view.test_metric() >= full["solve_threshold"])
    (group,) = compare_runs([run.parent]).groups
    assert group.values == [view.test_metric()] and group.runs[0].val == view.best_val()


def test_a_completed_format_2_summary_missing_a_result_is_damaged_not_old(run):
    rewrite_summary(run, drop=("test_metric", "best_val"))
    with pytest.raises(UnreadableFile, match="summary.json: a completed run's summary of format 2 always holds "
                                             "best_val, test_metric, and this one does not"):
        RunView(run).summary  # noqa: B018
    (skipped,) = compare_runs([run.parent]).skipped
    assert skipped.reason.startswith("unreadable summary.json: a completed run's summary of format 2 always")
    rewrite_summary(run, status="running")  # a run still training has no results yet: nothing is missing
    assert RunView(run).status == "running"


@pytest.mark.parametrize("value, problem", [("2", 'format is "2", not an integer'),
                                            (True, "format is true, not an integer"),
                                            (0, "format is 0, not a run folder format")])
def test_a_format_that_is_no_version_is_refused(run, value, problem):
    rewrite_summary(run, format=value)
    with pytest.raises(UnreadableFile, match=f"summary.json: {problem}"):
        RunView(run).format  # noqa: B018


def test_a_later_format_reads_like_format_2(run):
    rewrite_summary(run, format=FORMAT + 1, converged=True)
    view = RunView(run)
    assert view.format == FORMAT + 1 and view.metric == "accuracy" and view.best_val() is not None


# -- config.yaml and files that are not what they should be ------------------------------------------------


def test_config_yaml_is_read_with_lstmlabs_yaml_rules(run):
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("  lr: 0.01\n", "  lr: 1e-2\n"))
    assert RunView(run).flat["train.lr"] == 0.01  # YAML 1.2: a number, not the text "1e-2"
    (run / "config.yaml").write_text(text + "experiment: again\n")
    with pytest.raises(UnreadableFile, match=r"config.yaml: invalid YAML at line \d+, column 1: duplicate key "
                                             "'experiment' \\(first at line 1\\)"):
        RunView(run).config  # noqa: B018


def test_open_run_refuses_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(UserError, match=f"^{tmp_path} is not a run folder: it has no config.yaml"):
        open_run(tmp_path)


def test_nothing_is_read_until_asked_for_and_the_view_writes_nothing(run):
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    (run / "metrics.csv").write_bytes(b"\0not a table")  # never read: compare's table needs no rows
    view = RunView(run)
    assert view.status == "completed" and view.flat["model.layers"] == 2
    with pytest.raises(UnreadableFile, match="metrics.csv: is not a text file"):
        view.rows  # noqa: B018
    (run / "metrics.csv").write_bytes(before["metrics.csv"])
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_inspect_says_a_damaged_checkpoint_in_one_line(run, trained):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    del ckpt["best"]
    torch.save(ckpt, run / "checkpoint.pt")
    result = CliRunner().invoke(app, ["inspect", str(run), "--data-dir", str(trained / "data")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert "checkpoint.pt: has no best weights, though a format-2 run folder's checkpoint" in message
