"""Turn run folders into a verdict: group runs by config keys across seeds, and weigh each step up in depth.

    compare_runs(paths, by=("model.layers",), tune_keys=(), *, evidence="auto", at_step=None) -> Comparison
    render(comparison, fmt)                                     -> str | rich  table | markdown | csv | json

One job per module:
    read.py      run folders -> one RunRecord per folder (every file read once; reasons for the unusable ones)
    analysis.py  records -> groups (summarised once), steps between neighbouring groups, verdicts in words
    tune.py      within a group, the --tune value with the best mean validation metric
    training.py  each step at every shared evaluation: the verdict over training (validation split)
    render.py    a Comparison as a table, Markdown, CSV or JSON (fields: docs/statistics.md)
The plot (lstmlab.analysis.compare.plot) draws a Comparison; the CLI calls it directly.

Runs that cannot be compared (unfinished, failed, another task, unreadable files) are listed with the
reason, never dropped silently. Run folders of format 1 (written before summary.json said its format:
lstmlab.run.folder) are read as far as their fields allow.
"""

from lstmlab.analysis.compare.analysis import (
    Comparison,
    Group,
    Skipped,
    Step,
    check_keys,
    compare_runs,
    fmt,
    fmt_signed,
    mixed_keys,
    step_label,
)
from lstmlab.analysis.compare.read import dotted, hashable, order
from lstmlab.analysis.compare.render import (
    FORMATS,
    comparison_warning,
    finite,
    header_line,
    json_object,
    pooling_warning,
    render,
)

__all__ = ["FORMATS", "Comparison", "Group", "Skipped", "Step", "check_keys", "compare_runs", "comparison_warning",
           "dotted", "finite", "fmt", "fmt_signed", "hashable", "header_line", "json_object", "mixed_keys", "order",
           "pooling_warning", "render", "step_label"]
