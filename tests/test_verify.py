"""lstmlab.checks.verify: the reference backend passes, and broken backends are caught and reported."""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Callable

import pytest
import torch
from rich.console import Console
from torch import Tensor

from lstmlab import kernels
from lstmlab.checks.verify import Row, all_passed, render, verify
from lstmlab.kernels import reference


def text(rows: list[Row]) -> str:
    console = Console(file=io.StringIO(), width=240)
    console.print(render(rows))
    return console.file.getvalue()


def install_as_fused(monkeypatch: pytest.MonkeyPatch, layer: Callable) -> None:
    """Put `layer` into the registry under the name "fused", as a real backend module would be."""
    module = types.ModuleType("lstmlab_test_broken_backend")
    module.lstm_layer = layer
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(kernels.BACKENDS, "fused", f"{module.__name__}:lstm_layer")


def test_reference_backend_passes_on_cpu() -> None:
    rows = verify(devices=["cpu"], backends=["reference"])
    assert [(r.backend, r.device, r.dtype) for r in rows] == [
        ("reference", "cpu", "float64"),
        ("reference", "cpu", "float32"),
    ]
    for row in rows:
        assert row.passed, (row.dtype, row.failures, row.error)
        names = {"output", "h_n", "c_n", "grad input", "grad h0", "grad c0"}
        names |= {f"grad {kind}_{part}_l{k}" for kind in ("weight", "bias") for part in ("ih", "hh") for k in (0, 1)}
        assert set(row.diffs) == names
    assert rows[0].largest("") < 1e-13  # float64: rounding only, far below the tolerance
    assert all_passed(rows)
    assert "PASS: all 2 checks agree" in text(rows)


def test_default_backends_are_those_that_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(kernels.BACKENDS, "fused", "lstmlab_no_such_module:lstm_layer")
    rows = verify(devices=["cpu"], dtypes=("float64",))
    assert [r.backend for r in rows] == ["reference"]  # triton needs cuda, fused does not import


def test_output_off_by_1e8_fails_in_float64_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def off_by_a_little(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        y, h, c = reference.lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        return y + 1e-8, h, c

    install_as_fused(monkeypatch, off_by_a_little)
    float64, float32 = verify(devices=["cpu"], backends=["fused"])
    assert not float64.passed
    assert "output" in float64.failures
    assert float32.passed  # 1e-8 is below float32's tolerance: the tolerance is per dtype
    assert not all_passed([float64, float32])
    rendered = text([float64, float32])
    assert "FAIL: 1 of 2 checks failed" in rendered
    assert "FAIL output" in rendered or "FAIL grad" in rendered


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, backward off by one part in a million: a subtly wrong hand-written backward."""

    @staticmethod
    def forward(ctx, y: Tensor) -> Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad * (1 + 1e-6)


def test_wrong_backward_with_right_forward_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        y, h, c = reference.lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        return _ScaleGradient.apply(y), h, c

    install_as_fused(monkeypatch, wrong_backward)
    (row,) = verify(devices=["cpu"], dtypes=("float64",), backends=["fused"])
    assert not row.passed
    assert row.diffs["output"] <= row.limits["output"]  # the forward is right ...
    assert {"grad input", "grad weight_ih_l0", "grad h0"} <= set(row.failures)  # ... the gradients are not


def test_backend_that_raises_is_a_failed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def crashes(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        raise RuntimeError("kernel launch failed")

    install_as_fused(monkeypatch, crashes)
    (row,) = verify(devices=["cpu"], dtypes=("float32",), backends=["fused"])
    assert not row.passed
    assert row.error == "RuntimeError: kernel launch failed"
    assert "kernel launch failed" in text([row])


def test_wrong_shape_is_a_failed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def last_step_only(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        y, h, c = reference.lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        return y[-1:], h, c  # (1, B, H): would broadcast silently against (T, B, H) in a careless diff

    install_as_fused(monkeypatch, last_step_only)
    (row,) = verify(devices=["cpu"], dtypes=("float64",), backends=["fused"])
    assert not row.passed
    assert "output has shape [1, 3, 7], expected [12, 3, 7]" in row.error


def test_bad_arguments_and_empty_results() -> None:
    with pytest.raises(ValueError, match="unknown LSTM backend 'cudnn'; valid backends: reference, fused, triton"):
        verify(backends=["cudnn"])
    with pytest.raises(ValueError, match="unsupported dtype 'float16'.*valid dtypes: float64, float32"):
        verify(dtypes=("float16",))
    rows = verify(devices=["cpu"], backends=["triton"])  # triton cannot run on cpu: nothing checked
    assert rows == [] and not all_passed(rows)
    assert "nothing was checked" in text(rows)
