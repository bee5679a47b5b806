"""What the exporters and live logging log from metrics.csv, stated once for their tests: each quantity once,
where it means something."""

from __future__ import annotations

# what describes the training at a step rather than a split: logged once, under train/ (never val/lr, test/elapsed_s)
PROGRESS_COLUMNS = ("epoch", "lr", "grad_norm", "elapsed_s", "seq_per_s")


def expected_tags(rows) -> set[str]:
    """<split>/<column> for every numeric metrics.csv cell, but the progress columns under train/ only."""
    return {f"{r['split']}/{c}" for r in rows for c, v in r.items()
            if c not in ("step", "split") and isinstance(v, (int, float))
            and (r["split"] == "train" or c not in PROGRESS_COLUMNS)}


def assert_each_quantity_once(tags) -> None:
    assert {"val/mse", "val/loss", "train/loss", "test/mse", "train/lr", "train/grad_norm", "train/elapsed_s",
            "train/seq_per_s"} <= set(tags)
    assert not [t for t in tags if t.split("/", 1)[0] != "train" and t.split("/", 1)[1] in PROGRESS_COLUMNS], tags
