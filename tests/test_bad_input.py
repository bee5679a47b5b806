"""A corpus of bad input — configs, flags, files — each refused with exit code 2, a message that names the
file or key, and no traceback. `--debug` shows the traceback; an internal error keeps its own (exit 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.cli import app
from lstmlab.config import load_config

runner = CliRunner()
LONG = "x" * 300


def with_keys(**sections) -> dict:
    """TINY with some keys of some sections replaced: with_keys(model={"layers": True})."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for section, keys in sections.items():
        if isinstance(keys, dict) and isinstance(raw.get(section), dict):
            raw[section].update(keys)
        else:
            raw[section] = keys
    return raw


def config_text(text: str | bytes):
    """A scenario: a config file holding `text`; the message must name the file."""

    def make(tmp: Path):
        path = tmp / "bad.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["train", str(path)], [str(path)]

    return make


def config(raw: dict, *named: str):
    """A scenario: a config file of `raw`; the message must name `named` (keys)."""

    def make(tmp: Path):
        path = write_config(tmp / "bad.yaml", raw)
        return ["train", str(path)], [str(path), *named]

    return make


def flags(*args: str, named: tuple[str, ...] = (), raw: dict | None = None):
    """A scenario: the tiny config with extra command-line arguments; the message must name `named`."""

    def make(tmp: Path):
        path = write_config(tmp / "tiny.yaml", raw or TINY)
        return ["train", str(path), *args], list(named)

    return make


def special_file(kind: str):
    """A scenario: CONFIG is a folder, a FIFO or a device."""

    def make(tmp: Path):
        path = {"folder": tmp, "device": Path("/dev/zero"), "fifo": tmp / "config.fifo"}[kind]
        if kind == "fifo":
            os.mkfifo(path)
        return ["train", str(path)], [str(path)]

    return make


def charlm_text(kind: str):
    """A scenario: charlm's task.text is a device, a FIFO, binary, a name that matches nothing."""

    def make(tmp: Path):
        if kind == "device":
            text = "/dev/zero"
        elif kind == "fifo":
            text = str(tmp / "corpus.fifo")
            os.mkfifo(text)
        elif kind == "binary":
            text = str(tmp / "corpus.bin")
            Path(text).write_bytes(bytes(range(256)) * 64)
        else:
            text = str(tmp / ("no-such-" + LONG))
        raw = with_keys(task={"name": "charlm", "text": [text], "seq_len": 8, "n_train": 16, "n_val": 4,
                              "n_test": 4})
        path = write_config(tmp / "charlm.yaml", raw)
        return ["train", str(path)], ["task.text", text if kind != "name" else "no-such-"]

    return make


def run_folder(what: str):
    """A scenario: the run's folder already holds a broken file."""

    def make(tmp: Path):
        path = write_config(tmp / "tiny.yaml", TINY)
        run = tmp / "runs" / "tiny" / "L1-lstm-s0"
        run.mkdir(parents=True)
        resolved = next(load_config(path).runs()).dump_yaml()
        if what == "config":
            (run / "config.yaml").write_text("model: {layers: 1\n")
            named = run / "config.yaml"
        elif what == "checkpoint":
            (run / "config.yaml").write_text(resolved)
            (run / "summary.json").write_text('{"status": "interrupted"}')
            (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")
            named = run / "checkpoint.pt"
        else:  # no config
            (run / "checkpoint.pt").write_bytes(b"whatever")
            named = run
        return ["train", str(path)], [str(named), "--restart"]

    return make


def dataset(what: str):
    """A scenario: the dataset folder was damaged after it was written."""

    def make(tmp: Path):
        path = write_config(tmp / "tiny.yaml", TINY)
        assert runner.invoke(app, ["generate-data", str(path), "--data-dir", str(tmp / "data")]).exit_code == 0
        folder = next((tmp / "data").glob("adding-*"))
        if what == "meta":
            (folder / "meta.json").write_text("{not json")
            named = folder / "meta.json"
        else:
            named = folder / "train-inputs.npy"
            named.write_bytes(named.read_bytes()[:100])
        return ["train", str(path)], [str(named)]

    return make


def arrays_file(what: str):
    """A scenario: task.path names a hostile .npz (or a FIFO); the message must name the file (and key)."""

    def make(tmp: Path):
        import io
        import zipfile

        import numpy as np

        path = tmp / "mine.npz"
        y = np.zeros(20, np.int64)
        y[::2] = 1
        x = np.zeros((20, 4, 1), np.float32)
        named = [str(path)]
        if what == "class 2^40":
            np.savez(path, inputs=x, targets=y * 2**40)
            named.append("key 'targets' holds classes id 1099511627776")
        elif what == "uint64 token":
            np.savez(path, inputs=np.full((20, 4), 2**64 - 1, np.uint64), targets=y)
            named.append("key 'inputs' holds tokens id 18446744073709551615")
        elif what in ("no steps", "no features"):
            np.savez(path, inputs=np.zeros((20, 0, 1) if what == "no steps" else (20, 4, 0), np.float32), targets=y)
            named.append("key 'inputs' has shape")
        elif what == "373 GiB header":
            member = io.BytesIO()
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (100_000, 1_000_000, 1)})
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("inputs.npy", member.getvalue() + bytes(16))
                archive.writestr("targets.npy", b"")
            named.append("372.5 GiB")
        else:  # a FIFO
            path = tmp / "mine.fifo.npz"
            os.mkfifo(path)
            named = [str(path), "FIFO"]
        raw = with_keys(task={"name": "arrays", "path": str(path), "kind": "sequence-class"})
        return ["train", str(write_config(tmp / "arrays.yaml", raw))], named

    return make


def generate_data(*args: str, named: tuple[str, ...] = ()):
    def make(tmp: Path):
        return ["generate-data", *args], list(named)

    return make


# nine-fold aliases six levels deep: 9^6 = 531,441 values from 60 written (flow style: one line)
ALIAS_BOMB = "&a [lol, lol, lol, lol, lol, lol, lol, lol, lol], " + ", ".join(
    f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcde", "bcdef", strict=True))

CASES = {
    # config files
    "binary config": config_text(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(32))),
    "config with a NUL byte": config_text("experiment: x\x00\n"),
    "invalid YAML": config_text("task: {name: adding\n"),
    "duplicate key": config_text("task: {name: adding}\nmodel: {layers: 1}\nmodel: {layers: 2}\n"),
    "duplicate nested key": config_text("task: {name: adding, seq_len: 5, seq_len: 6}\n"),
    "a list, not a mapping": config_text("- task\n- model\n"),
    "config is a folder": special_file("folder"),
    "config is a FIFO": special_file("fifo"),
    "config is a device": special_file("device"),
    "unknown top-level key": config(with_keys(experimentt="x"), "experimentt: unknown key"),
    "layers: true": config(with_keys(model={"layers": True}), "model.layers: expected a number, not true"),
    "hidden_size: false": config(with_keys(model={"hidden_size": False}), "model.hidden_size"),
    "tie_weights: 1": config(with_keys(model={"tie_weights": 1}), "model.tie_weights: expected true or false"),
    "lr: .inf": config(with_keys(train={"lr": float("inf")}), "train.lr: Input should be a finite number"),
    "grad_clip: .nan": config(with_keys(train={"grad_clip": float("nan")}), "train.grad_clip"),
    "dropout: -.inf": config(with_keys(model={"dropout": float("-inf")}), "model.dropout"),
    "seed overflows": config(with_keys(train={"seed": 10**20}), "train.seed: Input should be less than"),
    "task seed overflows": config(with_keys(task={"seed": 2**64}), "task.seed"),
    "unknown task": config(with_keys(task={"name": "nope"}), "task.name: unknown task 'nope'", "valid tasks"),
    "task without a name": config({**TINY, "task": {"seq_len": 5}}, "task.name: missing"),
    "experiment with a slash": config(with_keys(experiment="a/b"), "experiment: must be letters"),
    "experiment name too long": config(with_keys(experiment=LONG), "experiment: String should have at most"),
    "empty sweep axis": config(with_keys(sweep={"model.layers": []}), "sweep axis 'model.layers' has no values"),
    "sweep of an unknown key": config(with_keys(sweep={"model.nope": [1]}), "sweep key 'model.nope'"),
    "unknown model type": config(with_keys(model={"type": "lstmx"}), "model.type"),
    "task key of another task": config(with_keys(task={"vocab": 3}), "task.vocab: unknown key"),
    "threads beyond any machine": config(with_keys(train={"threads": 100000}),
                                         "train.threads: Input should be less than or equal to 4096"),
    "an alias bomb as a sweep value": config_text(
        "experiment: x\ntask: {name: adding}\nsweep:\n  model.layers:\n    - - "
        + ALIAS_BOMB.replace(", &", "\n      - &")),
    # flags
    "--set threads beyond any machine": flags("--set", "train.threads=100000",
                                              named=("--set train.threads=100000: train.threads: Input should be",)),
    "--set a sweep axis that is no list": flags("--set", "sweep.model.layers=3",
                                                named=("--set sweep.model.layers=3: sweep.model.layers",)),
    "--set a sweep axis of an unknown key": flags("--set", "sweep.model.nope=[1,2]",
                                                  named=("--set sweep.model.nope=[1,2]: sweep key 'model.nope'",)),
    "--sweep an unknown key": flags("--sweep", "model.nope=1,2", named=("--sweep model.nope=1,2: sweep key",)),
    "--set a list of 100,000 values": flags("--set", f"model.layers={list(range(100_000))}",
                                            named=("--set model.layers=[0, 1, 2,", "model.layers")),
    "--set an alias bomb": flags("--set", f"model.layers=[{ALIAS_BOMB}]",
                                 named=("aliases expand to more than 100,000 values",)),
    "--set typo": flags("--set", "model.layerz=2", named=("--set model.layerz=2: model.layerz: unknown key",)),
    "--set non-number": flags("--set", "train.lr=fast", named=("--set train.lr=fast: train.lr",)),
    "--set overflow seed": flags("--set", "train.seed=100000000000000000000",
                                 named=("--set train.seed=100000000000000000000: train.seed",)),
    "--set layers=true": flags("--set", "model.layers=true", named=("--set model.layers=true: model.layers",)),
    "--set lr=.inf": flags("--set", "train.lr=.inf", named=("--set train.lr=.inf: train.lr",)),
    "--set unknown task": flags("--set", "task.name=nope", named=("unknown task 'nope'",)),
    "--set without =": flags("--set", "model.layers", named=("malformed --set 'model.layers'",)),
    "--sweep without =": flags("--sweep", "model.layers", named=("malformed --sweep",)),
    "--sweep empty value": flags("--sweep", "train.seed=", named=("--sweep train.seed=: an empty value",)),
    "--sweep trailing comma": flags("--sweep", "model.layers=1,", named=("--sweep model.layers=1,",)),
    "--set experiment too long": flags("--set", f"experiment={LONG}", named=("experiment",)),
    "--runs-dir is a file": flags("--runs-dir", "/etc/hostname", named=("/etc/hostname", "--runs-dir")),
    "--runs-dir under /proc": flags("--runs-dir", "/proc/lstmlab-nope", named=("/proc/lstmlab-nope", "--runs-dir")),
    "--runs-dir not writable": flags("--runs-dir", "/sys/lstmlab-nope", named=("/sys/lstmlab-nope", "--runs-dir")),
    "--data-dir under /proc": flags("--data-dir", "/proc/lstmlab-nope", named=("/proc/lstmlab-nope", "--data-dir")),
    "--data-dir is a file": flags("--data-dir", "/etc/hostname", named=("/etc/hostname", "--data-dir")),
    "triton without CUDA": flags("--set", "model.type=scratch-lstm", "--set", "model.backend=triton",
                                 named=("model.backend", "triton", "valid on this machine")),
    "cuda without CUDA": flags("--set", "train.device=cuda", named=("train.device",)),
    "bf16 on CPU": flags("--set", "train.precision=bf16", "--set", "train.device=cpu", named=("train.precision",)),
    "tied weights on a real-valued task": flags("--set", "model.tie_weights=true", named=("model.tie_weights",)),
    "a model too big for memory": flags("--set", "model.hidden_size=65536", "--set", "model.layers=16",
                                        named=("model.hidden_size=65536", "model.layers=16", "needs about")),
    "a dataset too big for memory": flags("--set", "task.seq_len=1000000", "--set", "task.n_train=100000", named=(
        "task.seq_len=1000000", "task.n_train=100000", "generating them about")),
    # files a config points at, or that a run folder or dataset holds
    "task.text is /dev/zero": charlm_text("device"),
    "task.text is a FIFO": charlm_text("fifo"),
    "task.text is binary": charlm_text("binary"),
    "task.text matches nothing": charlm_text("name"),
    "garbage config.yaml in the run folder": run_folder("config"),
    "truncated checkpoint.pt": run_folder("checkpoint"),
    "run folder without config.yaml": run_folder("no config"),
    "arrays: class id 2^40": arrays_file("class 2^40"),
    "arrays: uint64 token 2^64-1": arrays_file("uint64 token"),
    "arrays: inputs (N, 0, 1)": arrays_file("no steps"),
    "arrays: inputs (N, T, 0)": arrays_file("no features"),
    "arrays: a header claiming 373 GiB": arrays_file("373 GiB header"),
    "arrays: task.path is a FIFO": arrays_file("fifo"),
    "garbage meta.json": dataset("meta"),
    "truncated dataset array": dataset("array"),
    # other commands
    "generate-data unknown task": generate_data("--task", "nope", named=("unknown task 'nope'",)),
    "generate-data --set typo": generate_data("--task", "copy", "--set", "task.seq_lenn=5",
                                              named=("--set task.seq_lenn=5: task.seq_lenn: unknown key",)),
    "bench bad shape": lambda tmp: (["bench", "--shape", "1,2"], ["T,B,I,H", "'1,2'"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_naming_the_file_or_key_without_a_traceback(tmp_path, case):
    args, named = CASES[case](tmp_path)
    if args[0] in ("train", "generate-data") and "--data-dir" not in args:
        args += ["--data-dir", str(tmp_path / "data")]
    if args[0] == "train" and "--runs-dir" not in args:
        args += ["--runs-dir", str(tmp_path / "runs")]
    result = runner.invoke(app, [*args, "-q"] if args[0] == "train" else args)
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    for name in named:
        assert " ".join(name.split()) in output, (name, result.output)
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert len(result.output) < 3000, "a message echoes a value in full"


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40


def test_debug_shows_the_traceback_of_bad_input(tmp_path):
    path = write_config(tmp_path / "bad.yaml", with_keys(model={"layers": True}))
    result = runner.invoke(app, ["--debug", "train", str(path)])
    assert result.exit_code == 2
    assert "Traceback" in result.output and "ConfigError" in result.output
    assert "model.layers: expected a number, not true" in result.output


def test_an_internal_error_is_not_bad_input(tmp_path, monkeypatch):
    """A ValueError from lstmlab's own code is a bug: exit code 1 with the exception, not a one-line 'error:'."""
    import lstmlab.config

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(lstmlab.config, "load_config", broken)
    result = runner.invoke(app, ["train", str(write_config(tmp_path / "c.yaml", TINY))])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    assert "error:" not in result.output


def test_a_repeated_key_in_a_nested_mapping_names_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("task:\n  name: adding\n  seq_len: 5\n  seq_len: 6\n")
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    assert "invalid YAML at line 4, column 3: duplicate key 'seq_len' (first at line 3)" in result.output


def test_yaml_merge_keys_still_override(tmp_path):
    """`<<: *base` followed by the same key is an override YAML allows, not a duplicate."""
    from lstmlab.files import read_yaml

    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {layers: 1, hidden_size: 8}\nmodel:\n  <<: *b\n  layers: 2\n")
    assert read_yaml(path)["model"] == {"layers": 2, "hidden_size": 8}


class _RunsCode:
    """Unpickled, it would make a folder: what a planted checkpoint could do instead."""

    def __init__(self, folder: Path):
        self.folder = str(folder)

    def __reduce__(self):
        return (os.mkdir, (self.folder,))


def test_a_checkpoint_with_code_is_refused_without_advising_to_load_it_anyway(tmp_path):
    """torch's refusal advises rerunning with weights_only=False: for a file of unknown origin that runs its code."""
    import torch

    path = write_config(tmp_path / "tiny.yaml", TINY)
    run = tmp_path / "runs" / "tiny" / "L1-lstm-s0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(next(load_config(path).runs()).dump_yaml())
    (run / "summary.json").write_text('{"status": "interrupted"}')
    torch.save({"step": 1, "model": _RunsCode(tmp_path / "pwned")}, run / "checkpoint.pt")
    result = runner.invoke(app, ["train", str(path), "-q", "--runs-dir", str(tmp_path / "runs"),
                                 "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert f"{run / 'checkpoint.pt'}: refused: it holds Python objects that no lstmlab checkpoint holds" in output
    assert "posix.mkdir" in output and "--restart" in output
    assert "weights_only" not in output and "Re-running" not in output
    assert not (tmp_path / "pwned").exists()


@pytest.fixture(scope="module")
def charlm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("charlm")
    (root / "text.txt").write_text("a small text to learn from.\n" * 40)
    raw = with_keys(experiment="lm", task={"name": "charlm", "text": [str(root / "text.txt")], "seq_len": 8,
                                           "n_train": 32, "n_val": 8, "n_test": 8})
    result = runner.invoke(app, ["train", str(write_config(root / "lm.yaml", raw)), "-q", "--runs-dir",
                                 str(root / "runs"), "--data-dir", str(root / "data")])
    assert result.exit_code == 0, result.output
    return root


@pytest.mark.parametrize("args, named", [
    (["--temperature", "inf"], "--temperature: a finite number ≥ 0 (got inf)"),
    (["--temperature", "1e400"], "--temperature: a finite number ≥ 0 (got inf)"),
    (["--seed", str(10**23)], f"--seed: an integer from 0 to {2**63 - 1} (got {10**23})"),
    (["--seed", "-1"], "--seed: an integer from 0 to"),
])
def test_sample_refuses_values_it_cannot_use(charlm_run, args, named):
    run = charlm_run / "runs" / "lm" / "L1-lstm-s0"
    result = runner.invoke(app, ["sample", str(run), "--data-dir", str(charlm_run / "data"), "--chars", "5", *args])
    assert result.exit_code == 2, result.output
    assert named in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_sample_at_a_tiny_temperature_takes_the_most_likely_character(charlm_run):
    """softmax(z / 1e-320) overflowed to nan; it is the greedy choice in the limit."""
    run = charlm_run / "runs" / "lm" / "L1-lstm-s0"
    base = ["sample", str(run), "--data-dir", str(charlm_run / "data"), "--chars", "20", "--seed", "1"]
    tiny = runner.invoke(app, [*base, "--temperature", "1e-320"])
    assert tiny.exit_code == 0, tiny.output
    assert tiny.stdout == runner.invoke(app, [*base, "--temperature", "0"]).stdout


def test_export_tensorboard_into_a_file_names_it(tiny_study, tmp_path):
    file = tmp_path / "not-a-folder"
    file.write_text("mine")
    result = runner.invoke(app, ["export", "tensorboard", str(tiny_study), "--logdir", str(file)])
    assert result.exit_code == 2, result.output
    assert f"cannot make the folder {file} (chosen by --logdir): a file of that name is there" in \
        " ".join(result.output.split())
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "tiny").write_text("mine")  # where the experiment's folder would go
    result = runner.invoke(app, ["export", "tensorboard", str(tiny_study), "--logdir", str(tmp_path / "logs")])
    assert result.exit_code == 2, result.output
    assert f"cannot write {tmp_path / 'logs' / 'tiny'}" in " ".join(result.output.split())
    assert file.read_text() == "mine" and (tmp_path / "logs" / "tiny").read_text() == "mine"


def test_threads_beyond_this_machines_cpus_are_refused_where_the_run_starts(tmp_path):
    """A config may ask for more threads than the machine that reads it has (a cluster's login node): it is
    read, and refused where it would train, naming the key and the CPUs there; no run folder is left behind."""
    from lstmlab.config import available_cpus, validate

    too_many = available_cpus() + 1
    raw = {**TINY, "train": {**TINY["train"], "threads": too_many}}
    assert validate(raw).train.threads == too_many  # reading the config does not judge this machine
    path = write_config(tmp_path / "threads.yaml", raw)
    result = CliRunner().invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs"),
                                      "--data-dir", str(tmp_path / "data"), "-q"])
    assert result.exit_code == 2, result.output
    assert f"train.threads: {too_many} is more than the {available_cpus()} CPU(s) this process may run on" in (
        " ".join(result.output.split()))
    assert "Traceback" not in result.output
    assert not list((tmp_path / "runs").rglob("summary.json"))
