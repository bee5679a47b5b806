"""How `lstmlab inspect` shows its numbers: a table, JSON, and a picture.

    render(result, "table" | "json")   result: one run's object, or the grouped object of a folder of runs
    plot(result, path)                 top row: gradient norm against time step (log scale), the input and
                                       each layer, groups overlaid; bottom row: the forget gate's (GRU: the
                                       update gate's) distribution, then each layer's gate saturation

matplotlib comes from the [plot] extra and is imported only when a plot is asked for; the figure is drawn
without pyplot (no display, no global state).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lstmlab.analysis.compare import finite, fmt
from lstmlab.analysis.compare.plot import check_plot_path
from lstmlab.errors import UserError

FORMATS = ("table", "json")
GATE_ORDER = ("i", "f", "g", "o", "r", "z", "n")


def render(result: dict[str, Any], fmt_name: str):
    """A str for json; a rich renderable for table."""
    if fmt_name == "json":
        return json.dumps(finite(result), indent=2, ensure_ascii=False)
    if fmt_name == "table":
        return render_table(result)
    raise UserError(f"--format: unknown format {fmt_name!r}; valid formats: {', '.join(FORMATS)}")


# -- table ----------------------------------------------------------------------------------------------


def render_table(result: dict[str, Any]):
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    grouped = "groups" in result
    runs = [run for group in result["groups"] for run in group["runs"]] if grouped else [result]
    gates = [name for name in GATE_ORDER if any(name in layer["gates"] for run in runs for layer in run["layers"])]
    by = result["by"] if grouped else []
    columns = [*(k.split(".")[-1] for k in by), *(["run"] if grouped else []), "layer",
               "δh_1/δh_T", "δc_1/δc_T", "δx_1/δx_T", *gates]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i < len(by) + grouped + 1 else "right", no_wrap=True)

    def add_rows(obj: dict, lead: list[str], style: str | None = None) -> None:
        for layer in obj["layers"]:
            row = [*lead, str(layer["layer"]), _ratio(layer["grad_h_first_to_last"]),
                   _ratio(layer["grad_c_first_to_last"]),
                   _ratio(obj.get("grad_x_first_to_last")) if layer["layer"] == 0 else ""]
            row += [_gate(layer["gates"].get(g)) for g in gates]
            table.add_row(*row, style=style)

    parts: list[Any] = []
    if grouped:
        sizes = sorted({run["batch"] for run in runs}) or [result["batch"]]
        parts.append(Text(f"{len(runs)} run(s) in {len(result['groups'])} group(s) by {', '.join(by)}; "
                          f"{result['split']} split, first {'/'.join(map(str, sizes))} sequences", style="bold"))
        for group in result["groups"]:
            key = [str(group["key"][k]) for k in by]
            for run in group["runs"]:
                add_rows(run, [*key, run["run"]])
            if group["n"] > 1:
                add_rows(group, [*key, f"geometric mean of {group['n']}"], style="bold")
        parts.append(table)
        parts += [Text(f"  {run['run']}: {describe_weights(run)}", style="dim") for run in runs]
    else:
        add_rows(result, [])
        parts += [Text(headline(result), style="bold"), table]
    parts.append(Text("δh_1/δh_T: ‖dL/dh_t‖ at the first step over the last; dL/dh_t through every path (head, layer "
                      "above, next step), ‖·‖ the mean over sequences of their L2 norms. Far below 1: little "
                      "gradient reaches the start. Gate columns: mean (saturated: σ < 0.05 or > 0.95 for i, f, o, "
                      "r, z; |tanh| > 0.95 for g, n).",
                      style="dim"))
    for group in result.get("groups", []):
        if group.get("note"):
            where = ", ".join(f"{k}={v}" for k, v in group["key"].items())
            parts.append(Text(f"warning: group {where}: {group['note']}", style="yellow"))
    if grouped and result["skipped"]:
        parts.append(Text(f"skipped {len(result['skipped'])} run(s):", style="yellow"))
        parts += [Text(f"  {s['path']}: {s['reason']}") for s in result["skipped"]]
    return Group(*parts)


def headline(run: dict[str, Any]) -> str:
    return (f"{run['run']}: {run['model_type']}, {run['num_layers']} layer(s) of {run['hidden_size']}, "
            f"{describe_weights(run)}; {run['split']} split, first {run['batch']} sequences, T = {run['seq_len']}; "
            f"loss {fmt(run['loss'])}")


def describe_weights(run: dict[str, Any]) -> str:
    w = run["weights"]
    status = w["status"] or "without a summary"
    if w["source"] == "best":
        return f"best weights (from step {w['step']}; run {status} at step {w['checkpoint_step']})"
    return f"latest checkpoint (step {w['step']}; run {status})"


def _ratio(value: float | None) -> str:
    return "—" if value is None else fmt(value, 3)


def _gate(stats: dict | None) -> str:
    if stats is None:
        return ""
    saturated = stats["saturated"]
    share = "0%" if saturated == 0 else "<1%" if saturated < 0.01 else f"{saturated:.0%}"
    return f"{stats['mean']:.2f} ({share})"


# -- plot -----------------------------------------------------------------------------------------------


def plot(result: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    check_plot_path(path)
    from matplotlib.figure import Figure

    series = _series(result)
    if not series:
        raise UserError(f"--plot {path}: no inspected runs to plot")
    n_layers = max(len(obj["layers"]) for _, obj, _ in series)
    figure = Figure(figsize=(3.6 * (n_layers + 1), 7), layout="constrained")
    axes = figure.subplots(2, n_layers + 1, squeeze=False)
    colors = [f"C{i % 10}" for i in range(len(series))]

    for (label, obj, members), color in zip(series, colors, strict=True):
        _curve(axes[0][0], obj.get("grad_x"), [m["grad_x"] for m in members], color, label)
        for layer in obj["layers"]:
            ax = axes[0][layer["layer"] + 1]
            index = layer["layer"]
            others = [m["layers"][index] for m in members if len(m["layers"]) > index]
            _curve(ax, layer["grad_h"], [o["grad_h"] for o in others], color, label)
            if layer.get("grad_c") is not None:
                _curve(ax, layer["grad_c"], [o["grad_c"] for o in others], color, None, linestyle="--")
    axes[0][0].set_title("‖∂L/∂x_t‖ at the input")
    for index in range(n_layers):
        axes[0][index + 1].set_title(f"layer {index}: ‖∂L/∂h_t‖ —, ‖∂L/∂c_t‖ - -")
    for ax in axes[0]:
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("gradient norm (mean over sequences)")
    axes[0][0].legend(fontsize="small")

    _distributions(axes[1][0], series, colors)
    for index in range(n_layers):
        _saturation(axes[1][index + 1], series, colors, index)
    figure.suptitle(_title(result))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _series(result: dict[str, Any]) -> list[tuple[str, dict, list[dict]]]:
    """(label, curves to draw thick, runs to draw thin) per group; a single run is its own group."""
    if "groups" not in result:
        return [(result["run"], result, [])]
    by = result["by"]
    series = []
    for group in result["groups"]:
        if by == ["model.layers"]:
            layers = group["key"]["model.layers"]
            label = f"{layers} layer{'s' if layers != 1 else ''}"
        else:
            label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in group["key"].items())
        label += f" (n={group['n']})"
        if group["layers"]:
            series.append((label, group, group["runs"] if group["n"] > 1 else []))
    return series


def _curve(ax, values, members, color, label, linestyle="-") -> None:
    if values is None:
        return
    steps = range(1, len(values) + 1)
    for member in members:
        if member is not None:
            ax.plot(steps, member, color=color, alpha=0.25, linewidth=0.8, linestyle=linestyle)
    ax.plot(steps, values, color=color, linewidth=1.8, linestyle=linestyle, label=label)


def _distributions(ax, series, colors) -> None:
    """The forget gate f (GRU: the update gate z, the share of h_{t-1} kept) per layer: histogram lines."""
    styles = ["-", "--", ":", "-."]
    drawn = set()
    for (label, obj, _), color in zip(series, colors, strict=True):
        for layer in obj["layers"]:
            gate = "f" if "f" in layer["gates"] else "z" if "z" in layer["gates"] else None
            if gate is None:
                continue
            drawn.add(gate)
            hist = layer["gates"][gate]["histogram"]
            centres = [(a + b) / 2 for a, b in zip(hist["edges"], hist["edges"][1:], strict=False)]
            ax.plot(centres, hist["fraction"], color=color, linestyle=styles[layer["layer"] % len(styles)],
                    label=f"{label}, layer {layer['layer']}")
    if not drawn:
        ax.text(0.5, 0.5, "no forget or update gate (rnn)", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    ax.set_title(f"{' / '.join(sorted(drawn))} gate: distribution (line style = layer)")
    ax.set_xlabel("gate value")
    ax.set_ylabel("fraction of steps × sequences × units")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")


def _saturation(ax, series, colors, index: int) -> None:
    names = [g for g in GATE_ORDER if any(index < len(o["layers"]) and g in o["layers"][index]["gates"]
                                          for _, o, _ in series)]
    if not names:
        ax.set_axis_off()
        return
    width, highest = 0.8 / len(series), 0.0
    for k, ((label, obj, _), color) in enumerate(zip(series, colors, strict=True)):
        if index >= len(obj["layers"]):
            continue
        gates = obj["layers"][index]["gates"]
        xs = [j + (k - (len(series) - 1) / 2) * width for j in range(len(names))]
        heights = [gates[g]["saturated"] if g in gates else 0.0 for g in names]
        ax.bar(xs, heights, width=width, color=color, label=label)
        highest = max(highest, *heights)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, min(1.0, max(0.05, 1.2 * highest)))  # a few percent saturated still shows
    ax.set_title(f"layer {index}: saturated fraction per gate")
    ax.grid(alpha=0.3, axis="y")


def _title(result: dict[str, Any]) -> str:
    if "groups" in result:
        runs = [run for group in result["groups"] for run in group["runs"]]
        task = runs[0]["task"] if runs else "?"
        return f"{task}: gradient flow and gates by {', '.join(result['by'])} ({result['split']} split)"
    return f"{result['task']}: {headline(result)}"
