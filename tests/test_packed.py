"""PackedModel: member k of a pack computes exactly what member k's model computes alone (float64, CPU):
outputs, every parameter's gradient and the dropout masks, step after step, for any subset of members."""

from __future__ import annotations

import copy

import pytest
import torch

from lstmlab.config import ModelConfig
from lstmlab.models.packed import MemberRNG, PackedModel, stackable
from lstmlab.models.sequence import build_model
from lstmlab.tasks.base import TaskSpec

REAL_LAST = TaskSpec(input_kind="real", input_size=3, output_size=2, readout="last")
TOKENS_EVERY = TaskSpec(input_kind="tokens", input_size=7, output_size=7, readout="every")


def build_members(spec: TaskSpec, seeds, dropouts, **model) -> tuple[list, list[MemberRNG]]:
    """Each member under its own seed, as an unpacked run builds it; its RNG state right after."""
    members, rngs = [], []
    for seed, p in zip(seeds, dropouts, strict=True):
        torch.manual_seed(seed)
        cfg = ModelConfig(type="scratch-lstm", hidden_size=5, dropout=p, backend="reference", **model)
        members.append(build_model(cfg, spec).double())
        rngs.append(MemberRNG(torch.device("cpu")))
    return members, rngs


def batches(spec: TaskSpec, k: int, seed: int, batch=4, steps=6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if spec.input_kind == "tokens":
        return torch.randint(spec.input_size, (k, batch, steps), generator=g)
    return torch.randn(k, batch, steps, spec.input_size, generator=g, dtype=torch.float64)


def assert_member_equals_alone(packed, alone, rngs_alone, active, inputs, steps=3):
    """Run `steps` training forwards+backwards through the pack and through each member alone."""
    for step in range(steps):
        x = inputs + step if inputs.is_floating_point() else inputs
        packed.zero_grad()
        out = packed(x, active)
        (out.pow(2).sum(dim=tuple(range(1, out.dim()))) * torch.arange(1.0, len(active) + 1)).sum().backward()
        for j, k in enumerate(active):
            model = alone[k]
            model.zero_grad()
            torch.set_rng_state(rngs_alone[k])
            out_k = model(x[j])
            rngs_alone[k] = torch.get_rng_state()
            ((j + 1) * out_k.pow(2).sum()).backward()
            torch.testing.assert_close(out[j], out_k, rtol=1e-12, atol=1e-13)
            for (name, p_packed), p_alone in zip(packed.members[k].named_parameters(), model.parameters(),
                                                 strict=True):
                torch.testing.assert_close(p_packed.grad, p_alone.grad, rtol=1e-12, atol=1e-13, msg=name)


@pytest.mark.parametrize("spec,model", [(REAL_LAST, {"layers": 2}),
                                        (TOKENS_EVERY, {"layers": 3, "embedding_dim": 5, "tie_weights": True})])
def test_members_compute_what_they_compute_alone_with_their_own_dropout(spec, model):
    members, rngs = build_members(spec, seeds=[0, 1, 2], dropouts=[0.0, 0.3, 0.5], **model)
    alone = [copy.deepcopy(m) for m in members]
    rngs_alone = [r.cpu_state.clone() for r in rngs]
    packed = PackedModel(members, rngs).train()
    for m in alone:
        m.train()
    assert packed.stacked
    torch.manual_seed(99)  # the global state the pack runs under is not any member's
    assert_member_equals_alone(packed, alone, rngs_alone, [0, 1, 2], batches(spec, 3, seed=5))
    assert packed.backend == "reference"
    # a member frozen (failed, early-stopped) leaves the others' numbers unchanged
    assert_member_equals_alone(packed, alone, rngs_alone, [0, 2], batches(spec, 2, seed=6))
    assert_member_equals_alone(packed, alone, rngs_alone, [1], batches(spec, 1, seed=7))


def test_the_members_differ_and_dropout_masks_differ_between_members():
    members, rngs = build_members(REAL_LAST, seeds=[0, 0], dropouts=[0.5, 0.5], layers=2)
    rngs[1].cpu_state = torch.Generator().manual_seed(1).get_state()  # same weights, other mask stream
    packed = PackedModel(members, rngs).train()
    x = batches(REAL_LAST, 1, seed=3).expand(2, -1, -1, -1)
    out = packed(x)
    assert not torch.equal(out[0], out[1])
    packed.eval()  # no dropout: the same weights on the same batch give the same output
    out = packed(x)
    assert torch.equal(out[0], out[1])


def test_torch_nn_members_run_one_by_one_under_their_own_rng():
    members, rngs = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(build_model(ModelConfig(type="gru", layers=2, hidden_size=4, dropout=0.4), REAL_LAST).double())
        rngs.append(MemberRNG(torch.device("cpu")))
    alone = [copy.deepcopy(m) for m in members]
    rngs_alone = [r.cpu_state.clone() for r in rngs]
    packed = PackedModel(members, rngs).train()
    assert not packed.stacked
    assert_member_equals_alone(packed, alone, rngs_alone, [0, 1], batches(REAL_LAST, 2, seed=1), steps=2)


def test_stackable_needs_scratch_lstms_of_one_shape():
    a, _ = build_members(REAL_LAST, seeds=[0], dropouts=[0.0], layers=2)
    b, _ = build_members(REAL_LAST, seeds=[0], dropouts=[0.0], layers=1)
    assert stackable(a + a) and not stackable(a + b)
    gru = build_model(ModelConfig(type="gru", hidden_size=5), REAL_LAST)
    assert not stackable([gru])


def test_inputs_must_match_the_active_members():
    members, rngs = build_members(REAL_LAST, seeds=[0, 1], dropouts=[0.0, 0.0], layers=1)
    with pytest.raises(ValueError, match="2 members' batches for 1 active"):
        PackedModel(members, rngs)(batches(REAL_LAST, 2, seed=0), [0])
    with pytest.raises(ValueError, match="2 members but 1 RNG"):
        PackedModel(members, rngs[:1])
