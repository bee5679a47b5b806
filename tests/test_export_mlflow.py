"""MLflow export into a real SQLite tracking store, read back with MlflowClient: one run per folder, the config
as params, every metrics.csv cell as a metric point at its step, tags and files; exporting again adds nothing."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import yaml
from scalar_tags import assert_each_quantity_once, expected_tags
from typer.testing import CliRunner

from lstmlab.analysis.export import flatten
from lstmlab.cli import app
from lstmlab.run.folder import RunFolder, find_runs

mlflow = pytest.importorskip("mlflow", reason="the [mlflow] extra (in [dev])")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import ViewType  # noqa: E402

runner = CliRunner()


def export(*args: str):
    result = runner.invoke(app, ["export", "mlflow", *args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def store(tiny_study, tmp_path_factory):
    """One SQLite store for the module (MLflow takes seconds to create its schema), the study exported once."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = export(str(tiny_study), "--tracking-uri", uri)
    assert result.output.count("created tiny/") == 4
    return uri, MlflowClient(tracking_uri=uri), root


def runs_of(client, experiment: str, view=ViewType.ACTIVE_ONLY):
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], run_view_type=view) if found else []


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_one_run_per_folder_with_params_metrics_tags_and_files(tiny_study, store):
    uri, client, root = store
    runs = {r.info.run_name: r for r in runs_of(client, "tiny")}
    folders = find_runs([tiny_study])
    assert sorted(runs) == sorted(f.path.name for f in folders)
    for folder in folders:
        run = runs[folder.path.name]
        config, summary, rows = folder.config(), folder.summary(), folder.metrics()
        assert run.info.status == "FINISHED"
        expected = {k: v if isinstance(v, str) else json.dumps(v) for k, v in flatten(config).items()}
        assert run.data.params == {**expected, "n_params": str(summary["params"])}
        keys = expected_tags(rows)  # each quantity once: train/lr, never val/lr or test/elapsed_s
        assert set(run.data.metrics) == keys
        assert_each_quantity_once(keys)
        for key in keys:
            split, column = key.split("/")
            from_csv = sorted((r["step"], float(r[column])) for r in rows
                              if r["split"] == split and isinstance(r.get(column), (int, float)))
            assert history(client, run.info.run_id, key) == from_csv, key
        assert run.data.metrics["test/mse"] == summary["test"]["mse"] == summary["test_metric"]
        tags = run.data.tags
        assert tags["lstmlab.experiment"] == "tiny" and tags["lstmlab.run"] == folder.path.name
        assert tags["lstmlab.status"] == "completed" and tags["lstmlab.task"] == "adding"
        assert tags["lstmlab.group"] == f"model.layers={config['model']['layers']}"
        assert tags["lstmlab.folder"] == str(folder.path.resolve())
        assert tags["lstmlab.solved"] == json.dumps(summary["solved"])
        env = folder.env()
        if env.get("git_sha"):
            assert tags["lstmlab.git_sha"] == tags["mlflow.source.git.commit"] == env["git_sha"]
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert files == {"config.yaml", "env.json", "metrics.csv", "summary.json"}
    assert (root / "mlartifacts" / "tiny").is_dir(), "a SQLite store keeps its artifacts beside the database"


def test_exporting_again_updates_and_never_duplicates(tiny_study, store):
    uri, client, _ = store
    before = {r.info.run_id: history(client, r.info.run_id, "val/mse") for r in runs_of(client, "tiny")}
    result = export(str(tiny_study), "--tracking-uri", uri)
    assert result.output.count("updated tiny/") == 4 and "0 new metric points" in result.output
    after = {r.info.run_id: history(client, r.info.run_id, "val/mse") for r in runs_of(client, "tiny")}
    assert after == before


def test_a_run_exported_while_training_gets_only_its_new_points_later(tiny_study, store, tmp_path):
    uri, client, _ = store
    source = find_runs([tiny_study])[0].path
    run = shutil.copytree(source, tmp_path / "live" / source.name)
    full_csv, full_summary = (run / "metrics.csv").read_text(), (run / "summary.json").read_text()
    lines = full_csv.splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(lines[:3]))  # header + step 10's train and val rows
    summary = json.loads(full_summary)
    (run / "summary.json").write_text(json.dumps({k: summary[k] for k in ("status", "run", "params", "metric")}
                                                 | {"status": "running"}))
    export(str(run), "--tracking-uri", uri, "--experiment", "live")
    (first,) = runs_of(client, "live")
    (val_row,) = [r for r in RunFolder(run).metrics() if r["split"] == "val"]
    assert first.info.status == "RUNNING"
    assert history(client, first.info.run_id, "val/loss") == [(10, val_row["loss"])]
    (run / "metrics.csv").write_text(full_csv)
    (run / "summary.json").write_text(full_summary)
    export(str(run), "--tracking-uri", uri, "--experiment", "live")
    (second,) = runs_of(client, "live")
    assert second.info.run_id == first.info.run_id and second.info.status == "FINISHED"
    assert [s for s, _ in history(client, second.info.run_id, "val/loss")] == [10, 20]
    assert [s for s, _ in history(client, second.info.run_id, "train/loss")] == [10, 20]


def test_a_folder_restarted_with_another_config_gets_a_new_run(tiny_study, store, tmp_path):
    uri, client, _ = store
    source = find_runs([tiny_study])[0].path
    run = shutil.copytree(source, tmp_path / "again" / source.name)
    export(str(run), "--tracking-uri", uri, "--experiment", "again")
    (old,) = runs_of(client, "again")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["lr"] = 0.02
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert "replaced again/" in export(str(run), "--tracking-uri", uri, "--experiment", "again").output
    (new,) = runs_of(client, "again")
    assert new.info.run_id != old.info.run_id and new.data.params["train.lr"] == "0.02"
    assert client.get_run(old.info.run_id).info.lifecycle_stage == "deleted"


def test_bad_input_exits_2(tmp_path):
    result = runner.invoke(app, ["export", "mlflow", str(tmp_path / "nowhere"),
                                 "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2 and "no such path" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("command, extra", [("mlflow", "mlflow"), ("tensorboard", "tensorboard")])
def test_a_missing_extra_is_named(tiny_study, tmp_path, monkeypatch, command, extra):
    monkeypatch.setitem(sys.modules, "mlflow" if extra == "mlflow" else "tensorboardX", None)  # not installed
    result = runner.invoke(app, ["export", command, str(tiny_study), "--logdir" if extra == "tensorboard"
                                 else "--tracking-uri", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"pip install 'lstmlab[{extra}]'" in result.output


def test_a_symlink_in_a_run_folder_is_not_copied_as_an_artifact(tiny_study, store, tmp_path):
    """A link planted in a shared run folder copied its target (any file the exporting user can read)."""
    uri, client, _ = store
    source = find_runs([tiny_study])[0].path
    run = shutil.copytree(source, tmp_path / "shared" / source.name)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET\n")
    (run / "notes.txt").symlink_to(secret)
    export(str(run), "--tracking-uri", uri, "--experiment", "planted")
    (exported,) = runs_of(client, "planted")
    files = {a.path for a in client.list_artifacts(exported.info.run_id)}
    assert files == {"config.yaml", "env.json", "metrics.csv", "summary.json"}


def test_a_read_only_store_is_refused_at_once(tiny_study, tmp_path):
    """A read-only SQLite store (its folder a read-only mount): exit 2 in seconds, naming it, where MLflow
    retried for minutes."""
    import time

    from mounts import lstmlab_in, read_only

    store = tmp_path / "store"
    store.mkdir()
    export(str(tiny_study), "--tracking-uri", f"sqlite:///{store / 'mlflow.db'}")
    for database in (store / "mlflow.db", store / "new.db"):
        start = time.monotonic()
        result = lstmlab_in(read_only(store), "export", "mlflow", str(tiny_study), "--tracking-uri",
                            f"sqlite:///{database}", timeout=60)
        assert result.returncode == 2, result.stderr
        assert time.monotonic() - start < 30
        assert "Traceback" not in result.stderr
        named = database if database.exists() else store
        assert f"cannot write {named} (Read-only file system)" in " ".join(result.stderr.split())
