"""MLflow: each run folder as one MLflow run in a tracking store (by default the SQLite file ./mlflow.db).

One MLflow run per run folder, in the MLflow experiment named like the lstmlab experiment (or --experiment):

    params     the resolved config, dotted (model.layers, train.lr, ...; lists as [a, b]), and n_params
    metrics    every metrics.csv cell as <split>/<column> at the row's step (val/loss, train/mse, ...),
               and the summary's test metrics as test/<metric> at the run's last step
    tags       lstmlab.experiment, lstmlab.run, lstmlab.status, lstmlab.task, lstmlab.group (the --by
               keys, e.g. model.layers=2), lstmlab.solved, lstmlab.git_sha and mlflow.source.git.commit,
               lstmlab.git_dirty, and lstmlab.folder: the run folder's absolute path
    artifacts  the run folder's regular files up to 10 MiB (config.yaml, env.json, metrics.csv, summary.json);
               never checkpoints, never what a symbolic link in the folder points at
    status     FINISHED, FAILED, KILLED (interrupted) or RUNNING, from summary.json

Exporting again updates, never duplicates: the MLflow run of a folder is found by its tag
lstmlab.folder_key (the sha256 of the folder's absolute path), and only metric points whose (key, step)
it lacks are logged, so a study exported while it trains and again when it is done has each point once.
A folder whose config no longer matches the MLflow run's params (restarted with another config) gets a
new MLflow run; the old one is deleted (MLflow keeps it, marked deleted). Points go in batches of 1,000
(MLflow's log_batch), so a study of many rows exports in a few calls per run.

A SQLite store keeps the artifacts of the experiments lstmlab creates beside the database file, in
mlartifacts/<experiment>/, wherever the command runs. The [mlflow] extra is mlflow-skinny plus the
SQLAlchemy and Alembic packages its SQL store needs — not the full mlflow package.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lstmlab.analysis.export import RunRecord, as_text, flatten, folder_started, read_run, run_folders, scalars
from lstmlab.errors import UserError
from lstmlab.run.reader import DEFAULT_BY

DEFAULT_URI = "sqlite:///mlflow.db"
FOLDER_TAG, FOLDER_KEY_TAG = "lstmlab.folder", "lstmlab.folder_key"
STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "running": "RUNNING"}
ARTIFACT_LIMIT = 10 * 2**20  # bytes
METRICS_PER_BATCH, PARAMS_PER_BATCH = 1000, 100  # MLflow's log_batch limits
PARAM_VALUE_LIMIT = 6000  # MLflow's longest param value


@dataclass
class Exported:
    folder: Path
    experiment: str
    run_id: str
    action: str  # created | updated | replaced
    metrics: int  # points logged by this export


def mlflow_client(tracking_uri: str):
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise UserError("lstmlab export mlflow needs the [mlflow] extra: pip install 'lstmlab[mlflow]'") from None
    for name in ("mlflow", "alembic"):  # schema creation logs at INFO on every new database
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return MlflowClient(tracking_uri=tracking_uri)
    except Exception as e:  # an unsupported scheme, an unreachable server
        raise UserError(f"--tracking-uri {tracking_uri}: {type(e).__name__}: {str(e).strip().splitlines()[0]}"
                        ) from None


def check_sqlite_writable(tracking_uri: str) -> None:
    """A sqlite:/// store must be writable, and so must its folder (SQLite's journal, mlartifacts/): tried
    for real, up front (os.access is no answer for root or on a read-only mount), since MLflow would retry a
    read-only database for minutes before giving up."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    flag = f"--tracking-uri {tracking_uri}"
    for where, attempt in ((database, lambda: os.close(os.open(database, os.O_RDWR)) if database.exists() else None),
                           (database.parent, lambda: tempfile.TemporaryFile(dir=database.parent).close())):
        try:
            attempt()
        except OSError as e:
            raise UserError(f"{flag}: cannot write {where} ({e.strerror or type(e).__name__}); the SQLite database "
                            "and the folder it is in (its journal and mlartifacts/ go there) must be writable"
                            ) from None


def export_mlflow(paths: list[Path], tracking_uri: str = DEFAULT_URI, experiment: str | None = None,
                  by: tuple[str, ...] = DEFAULT_BY) -> list[Exported]:
    """Every run folder under `paths` into the tracking store; returns what was done to each."""
    records = [read_run(folder) for folder in run_folders(paths)]
    check_sqlite_writable(tracking_uri)
    client = mlflow_client(tracking_uri)
    experiments: dict[str, str] = {}
    done = []
    for record in records:
        name = experiment or record.experiment
        if name not in experiments:
            experiments[name] = experiment_for(client, tracking_uri, name)
        done.append(export_run(client, experiments[name], record, name, by))
    return done


def experiment_for(client, tracking_uri: str, name: str) -> str:
    """The id of MLflow experiment `name`, created (or restored from deleted) when needed."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        folder = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        location = (database.resolve().parent / "mlartifacts" / folder).as_uri()
    return client.create_experiment(name, artifact_location=location)


def export_run(client, experiment_id: str, record: RunRecord, experiment_name: str, by: tuple[str, ...]
               ) -> Exported:
    """Create or update the MLflow run of one run folder."""
    from mlflow.entities import Metric, Param, RunTag, ViewType

    folder = str(record.folder.path.resolve())
    key = hashlib.sha256(folder.encode()).hexdigest()
    params = run_params(record)
    found = client.search_runs([experiment_id], filter_string=f"tags.`{FOLDER_KEY_TAG}` = '{key}'",
                               run_view_type=ViewType.ACTIVE_ONLY, max_results=1)
    run, action = (found[0], "updated") if found else (None, "created")
    if run is not None and any(params.get(k, v) != v for k, v in run.data.params.items()):
        client.delete_run(run.info.run_id)  # the folder holds another config now: a new MLflow run
        run, action = None, "replaced"
    started = folder_started(record)
    if run is None:
        run = client.create_run(experiment_id, run_name=record.name,
                                start_time=int(started * 1000) if started is not None else None)
    run_id = run.info.run_id

    logged = {(k, p.step) for k in run.data.metrics for p in client.get_metric_history(run_id, k)}
    points: dict[tuple[str, int], Metric] = {}
    now = int(time.time() * 1000)
    for row in record.rows:
        elapsed = row.get("elapsed_s")
        stamp = int((started + elapsed) * 1000) if started is not None and isinstance(elapsed, (int, float)) else now
        for tag, step, value in scalars([row]):
            points[(tag, step)] = Metric(tag, value, stamp, step)
    for name, value in (record.summary.get("test") or {}).items():  # the summary's word over metrics.csv's
        if isinstance(value, (int, float)) and isinstance(record.summary.get("step"), int):
            step = record.summary["step"]
            points[(f"test/{name}", step)] = Metric(f"test/{name}", float(value), now, step)
    new = [m for k, m in points.items() if k not in logged]
    new_params = [Param(k, v) for k, v in params.items() if k not in run.data.params]
    tags = [RunTag(k, v) for k, v in run_tags(record, experiment_name, by, folder, key).items()]
    for start in range(0, len(new), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=new[start : start + METRICS_PER_BATCH])
    for start in range(0, max(len(new_params), len(tags)), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=new_params[start : start + PARAMS_PER_BATCH],
                         tags=tags[start : start + PARAMS_PER_BATCH])
    for path in artifacts(record.folder.path):
        try:
            client.log_artifact(run_id, str(path))
        except OSError as e:  # the artifact store: a full disk, a read-only folder
            raise UserError(f"cannot copy {path} into the artifact store at {e.filename or 'its location'} "
                            f"({e.strerror or type(e).__name__})") from None
    status = STATUS.get(record.status, "RUNNING")
    if status == "RUNNING":
        client.update_run(run_id, status=status)
    else:
        wall = record.summary.get("wall_s")
        end = int((started + wall) * 1000) if started is not None and isinstance(wall, (int, float)) else None
        client.set_terminated(run_id, status=status, end_time=end)
    return Exported(record.folder.path, experiment_name, run_id, action, len(new))


def artifacts(folder: Path) -> list[Path]:
    """The run folder's own files to copy: regular files (a symbolic link is not followed: one planted in a
    shared run folder would copy its target, any file this user can read), not hidden, not checkpoints,
    up to ARTIFACT_LIMIT bytes."""
    out = []
    for path in sorted(folder.iterdir()):
        info = path.lstat()  # the name itself, not what a link points at
        if stat.S_ISREG(info.st_mode) and not path.name.startswith(".") and path.suffix != ".pt" \
                and info.st_size <= ARTIFACT_LIMIT:
            out.append(path)
    return out


def run_params(record: RunRecord) -> dict[str, str]:
    params = {k: as_text(v)[:PARAM_VALUE_LIMIT] for k, v in flatten(record.config).items()}
    if isinstance(record.summary.get("params"), int):
        params["n_params"] = str(record.summary["params"])
    return params


def run_tags(record: RunRecord, experiment: str, by: tuple[str, ...], folder: str, key: str) -> dict[str, str]:
    flat = flatten(record.config)
    tags = {
        FOLDER_TAG: folder, FOLDER_KEY_TAG: key, "lstmlab.experiment": record.experiment,
        "lstmlab.run": record.name, "lstmlab.status": record.status,
        "lstmlab.task": as_text(flat.get("task.name")),
        "lstmlab.group": ",".join(f"{k}={as_text(flat.get(k))}" for k in by),
    }
    if isinstance(record.summary.get("solved"), bool):
        tags["lstmlab.solved"] = as_text(record.summary["solved"])
    if record.env.get("git_sha"):
        tags["lstmlab.git_sha"] = tags["mlflow.source.git.commit"] = record.env["git_sha"]
    if record.env.get("git_dirty") is not None:
        tags["lstmlab.git_dirty"] = as_text(record.env["git_dirty"])
    return tags
