"""Smoke tests of the benchmark: the rows' structure, the ratios, the JSON round trip. No wall time is asserted."""

from __future__ import annotations

import json

import pytest

from lstmlab.checks import bench

TINY = [(3, 2, 3, 4), (2, 1, 5, 3)]


@pytest.fixture(scope="module")
def rows():
    return bench.run_bench(shapes=TINY, devices=["cpu"], impls=["classic", "reference", "fused", "nn.LSTM"], reps=2,
                           warmup=1, threads=1)  # fmt: skip


def test_one_row_per_shape_mode_and_impl(rows):
    keys = {(r["T"], r["B"], r["I"], r["H"], r["mode"], r["impl"]) for r in rows}
    assert len(rows) == len(keys) == len(TINY) * 2 * 4
    for row in rows:
        assert row["status"] == "ok" and row["device"] == "cpu" and row["dtype"] == "float32"
        assert row["ms"] > 0 and len(row["times_ms"]) == 2 and row["threads"] == 1
        assert row["us_per_step"] == pytest.approx(row["ms"] * 1e3 / row["T"])
        shape = (row["T"], row["B"], row["I"], row["H"])
        assert row["gflops"] == pytest.approx(bench.gemm_flops(shape, row["mode"]) / (row["ms"] / 1e3) / 1e9)


def test_ratios_are_against_nn_lstm_of_the_same_shape_and_mode(rows):
    baseline = {(r["T"], r["B"], r["I"], r["H"], r["mode"]): r["ms"] for r in rows if r["impl"] == "nn.LSTM"}
    classic = {(r["T"], r["B"], r["I"], r["H"], r["mode"]): r["ms"] for r in rows if r["impl"] == "classic"}
    for row in rows:
        group = (row["T"], row["B"], row["I"], row["H"], row["mode"])
        assert row["vs_nn_lstm"] == pytest.approx(row["ms"] / baseline[group])
        assert row["vs_classic"] == pytest.approx(row["ms"] / classic[group])
    assert all(r["vs_nn_lstm"] == pytest.approx(1.0) for r in rows if r["impl"] == "nn.LSTM")


def test_json_round_trip_and_table(rows):
    assert json.loads(bench.to_json(rows)) == rows
    table = bench.render_table(rows)
    assert table.row_count == len(rows)


def test_flops_and_shapes():
    assert bench.gemm_flops((100, 64, 64, 256), "fwd") == 2 * 100 * 64 * 1024 * (64 + 256)
    assert bench.gemm_flops((100, 64, 64, 256), "fwdbwd") == 3 * bench.gemm_flops((100, 64, 64, 256), "fwd")
    assert bench.parse_shape("100, 64,64,256") == (100, 64, 64, 256)
    for bad in ("100,64,64", "a,b,c,d", "100,0,64,256"):
        with pytest.raises(ValueError, match="T,B,I,H"):
            bench.parse_shape(bad)


def test_unrunnable_impl_is_a_skipped_row_and_unknown_names_raise():
    rows = bench.run_bench(shapes=[(2, 1, 2, 2)], devices=["cpu"], modes=("fwd",), impls=["triton", "nn.LSTM"],
                           reps=1, warmup=0)  # fmt: skip
    triton_row = next(r for r in rows if r["impl"] == "triton")
    if not __import__("torch").cuda.is_available():
        assert triton_row["status"] == "skipped" and "CUDA" in triton_row["reason"] and triton_row["ms"] is None
    with pytest.raises(ValueError, match="unknown impl"):
        bench.run_bench(shapes=[(2, 1, 2, 2)], impls=["lstm9000"])


def test_pack_rows_time_the_same_work_three_ways():
    """--pack K: the stacked layer, K fused calls and K nn.LSTM calls, each group at each thread count in turn."""
    rows = bench.run_bench(shapes=[(3, 2, 3, 5)], devices=["cpu"], reps=2, warmup=1, threads=[1, 2], members=3)
    assert {(r["threads"], r["mode"], r["impl"]) for r in rows} == {
        (t, m, i) for t in (1, 2) for m in ("fwd", "fwdbwd") for i in bench.PACK_IMPLS
    }
    for row in rows:
        assert row["status"] == "ok" and row["members"] == 3 and len(row["times_ms"]) == 2
        shape = (row["T"], row["B"], row["I"], row["H"])
        assert row["gflops"] == pytest.approx(bench.gemm_flops(shape, row["mode"], 3) / (row["ms"] / 1e3) / 1e9)
        same = {r["impl"]: r["ms"] for r in rows if (r["threads"], r["mode"]) == (row["threads"], row["mode"])}
        assert row["vs_nn_lstm"] == pytest.approx(row["ms"] / same["nn.LSTM"])
        assert row["vs_fused"] == pytest.approx(row["ms"] / same["fused"])
        assert row["vs_classic"] is None
    assert bench.render_table(rows).row_count == len(rows)
    with pytest.raises(ValueError, match="unknown impl 'classic'"):
        bench.run_bench(shapes=[(2, 1, 2, 2)], impls=["classic"], members=2)


def test_pack_callables_compute_what_separate_calls_compute():
    """The three timed calls of a pack agree (float64): the stacked layer on stacked member weights is the members'
    own layers."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    modules = [nn.LSTM(3, 4).double() for _ in range(2)]
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    stacked, _ = bench._pack_callables("stacked", modules, x)
    totals = [bench._pack_callables(impl, modules, x)[0]().sum() for impl in ("fused", "nn.LSTM")]
    for total in totals:
        torch.testing.assert_close(stacked().sum(), total, rtol=1e-12, atol=0)


def test_study_shapes_lead_the_default_set():
    assert bench.DEFAULT_SHAPES[: len(bench.STUDY_SHAPES)] == bench.STUDY_SHAPES
    assert (30, 64, 2, 23) in bench.STUDY_SHAPES and (100, 32, 100, 100) in bench.STUDY_SHAPES


def test_bench_command_pack_and_threads_options():
    from typer.testing import CliRunner

    from lstmlab.cli import app

    result = CliRunner().invoke(app, ["bench", "--shape", "2,1,2,3", "--pack", "2", "--threads", "1", "--threads", "2",
                                      "--reps", "1", "--warmup", "0", "--mode", "fwd", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {(r["threads"], r["impl"], r["members"]) for r in rows} == {
        (t, i, 2) for t in (1, 2) for i in ("stacked", "fused", "nn.LSTM")
    }
