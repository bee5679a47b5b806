"""The `lstmlab` command: thin commands that parse, call the library and render with rich.

torch is imported inside the commands, never at module level, so `lstmlab --help` stays fast.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from lstmlab.run.executors import options_help

app = typer.Typer(
    name="lstmlab",
    help="Train LSTM, GRU and RNN models on sequence tasks and compare them with error bars.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

# typer ≥ 0.20 labels every option with its type, flags included ("--quiet <bool>"), though a flag takes
# no value: show nothing there for flags.
if hasattr(typer.core.TyperOption, "display_type_rich"):
    _display_type_rich = typer.core.TyperOption.display_type_rich

    def _flag_has_no_placeholder(self, ctx):
        return None if self.is_flag else _display_type_rich(self, ctx)

    typer.core.TyperOption.display_type_rich = _flag_has_no_placeholder

CONFIG_PANEL = "Config"
OUTPUT_PANEL = "Output"
RUN_PANEL = "Running"

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="Override a config key (dotted; YAML scalar value).",
                 rich_help_panel=CONFIG_PANEL),
]
RunsDir = Annotated[Path, typer.Option(help="Where run folders land.", rich_help_panel=OUTPUT_PANEL)]
DataDir = Annotated[Path, typer.Option(help="Where datasets are generated and read.", rich_help_panel=OUTPUT_PANEL)]


def _console(stderr: bool = False):
    """Rich output; wide enough for the tables when it goes to a file or a pipe (rich's default is 80)."""
    from rich.console import Console

    class PipeSafeConsole(Console):
        def on_broken_pipe(self) -> None:  # rich exits with 1 here; a reader that left is not a failure
            _stdout_to_devnull()

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else 160
    return PipeSafeConsole(stderr=stderr, highlight=False, soft_wrap=True, width=width)


_DEBUG = {"on": False}  # --debug: show the traceback of bad input too


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error in bad input too.")] = False,
) -> None:
    _DEBUG["on"] = debug


def user_errors(command):
    """Bad input (a UserError) ends the command with its one-line message on stderr and exit code 2, no
    traceback unless --debug. Any other exception is an internal error: its traceback and exit code 1.
    Output into a closed pipe (`lstmlab ... | head`) ends the command quietly, not as a failure."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from rich.markup import escape

        from lstmlab.errors import UserError

        try:
            return command(*args, **kwargs)
        except UserError as e:  # escaped: a message may hold brackets, e.g. lstmlab[plot]
            if _DEBUG["on"]:
                import traceback

                traceback.print_exc()
            message = str(e)
            if len(message) > 2000:  # no message is a wall: each echoed value is capped, and so is the whole
                message = f"{message[:1500]} ... ({len(message) - 1800:,} characters left out) ... {message[-300:]}"
            _console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", markup=True)
            raise typer.Exit(2) from None
        except BrokenPipeError:
            _stdout_to_devnull()
            raise typer.Exit(0) from None

    return wrapper


def _stdout_to_devnull() -> None:
    """The reader of stdout went away (`lstmlab ... | head`): what is left goes to /dev/null, and training
    goes on (Python would otherwise complain at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@app.command(rich_help_panel="Experiments")
@user_errors
def train(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="Experiment config (YAML).", show_default=False)],
    set_: SetOption = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option("--sweep", metavar="KEY=V1,V2", help="Sweep a key over values (replaces the config's axis).",
                     rich_help_panel=CONFIG_PANEL),
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option("--seeds", metavar="N", show_default=False, rich_help_panel=CONFIG_PANEL,
                     help="Seeds 0..N-1: the same as --sweep train.seed=0,1,...,N-1 (replaces the config's seed axis).")
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = Path("data"),
    print_config: Annotated[
        bool,
        typer.Option("--print-config", help="Print the resolved run configs and exit; a dry run: nothing is "
                     "written (a hidden size only the data can give is said to be derived at train time).",
                     rich_help_panel=CONFIG_PANEL),
    ] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start runs over instead of resuming or skipping them.",
                           rich_help_panel=RUN_PANEL)
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Runs (or packs) at a time, in separate processes.",
                                      rich_help_panel=RUN_PANEL)] = 1,
    pack: Annotated[
        str, typer.Option("--pack", metavar="K|auto", rich_help_panel=RUN_PANEL,
                          help="Train up to K runs of one architecture together, through one stacked kernel "
                          "(runs that differ in seed, lr and other keys that change no shape). Packing changes "
                          "no run's folder or numbers, only the time. auto: the size measured best on the "
                          "device; 1: one run per process. Only scratch-lstm runs pack: lstm, gru and rnn "
                          "runs use torch.nn's kernels and train one per process.")
    ] = "auto",
    executor: Annotated[
        str, typer.Option("--executor", metavar="local|submitit|ray", rich_help_panel=RUN_PANEL,
                          help="Where the runs (or packs) execute: local (this machine; see --jobs), submitit "
                          "(a Slurm job array; needs the slurm extra) or ray (tasks on a Ray cluster; needs the "
                          "ray extra). Runs dir and data dir must then be on a file system the nodes share. "
                          "The same config gives the same run folders whichever executes it.")
    ] = "local",
    executor_opt: Annotated[
        list[str] | None,
        typer.Option("--executor-opt", metavar="KEY=VALUE", rich_help_panel=RUN_PANEL,
                     help=f"An option of the executor (repeatable). {options_help()}.")
    ] = None,
    tensorboard: Annotated[
        Path | None,
        typer.Option("--tensorboard", metavar="DIR", rich_help_panel=OUTPUT_PANEL, show_default=False,
                     help="Log every evaluation to TensorBoard event files in DIR/<experiment>/<run-name> while "
                     "training, as `lstmlab export tensorboard` would write them (needs the tensorboard extra).")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars.", rich_help_panel=OUTPUT_PANEL)
    ] = False,
    allow_mixed_configs: Annotated[
        bool, typer.Option("--allow-mixed-configs", rich_help_panel=OUTPUT_PANEL,
                           help="Train into an experiment folder whose runs have another config (keys other than "
                           "sweep axes differ). Without it such a command is refused before anything trains.")
    ] = False,
    tune: Annotated[
        str | None,
        typer.Option("--tune", metavar="KEY", rich_help_panel=RUN_PANEL, show_default=False,
                     help="Tune this sweep axis (e.g. train.lr) within each group of the other axes, as compare "
                     "--tune chooses, and widen its grid where the best value sits at an edge (tune.max_widen, "
                     "tune.min, tune.max limit it; docs/tuning.md).")
    ] = None,
    halving: Annotated[
        bool, typer.Option("--halving", rich_help_panel=RUN_PANEL,
                           help="With --tune: successive halving first (every value to a fraction of the budget, "
                           "the best 1/eta go on; halving.eta, halving.min_fraction).")
    ] = False,
    extend: Annotated[
        bool, typer.Option("--extend", rich_help_panel=RUN_PANEL,
                           help="Train the completed runs of this sweep on to this config's larger train.steps, "
                           "each in its own folder from its last checkpoint (the same numbers as a run trained "
                           "straight to it; only train.steps may differ; not with schedule cosine).")
    ] = False,
) -> None:
    """Train every run of CONFIG's sweep (one run folder each), then print the comparison.

    Unfinished runs resume from their checkpoints; completed ones are skipped.
    """
    from lstmlab.config import ignored_keys, load_config, seed_sweep
    from lstmlab.run.packing import parse_pack

    pack_size = parse_pack(pack)
    sweep = [*(sweep or []), *seed_sweep(seeds, sweep or [], set_ or [])]
    cfg = load_config(config, set_ or [], sweep)
    if tune or halving:  # the flags win over the config's tune and halving sections
        cfg = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"key": tune or cfg.tune.key}),
                                     "halving": cfg.halving.model_copy(update={"enabled": halving or
                                                                               cfg.halving.enabled})})
    if cfg.tune.key or cfg.halving.enabled:
        from lstmlab.search import check

        check(cfg)  # bad input before anything trains
    console = _console()
    if cfg.sweep_points() >= 1000:  # each point is checked before any run starts: say so, it takes a while
        _console(stderr=True).print(f"checking the sweep's {cfg.sweep_points():,} points (each is validated before "
                                    "any run starts) ...", markup=False)
    for note in dict.fromkeys(note for point in cfg.runs() for note in ignored_keys(point)):
        _console(stderr=True).print(f"note: {note}", markup=False)
    if print_config:  # one YAML document per run: `yaml.safe_load_all` reads them back
        from lstmlab.run.sweep import print_configs

        print_configs(cfg, data_dir, sys.stdout.write, lambda line: _console(stderr=True).print(line, markup=False))
        return

    from lstmlab.files import make_folder
    from lstmlab.run.identity import check_experiment
    from lstmlab.run.options import UnitOptions
    from lstmlab.run.sweep import exit_code, run_sweep

    if extend and not restart:  # first: the continued runs then hold this config, which the check below reads
        _extend_runs(cfg, runs_dir, data_dir, console)
    check_experiment(cfg, runs_dir, allow_mixed=allow_mixed_configs, restart=restart)  # one config per folder

    if tensorboard is not None:  # the extra is installed and the folder writable, or nothing starts
        from lstmlab.run.tensorboard import summary_writer

        summary_writer()
        make_folder(tensorboard, "--tensorboard")
    make_folder(runs_dir / cfg.experiment, "--runs-dir")  # before any run: one message, not one per run
    if cfg.tune.key:
        return _train_search(cfg, runs_dir, data_dir, console, restart=restart, quiet=quiet, jobs=jobs,
                             pack=pack_size, executor=executor, executor_options=executor_opt or [],
                             argv=sys.argv, tensorboard=tensorboard)
    try:
        options = UnitOptions(runs_dir, data_dir, restart=restart, quiet=quiet, argv=sys.argv, tensorboard=tensorboard)
        outcomes = run_sweep(cfg, options, jobs=jobs, pack=pack_size, executor=executor,
                             executor_options=executor_opt or [], log=lambda line: console.print(line, markup=False))
    except KeyboardInterrupt:
        outcomes = None
    done = [o.path for o in outcomes or () if o.status in ("completed", "skipped") and o.path is not None]
    if done:
        from lstmlab.analysis.compare import compare_runs, render
        from lstmlab.run.reader import DEFAULT_BY

        swept = sorted((k for k in cfg.sweep if k != "train.seed"), key=lambda k: k not in DEFAULT_BY)
        console.print(render(compare_runs(done, by=tuple(swept) or DEFAULT_BY), "table"))
    code = 130 if outcomes is None else exit_code(outcomes)
    if code == 130:
        _console(stderr=True).print("interrupted: checkpoints saved; run the same command again to resume")
    if code:
        raise typer.Exit(code)


def _extend_runs(cfg, runs_dir: Path, data_dir: Path, console) -> None:
    """train --extend: make every completed run of a smaller train.steps an unfinished run of this config
    (lstmlab.run.extend), which the sweep then resumes; a schedule that depends on train.steps is refused."""
    from lstmlab.files import make_folder
    from lstmlab.run.extend import check_schedule, continue_shorter
    from lstmlab.run.sweep import distinct_points

    check_schedule(cfg, "--extend")
    if not (runs_dir / cfg.experiment).is_dir():
        return
    make_folder(runs_dir / cfg.experiment, "--runs-dir")  # the same checks as before a sweep writes there

    def log(line: str) -> None:
        console.print(line, markup=False)

    continued = continue_shorter(distinct_points(cfg, log), tuple(cfg.sweep), runs_dir, data_dir, log)
    log(f"--extend: {continued} completed run(s) go on to {cfg.train.steps:,} steps")


def _train_search(cfg, runs_dir: Path, data_dir: Path, console, **sweep_options) -> None:
    """train --tune KEY [--halving]: lstmlab.search drives run_sweep; then compare --tune on its runs."""
    from lstmlab.run.sweep import exit_code, sigterm_like_ctrl_c
    from lstmlab.search import search, sweep_trainer

    def log(line: str) -> None:
        console.print(line, markup=False)

    try:
        with sigterm_like_ctrl_c():  # between two sweeps of the search too, SIGTERM stops it as Ctrl-C does
            result = search(cfg, sweep_trainer(runs_dir, data_dir, log=log, **sweep_options), runs_dir, log=log)
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted: checkpoints saved; run the same command again to resume the search")
        raise typer.Exit(130) from None
    if result.paths:
        from lstmlab.analysis.compare import compare_runs, render
        from lstmlab.run.reader import DEFAULT_BY

        by = tuple(k for k in cfg.sweep if k not in (result.key, "train.seed")) or DEFAULT_BY
        console.print(render(compare_runs(result.paths, by=by, tune_keys=(result.key,)), "table"))
        if cfg.halving.enabled:
            console.print("note: the table reads the runs trained to the full budget only; the search's grid "
                          "also held the values halving stopped early (see its lines above)", markup=False)
    # a value that diverges fails its runs: the search reads that as a score, not as an error of the command
    code = exit_code([o for o in result.outcomes if o.status != "failed"])
    if code or any(g.ended == "no runs" for g in result.groups):
        raise typer.Exit(code or 1)


@app.command("generate-data", rich_help_panel="Experiments")
@user_errors
def generate_data(
    config: Annotated[Path | None, typer.Argument(help="Experiment config whose task to generate.",
                                                     show_default=False)] = None,
    task: Annotated[str | None, typer.Option("--task", help="Task name (its defaults; no config needed).",
                                                rich_help_panel=CONFIG_PANEL)] = None,
    set_: SetOption = None,
    data_dir: DataDir = Path("data"),
    force: Annotated[bool, typer.Option("--force", help="Regenerate even if the dataset exists.")] = False,
) -> None:
    """Write a task's dataset: splits, checksums and baselines in <data-dir>/<task>-<hash>/."""
    from lstmlab.config import apply_overrides, flag_origins, read_yaml, validate
    from lstmlab.errors import ConfigError
    from lstmlab.files import read_json
    from lstmlab.tasks.datasets import generate

    if (config is None) == (task is None):
        raise ConfigError("give either a CONFIG file or --task NAME (not both)")
    raw = read_yaml(config) if config is not None else {"task": {"name": task}}
    cfg = validate(apply_overrides(raw, set_ or []), source=str(config) if config else f"--task {task}",
                   origins=flag_origins(set_ or []))
    tasks = {p.task.model_dump_json(): p.task for p in cfg.runs()}  # a sweep over task keys: each dataset
    console = _console()
    for task_cfg in tasks.values():
        folder = generate(task_cfg, data_dir, force=force)
        meta = read_json(folder / "meta.json")
        sizes = ", ".join(f"{k} {v}" for k, v in meta["sizes"].items())
        baselines = ", ".join(f"{k} {v:.4g}" for k, v in meta["baselines"].items())
        console.print(f"{folder}: {sizes}; {meta['metric']} baselines: {baselines}")


@app.command(rich_help_panel="Analysis")
@user_errors
def compare(
    paths: Annotated[list[Path], typer.Argument(help="Run folders, or folders above them.", show_default=False)],
    by: Annotated[list[str] | None, typer.Option("--by", help="Config key(s) to group by. Default: model.layers.",
                                                    rich_help_panel=CONFIG_PANEL)] = None,
    format_: Annotated[str, typer.Option("--format", help="table | markdown | csv | json.",
                                         rich_help_panel=OUTPUT_PANEL)] = "table",
    tune: Annotated[list[str] | None, typer.Option("--tune", help="Config key to tune within each group "
                                                     "(repeatable): keep the runs of its value with the best mean "
                                                     "validation metric.", rich_help_panel=CONFIG_PANEL)] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write learning curves and final metrics to FILE "
                                                 "(needs the \\[plot] extra).", rich_help_panel=OUTPUT_PANEL)] = None,
    evidence: Annotated[str, typer.Option("--evidence", help="What each step's verdict rests on: auto (solve rates "
                                          "when at least 2 runs lie on each side of the solve threshold, else the "
                                          "means) | means | solve-rate.", rich_help_panel=CONFIG_PANEL)] = "auto",
    at_step: Annotated[int | None, typer.Option("--at-step", help="The verdict at a budget: compare each run's "
                                                "best validation metric up to step N (a step every run evaluated at) "
                                                "instead of its test metric at the end. Runs still training, or "
                                                "interrupted, count once they have reached step N.",
                                                rich_help_panel=CONFIG_PANEL)] = None,
    plot_over_training: Annotated[Path | None, typer.Option(
        "--plot-over-training", help="Write each step's difference with its 95% interval against training steps "
        "and sequences seen to FILE (needs the \\[plot] extra).", rich_help_panel=OUTPUT_PANEL)] = None,
) -> None:
    """Group runs by a config key across seeds: mean, spread, confidence intervals, and each step's effect."""
    from lstmlab.analysis.compare import FORMATS, compare_runs, render
    from lstmlab.errors import UserError
    from lstmlab.run.reader import DEFAULT_BY

    if format_ not in FORMATS:
        raise UserError(f"--format: unknown format {format_!r}; valid formats: {', '.join(FORMATS)}")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"no such path: {', '.join(missing)}")
    for image in (plot, plot_over_training):
        if image is not None:
            from lstmlab.analysis.compare.plot import check_plot_path

            check_plot_path(image)
    comparison = compare_runs(paths, by=tuple(by or DEFAULT_BY), tune_keys=tuple(tune or ()),
                              evidence=evidence, at_step=at_step)
    output = render(comparison, format_)
    if isinstance(output, str):
        sys.stdout.write(output if output.endswith("\n") else output + "\n")
    else:
        _console().print(output)
    if plot is not None:
        from lstmlab.analysis.compare.plot import plot_comparison

        plot_comparison(comparison, plot)
        _console(stderr=True).print(f"plot written to {plot}")
    if plot is not None or plot_over_training is not None:  # a run drawn without its curve is named
        for problem in dict.fromkeys(p for g in comparison.groups for r in g.runs if (p := r.curve_problem)):
            _console(stderr=True).print(f"warning: no curve drawn for this run: {problem}", markup=False)
    if plot_over_training is not None:
        from lstmlab.analysis.compare.plot import plot_over_training as draw_over_training

        draw_over_training(comparison, plot_over_training)
        _console(stderr=True).print(f"plot written to {plot_over_training}")


@app.command(rich_help_panel="Analysis")
@user_errors
def runs(
    paths: Annotated[list[Path] | None, typer.Argument(metavar="PATH", help="A runs folder, an experiment "
                                                       "folder or run folders. Default: runs.", show_default=False)
                     ] = None,
    format_: Annotated[str, typer.Option("--format", help="table | json (a list of objects, one per run).",
                                         rich_help_panel=OUTPUT_PANEL)] = "table",
) -> None:
    """List run folders, one line each by experiment: status, step reached, best validation and test metric.

    A run whose summary says running but whose lock no live process holds shows as stale (killed, or its
    machine went down): `lstmlab train` with its config resumes it. Nothing is written or locked.
    """
    from lstmlab.analysis.runs import FORMATS, list_runs, render
    from lstmlab.errors import UserError

    if format_ not in FORMATS:
        raise UserError(f"--format: unknown format {format_!r}; valid formats: {', '.join(FORMATS)}")
    sys.stdout.write(render(list_runs(paths or [Path("runs")]), format_) + "\n")


@app.command(rich_help_panel="Analysis")
@user_errors
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="A run folder, or folders above run folders.",
                                                show_default=False)],
    split: Annotated[str, typer.Option("--split", help="Split whose first sequences are inspected: train | val | "
                                       "test.", rich_help_panel=CONFIG_PANEL)] = "val",
    batch: Annotated[int, typer.Option("--batch", help="How many sequences of the split.",
                                       rich_help_panel=CONFIG_PANEL)] = 256,
    weights: Annotated[str, typer.Option("--weights", help="auto (a completed run's best weights, else its "
                                         "latest checkpoint) | best | latest.", rich_help_panel=CONFIG_PANEL)] = "auto",
    by: Annotated[list[str] | None, typer.Option("--by", help="Config key(s) to group a folder of runs by. "
                                                    "Default: model.layers.", rich_help_panel=CONFIG_PANEL)] = None,
    format_: Annotated[str, typer.Option("--format", help="table | json.", rich_help_panel=OUTPUT_PANEL)] = "table",
    plot: Annotated[Path | None, typer.Option("--plot", help="Write gradient norm against time step and gate "
                                                 "saturation to FILE (needs the \\[plot] extra).",
                                                 rich_help_panel=OUTPUT_PANEL)] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the runs' datasets are. Default: the data dir each "
                                                  "run was trained from (its env.json), else data.",
                                                  show_default=False, rich_help_panel=OUTPUT_PANEL)] = None,
) -> None:
    """Look inside trained runs: the gradient reaching each time step and layer, and gate saturation.

    A completed run is read at its best weights, any other at its latest checkpoint (--weights picks).
    Nothing is written to the run folders.
    """
    from lstmlab.analysis.inspect import inspect_run, inspect_runs
    from lstmlab.analysis.inspect.render import FORMATS, check_plot_path, render
    from lstmlab.analysis.inspect.render import plot as draw
    from lstmlab.errors import UserError
    from lstmlab.run.reader import DEFAULT_BY

    if format_ not in FORMATS:
        raise UserError(f"--format: unknown format {format_!r}; valid formats: {', '.join(FORMATS)}")
    if plot is not None:
        check_plot_path(plot)  # before the work, not after it
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"no such path: {', '.join(missing)}")
    log = _console(stderr=True).print
    if len(paths) == 1 and (paths[0] / "config.yaml").exists():
        result = inspect_run(paths[0], split=split, batch=batch, weights=weights, data_dir=data_dir, log=log)
    else:
        result = inspect_runs(paths, by=tuple(by or DEFAULT_BY), split=split, batch=batch,
                              weights=weights, data_dir=data_dir, log=log)
    output = render(result, format_)
    if isinstance(output, str):
        sys.stdout.write(output + "\n")
    else:
        _console().print(output)
    if plot is not None:
        draw(result, plot)
        log(f"plot written to {plot}")


@app.command(rich_help_panel="Analysis")
@user_errors
def sample(
    run: Annotated[Path, typer.Argument(help="A charlm run folder (runs/<experiment>/<run-name>).",
                                        show_default=False)],
    chars: Annotated[int, typer.Option("--chars", min=0, help="Characters to draw after the prime.")] = 500,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Softmax temperature: 1 samples the "
                                               "model's distribution, lower is more conservative, 0 always takes "
                                               "the most likely character.")] = 1.0,
    prime: Annotated[str, typer.Option("--prime", help="Text the model reads first.",
                                       show_default="a newline")] = "\n",
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the draws: the same seed gives the same "
                                                "text. Default: a fresh one.", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the run's dataset is. Default: the data dir the "
                                                  "run was trained from (its env.json), else data.",
                                                  show_default=False, rich_help_panel=OUTPUT_PANEL)] = None,
) -> None:
    """Print text written by a trained charlm run's best weights, to read what a depth has learned."""
    from lstmlab.analysis.sample import sample_text

    result = sample_text(run, chars=chars, temperature=temperature, prime=prime, seed=seed, data_dir=data_dir)
    err = _console(stderr=True)
    if result.unknown:
        err.print(f"note: the run's alphabet lacks {result.unknown!r} of --prime; the model reads them as <unk>",
                  markup=False)
    err.print(f"{run}: best weights (step {result.step}), {chars} characters at temperature {temperature:g}",
              markup=False)
    sys.stdout.write(result.text + ("" if result.text.endswith("\n") else "\n"))


export_app = typer.Typer(
    name="export", no_args_is_help=True, rich_markup_mode="rich",
    help="Send run folders where you already look: an MLflow tracking store, or TensorBoard event files.",
)
app.add_typer(export_app, rich_help_panel="Analysis")
ByOption = Annotated[list[str] | None, typer.Option("--by", help="Config key(s) that group runs (compare's "
                                                    "grouping). Default: model.layers.", rich_help_panel=CONFIG_PANEL)]


@export_app.command("mlflow")
@user_errors
def export_mlflow(
    paths: Annotated[list[Path], typer.Argument(help="Run folders, or folders above them.", show_default=False)],
    tracking_uri: Annotated[str, typer.Option("--tracking-uri", help="MLflow tracking store: a database URI "
                                              "(sqlite:///FILE.db, postgresql://...) or a server (http://...).")
                            ] = "sqlite:///mlflow.db",
    experiment: Annotated[str | None, typer.Option("--experiment", help="MLflow experiment for every run. "
                                                   "Default: each run's lstmlab experiment.",
                                                   show_default=False)] = None,
    by: ByOption = None,
) -> None:
    """One MLflow run per run folder: config as params, every metrics.csv row as metrics, tags, small files.

    Exporting again updates the same MLflow runs (new points only), never duplicates them.
    Needs the \\[mlflow] extra; to see the runs, the \\[mlflow-ui] extra (the full mlflow package) and
    `mlflow ui --backend-store-uri sqlite:///mlflow.db`.
    """
    from lstmlab.analysis.export.mlflow import export_mlflow as export
    from lstmlab.run.reader import DEFAULT_BY

    console = _console()
    done = export(paths, tracking_uri=tracking_uri, experiment=experiment, by=tuple(by or DEFAULT_BY))
    for item in done:
        console.print(f"{item.action} {item.experiment}/{item.folder.name} ({item.run_id}): "
                      f"{item.metrics} new metric points", markup=False)
    console.print(f"{len(done)} run(s) in {tracking_uri}", markup=False)


@export_app.command("tensorboard")
@user_errors
def export_tensorboard(
    paths: Annotated[list[Path], typer.Argument(help="Run folders, or folders above them.", show_default=False)],
    logdir: Annotated[Path, typer.Option("--logdir", help="TensorBoard log folder to write into.",
                                         show_default=False)],
    by: ByOption = None,
) -> None:
    """Event files per run (scalars, hparams), and per group of seeds its mean, min and max as runs of their own.

    Exporting again replaces what an earlier export wrote there.
    Needs the \\[tensorboard] extra; see them with `tensorboard --logdir DIR` (pip install tensorboard).
    """
    from lstmlab.analysis.export.tensorboard import export_tensorboard as export
    from lstmlab.run.reader import DEFAULT_BY

    done = export(paths, logdir, by=tuple(by or DEFAULT_BY))
    console = _console()
    console.print(f"{len(done.runs)} run(s) and {len(done.groups)} group(s) (mean, min, max) -> {done.logdir}",
                  markup=False)
    for path, reason in done.skipped:
        console.print(f"  not in a group: {path}: {reason}", markup=False)
    for warning in done.warnings:
        _console(stderr=True).print(warning, markup=False)


@app.command(rich_help_panel="Checks")
@user_errors
def verify(
    dtype: Annotated[list[str] | None, typer.Option("--dtype", help="float64 and/or float32 (default both).")] = None,
    device: Annotated[list[str] | None, typer.Option("--device", help="cpu, cuda (default every one present).")] = None,
) -> None:
    """Check the scratch LSTM against torch.nn.LSTM here: outputs, states and every gradient, per backend."""
    from lstmlab.checks.verify import all_passed, render
    from lstmlab.checks.verify import verify as run_verify

    rows = run_verify(devices=device or None, dtypes=tuple(dtype or ("float64", "float32")))
    _console().print(render(rows))
    raise typer.Exit(0 if all_passed(rows) else 1)


@app.command(rich_help_panel="Checks")
@user_errors
def bench(
    shape: Annotated[list[str] | None, typer.Option("--shape", metavar="T,B,I,H",
                     help="A shape to time (repeatable). Default: the study layers, then larger ones.")] = None,
    device: Annotated[list[str] | None, typer.Option("--device", help="cpu, cuda (default every one present).")] = None,
    dtype: Annotated[list[str] | None, typer.Option("--dtype", help="float32, bfloat16, float64.")] = None,
    impl: Annotated[list[str] | None, typer.Option("--impl", help="Implementations to time (default all).")] = None,
    mode: Annotated[list[str] | None, typer.Option("--mode", help="fwd and/or fwdbwd (default both).")] = None,
    reps: Annotated[int | None, typer.Option("--reps", min=1, help="Timed repetitions, median reported "
                                             "(default 7; with --study: rounds, default 1).")] = None,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls first.")] = 2,
    threads: Annotated[list[int] | None, typer.Option("--threads", min=1,
                       help="CPU threads (repeatable: each count in turn, in this process).")] = None,
    pack: Annotated[list[str] | None, typer.Option("--pack", metavar="K",
                    help="Time K members of each shape: the stacked layer (one call) vs K fused calls vs K nn.LSTM "
                         "calls (default 1). With --study: the packed variant's pack size, K or auto "
                         "(repeatable: each in turn; default auto).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small shapes, 3 repetitions: a smoke check.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    study: Annotated[Path | None, typer.Option("--study", metavar="CONFIG", rich_help_panel="Study",
                     help="Time CONFIG's whole study instead: packed, --pack 1 --jobs N, and model.type=lstm "
                     "--pack 1 --jobs N, interleaved; runs per minute each.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", rich_help_panel="Study",
                    help="With --study: override a config key.")] = None,
    sweep: Annotated[list[str] | None, typer.Option("--sweep", metavar="KEY=V1,V2", rich_help_panel="Study",
                     help="With --study: sweep a key over values.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, rich_help_panel="Study",
                                      help="With --study: processes of the unpacked variants.")] = 2,
    data_dir: DataDir = Path("data"),
) -> None:
    """Time the LSTM implementations (forward, forward+backward) against nn.LSTM in one process, or with
    --study a whole study, packed against one run per process."""
    if study is not None:
        from lstmlab.checks.study import bench_study, render_study
        from lstmlab.config import load_config
        from lstmlab.run.packing import parse_pack

        packs = [parse_pack(p) for p in pack or ["auto"]]
        cfg = load_config(study, set_ or [], sweep or [])
        rows = bench_study(cfg, data_dir=data_dir, jobs=jobs, packs=packs, reps=reps or 1,
                           log=lambda line: _console(stderr=True).print(line, markup=False))
        if json_:
            import json

            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        else:
            _console().print(render_study(rows))
        return
    from lstmlab.checks.bench import MODES, parse_shape, render_table, run_bench, to_json
    from lstmlab.errors import UserError

    if len(pack or ()) > 1 or not all(p.isdigit() and int(p) >= 1 for p in pack or ()):
        raise UserError(f"--pack: the layer benchmark takes one positive integer K, got {' '.join(pack or ())}")
    members = int(pack[0]) if pack else 1
    rows = run_bench(shapes=[parse_shape(s) for s in shape] if shape else None, devices=device or None,
                     dtypes=dtype or None, modes=tuple(mode or MODES), impls=impl or None, reps=reps or 7,
                     warmup=warmup, threads=threads or None, quick=quick, members=members)
    if json_:
        sys.stdout.write(to_json(rows) + "\n")
    else:
        _console().print(render_table(rows))


def main() -> None:  # pragma: no cover - console script entry
    app()
