"""SequenceModel: parameter counts against the closed forms, budgets, forget-gate bias, weight tying."""

from __future__ import annotations

import pytest
import torch

from lstmlab.config import ModelConfig
from lstmlab.models.sequence import build_model, count_parameters, parameter_count, resolve_hidden_size
from lstmlab.tasks.base import TaskSpec

GATES = {"scratch-lstm": 4, "lstm": 4, "gru": 3, "rnn": 1}
REAL = TaskSpec(input_kind="real", input_size=3, output_size=2, readout="last")
TOKENS = TaskSpec(input_kind="tokens", input_size=11, output_size=11, readout="every")


def closed_form(model_type: str, layers: int, hidden: int, spec: TaskSpec, embedding: int | None = None) -> int:
    """gates·(H·I + H·H + 2H) per layer (I = input size for layer 0, H above), + head H·C + C (+ embedding V·E)."""
    gates = GATES[model_type]
    first_input = (embedding or hidden) if spec.input_kind == "tokens" else spec.input_size
    count = 0
    for layer in range(layers):
        inputs = first_input if layer == 0 else hidden
        count += gates * (hidden * inputs + hidden * hidden + 2 * hidden)
    count += hidden * spec.output_size + spec.output_size
    if spec.input_kind == "tokens":
        count += spec.input_size * (embedding or hidden)
    return count


@pytest.mark.parametrize("model_type", list(GATES))
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("spec", [REAL, TOKENS], ids=["real", "tokens"])
def test_parameter_count_matches_closed_form(model_type, layers, spec):
    cfg = ModelConfig(type=model_type, layers=layers, hidden_size=13)
    assert count_parameters(build_model(cfg, spec)) == closed_form(model_type, layers, 13, spec)
    assert parameter_count(cfg, spec) == closed_form(model_type, layers, 13, spec)


ADDING = TaskSpec(input_kind="real", input_size=2, output_size=1, readout="last")


@pytest.mark.parametrize("model_type", list(GATES))
@pytest.mark.parametrize("spec, budget", [(ADDING, 20_000), (REAL, 50_000), (TOKENS, 200_000)])
def test_budget_lands_within_two_percent_at_every_depth(model_type, spec, budget):
    for layers in (1, 2, 3):
        cfg = resolve_hidden_size(ModelConfig(type=model_type, layers=layers, param_budget=budget), spec)
        count = closed_form(model_type, layers, cfg.hidden_size, spec)
        assert abs(count - budget) / budget < 0.02, (model_type, layers, cfg.hidden_size, count)


@pytest.mark.parametrize("model_type", list(GATES))
@pytest.mark.parametrize("budget", [700, 5_000, 20_000])
def test_budget_picks_the_closest_integer_size(model_type, budget):
    """Small budgets at depth cannot always land within 2% (one unit of H moves the count by ~2/H), but no
    other integer size is ever closer."""
    for layers in (1, 2, 3):
        cfg = resolve_hidden_size(ModelConfig(type=model_type, layers=layers, param_budget=budget), REAL)
        count = closed_form(model_type, layers, cfg.hidden_size, REAL)
        for other in (cfg.hidden_size - 1, cfg.hidden_size + 1):
            assert abs(closed_form(model_type, layers, other, REAL) - budget) >= abs(count - budget)


def test_forget_bias_is_applied_the_same_to_scratch_and_torch():
    for model_type in ("scratch-lstm", "lstm"):
        model = build_model(ModelConfig(type=model_type, layers=2, hidden_size=5, forget_bias=1.0), REAL)
        for layer in range(2):
            b_ih = getattr(model.core, f"bias_ih_l{layer}")
            b_hh = getattr(model.core, f"bias_hh_l{layer}")
            torch.testing.assert_close((b_ih + b_hh)[5:10], torch.ones(5))


def test_scratch_and_torch_lstm_models_agree_with_the_same_weights():
    torch.manual_seed(0)
    cfg = ModelConfig(type="lstm", layers=2, hidden_size=6)
    reference = build_model(cfg, REAL).double()
    scratch = build_model(cfg.model_copy(update={"type": "scratch-lstm"}), REAL).double()
    scratch.load_state_dict(reference.state_dict())
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    torch.testing.assert_close(scratch(x), reference(x), atol=1e-12, rtol=0)


def test_tied_weights_share_one_matrix_and_count_once():
    cfg = ModelConfig(type="lstm", hidden_size=16, tie_weights=True)
    model = build_model(cfg, TOKENS)
    assert model.head.weight is model.encoder.weight
    assert count_parameters(model) == closed_form("lstm", 1, 16, TOKENS) - 11 * 16


def test_tie_weights_needs_matching_sizes():
    with pytest.raises(ValueError, match="embedding_dim equal to model.hidden_size"):
        build_model(ModelConfig(type="lstm", hidden_size=16, embedding_dim=8, tie_weights=True), TOKENS)
    with pytest.raises(ValueError, match="token task"):
        build_model(ModelConfig(type="lstm", hidden_size=16, tie_weights=True), REAL)


def test_readout_shapes():
    x_real = torch.randn(2, 7, 3)
    assert build_model(ModelConfig(type="gru", hidden_size=4), REAL)(x_real).shape == (2, 2)
    x_tokens = torch.randint(11, (2, 7))
    assert build_model(ModelConfig(type="rnn", hidden_size=4), TOKENS)(x_tokens).shape == (2, 7, 11)
