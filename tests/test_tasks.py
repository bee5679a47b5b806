"""Each task: its arrays have the shapes it promises, its baselines match their analytic values, its
scoring counts what its docstring says."""

from __future__ import annotations

import math
import sys
import typing

import numpy as np
import pytest
import torch
from conftest import SYNTHETIC_TASKS

from lstmlab.errors import DataError
from lstmlab.tasks import SPLITS, TASKS, get_task_class
from lstmlab.tasks.charlm import decode, encode
from lstmlab.tasks.embedded_reber import ID, SYMBOLS, accepts, legal_successors

SMALL = {"n_train": 64, "n_val": 16, "n_test": 32}
BIG = -1e4  # a logit that softmax turns into probability 0 (exactly, in float32)


def make(name: str, **keys):
    cls = get_task_class(name)
    task = cls(cls.Config(**keys))
    splits, info = task.generate()
    return task, splits, info


def as_batch(split: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in split.items()}


def mean_of(scores: dict[str, tuple], key: str) -> float:
    total, n = scores[key]  # numbers or device scalars
    return float(total) / float(n)


# -- every task ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SYNTHETIC_TASKS)
def test_config_declares_its_name_and_documents_every_key(name):
    cls = TASKS[name]
    assert cls.name == name
    assert typing.get_args(cls.Config.model_fields["name"].annotation) == (name,)
    assert cls.Config().name == name
    for key, field in cls.Config.model_fields.items():
        assert key == "name" or field.description, f"{name}: task.{key} has no description"
    doc = sys.modules[cls.__module__].__doc__
    assert "aseline" in doc and "Solved" in doc, "the docstring states the baseline and when a run has solved it"


@pytest.mark.parametrize("name", SYNTHETIC_TASKS)
def test_arrays_fit_the_spec(name):
    task, splits, info = make(name, **SMALL)
    spec = task.spec(info)
    for split in SPLITS:
        arrays = splits[split]
        inputs, targets = arrays["inputs"], arrays["targets"]
        assert len(inputs) == getattr(task.cfg, f"n_{split}")
        assert all(len(a) == len(inputs) for a in arrays.values()), "every array is indexed by the same rows"
        if spec.input_kind == "tokens":
            assert inputs.dtype == np.int64 and inputs.ndim == 2
            assert 0 <= inputs.min() and inputs.max() < spec.input_size
        else:
            assert inputs.dtype == np.float32 and inputs.shape[2] == spec.input_size
        if task.loss_kind == "cross_entropy":
            assert targets.dtype == np.int64 and 0 <= targets.min() and targets.max() < spec.output_size
            assert targets.shape == (inputs.shape[:2] if spec.readout == "every" else inputs.shape[:1])
        else:
            assert targets.dtype == np.float32 and targets.shape == (len(inputs), spec.output_size)


@pytest.mark.parametrize("name", SYNTHETIC_TASKS)
def test_solve_threshold_is_better_than_the_trivial_baseline(name):
    task, splits, info = make(name, **SMALL)
    baselines = task.baselines(splits, info)
    threshold = task.solve_threshold(baselines)
    assert "trivial" in baselines
    if task.higher_is_better:
        assert baselines["trivial"] < threshold <= 1.0
    else:
        assert 0.0 < threshold < baselines["trivial"]


@pytest.mark.parametrize("name", SYNTHETIC_TASKS)
def test_score_and_loss_run_on_a_batch(name):
    task, splits, info = make(name, **SMALL)
    spec = task.spec(info)
    batch = as_batch({k: v[:8] for k, v in splits["train"].items()})
    T = batch["inputs"].shape[1]
    shape = (8, spec.output_size) if spec.readout == "last" else (8, T, spec.output_size)
    output = torch.randn(shape, requires_grad=True)
    loss = task.loss(output, batch)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and output.grad is not None
    scores = task.score(output.detach(), batch)
    assert "loss" in scores and task.metric in scores
    assert math.isclose(mean_of(scores, "loss"), loss.item(), rel_tol=1e-4)


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError, match="copy.*embedded-reber"):
        get_task_class("nope")


# -- adding ----------------------------------------------------------------------------------------
def test_adding_constant_one_scores_one_sixth():
    task, splits, _ = make("adding", n_train=16, n_val=16)  # default n_test = 1000
    batch = as_batch(splits["test"])
    assert mean_of(task.score(torch.ones_like(batch["targets"]), batch), "mse") == pytest.approx(1 / 6, abs=0.01)


# -- copy ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seq_len", [5, 50, 100])
def test_copy_memoryless_predictor_scores_the_baseline(seq_len):
    task, splits, info = make("copy", seq_len=seq_len, **SMALL)
    K, A = 10, 8
    batch = as_batch(splits["test"])
    n, length = batch["targets"].shape
    assert length == seq_len + 2 * K
    # blank with certainty before the recall window, uniform over the alphabet inside it
    logits = torch.full((n, length, A + 2), BIG)
    logits[:, : seq_len + K, 0] = 0.0
    logits[:, seq_len + K :, 1 : A + 1] = 0.0
    expected = 10 * math.log(8) / (seq_len + 20)
    assert mean_of(task.score(logits, batch), "cross_entropy") == pytest.approx(expected, rel=1e-5)
    assert task.baselines(splits, info)["trivial"] == pytest.approx(expected, rel=1e-12)


def test_copy_layout_and_recall_accuracy():
    task, splits, _ = make("copy", seq_len=7, **SMALL)
    inputs, targets = splits["train"]["inputs"], splits["train"]["targets"]
    K, T = 10, 7
    assert ((1 <= inputs[:, :K]) & (inputs[:, :K] <= 8)).all()
    assert (inputs[:, K : T + K - 1] == 0).all() and (inputs[:, T + K - 1] == 9).all()
    assert (inputs[:, T + K :] == 0).all()
    assert (targets[:, : T + K] == 0).all() and (targets[:, T + K :] == inputs[:, :K]).all()
    batch = as_batch(splits["train"])
    oracle = torch.nn.functional.one_hot(batch["targets"], 10).float() * 50
    scores = task.score(oracle, batch)
    assert mean_of(scores, "recall_accuracy") == 1.0 and mean_of(scores, "cross_entropy") < 1e-6


# -- temporal order --------------------------------------------------------------------------------
@pytest.mark.parametrize("variant,seq_len", [(2, 100), (3, 100), (2, 40)])
def test_temporal_order_classes_are_balanced_and_markers_encode_them(variant, seq_len):
    n_classes = 2**variant
    task, splits, info = make("temporal-order", variant=variant, seq_len=seq_len, n_train=4000, n_val=8, n_test=8)
    assert task.baselines(splits, info)["trivial"] == 1 / n_classes
    inputs, classes = splits["train"]["inputs"], splits["train"]["targets"]
    counts = np.bincount(classes, minlength=n_classes)
    expected = len(classes) / n_classes
    assert np.all(np.abs(counts - expected) < 4 * math.sqrt(expected)), counts  # within 4 sigma
    T = round(1.1 * seq_len)
    assert inputs.shape[1] == T and (inputs[:, -1] == 2).all()  # every sequence ends with the trigger B
    for row, label in zip(inputs[:200], classes[:200], strict=True):
        start = int(np.argmax(row != 0))
        assert (row[:start] == 0).all() and row[start] == 1 and seq_len <= T - start <= T  # pad, E, length
        positions = np.flatnonzero(row >= 7)  # X = 7, Y = 8
        assert len(positions) == variant
        for (lo, hi), pos in zip(info["windows"], positions - start, strict=True):
            assert lo <= pos <= hi
        bits = "".join("1" if row[p] == 8 else "0" for p in positions)
        assert int(bits, 2) == label


def test_temporal_order_windows_follow_the_paper():
    assert make("temporal-order", **SMALL)[0].windows() == [(9, 19), (49, 59)]
    assert make("temporal-order", variant=3, **SMALL)[0].windows() == [(9, 19), (32, 42), (65, 75)]


# -- embedded Reber --------------------------------------------------------------------------------
def strings_of(split: dict[str, np.ndarray]) -> list[str]:
    out = []
    for inputs, targets, mask in zip(split["inputs"], split["targets"], split["mask"], strict=True):
        steps = int(mask.sum())
        out.append("".join(SYMBOLS[i] for i in inputs[:steps]) + SYMBOLS[targets[steps - 1]])
    return out


def test_reber_recogniser():
    assert accepts("BTBTSSXXTVVETE") and accepts("BPBPVVEPE") and accepts("BTBTXSETE") and accepts("BTBPVPXVVETE")
    for bad in ["BTBTSSXXTVVEPE", "BTBTSXETE", "BTBPVVETEE", "TBPVVETE", "BTBPVVET", "BXBPVVEXE", "BTBPTSETE"]:
        assert not accepts(bad), bad


def test_reber_strings_are_grammatical_and_repeat_their_first_choice():
    task, splits, info = make("embedded-reber", n_train=2000, n_val=8, n_test=8)
    split = splits["train"]
    strings = strings_of(split)
    assert all(accepts(s) for s in strings)
    assert all(s[-2] == s[1] for s in strings)
    share_t = np.mean([s[1] == "T" for s in strings])
    assert abs(share_t - 0.5) < 4 * math.sqrt(0.25 / len(strings))
    assert max(len(s) for s in strings) <= task.cfg.seq_len
    for i in range(50):  # the stored legal sets are the recogniser's
        legal = legal_successors(strings[i])
        for t in range(len(strings[i]) - 1):
            assert set(np.flatnonzero(split["legal"][i, t])) == {ID[s] for s in legal[t]}
        assert split["targets"][i, split["tp_pos"][i]] == ID[strings[i][1]]


def test_reber_scores_ignore_masked_steps_and_count_what_they_say():
    task, splits, info = make("embedded-reber", **SMALL)
    batch = as_batch(splits["test"])
    legal, mask, tp_pos = batch["legal"], batch["mask"], batch["tp_pos"]
    rows = torch.arange(len(tp_pos))
    # knows the grammar, no memory: equal logits on every legal successor; at the second T/P always says T
    grammar = torch.where(legal, 0.0, BIG)
    grammar[rows, tp_pos] = BIG
    grammar[rows, tp_pos, ID["T"]] = 0.0
    scores = task.score(grammar, batch)
    share_t = (batch["targets"][rows, tp_pos] == ID["T"]).float().mean().item()
    assert mean_of(scores, "tp_accuracy") == pytest.approx(share_t)
    assert mean_of(scores, "strings_correct") == pytest.approx(share_t)
    assert task.baselines(splits, info) == {"trivial": 0.5, "majority": pytest.approx(max(share_t, 1 - share_t))}
    oracle = torch.where(legal, 0.0, BIG)
    assert mean_of(task.score(oracle, batch), "strings_correct") == 1.0
    assert mean_of(task.score(oracle, batch), "tp_accuracy") == 1.0
    noisy = grammar.clone()
    noisy[~mask] = torch.randn_like(noisy[~mask]) * 100  # garbage where nothing is scored
    assert task.score(noisy, batch) == scores
    assert task.loss(noisy, batch).item() == pytest.approx(task.loss(grammar, batch).item())


# -- charlm ----------------------------------------------------------------------------------------
def test_charlm_default_reads_the_standard_library():
    task, splits, info = make("charlm", seq_len=20, **SMALL)
    assert info["source"] == "stdlib" and info["python"] and info["first_file"].endswith(".py")
    V = len(info["vocab"])
    assert info["vocab"][0] == "<unk>" and task.spec(info).input_size == V
    baselines = task.baselines(splits, info)
    assert baselines["trivial"] == math.log2(V) and 0 < baselines["unigram"] < baselines["trivial"]


def test_charlm_windows_shift_by_one_and_follow_each_other(tmp_path):
    text = "".join(chr(ord("a") + (i * i) % 23) for i in range(2000))
    (tmp_path / "a.txt").write_text(text)
    task, splits, info = make("charlm", text=[str(tmp_path / "*.txt")], seq_len=10, n_train=50, n_val=5, n_test=5)
    vocab = info["vocab"]
    train = splits["train"]
    assert (train["inputs"][:, 1:] == train["targets"][:, :-1]).all()
    assert (train["targets"][:-1, -1] == train["inputs"][1:, 0]).all()  # windows tile the text, stride seq_len
    assert decode(train["inputs"][0], vocab) == text[:10]
    val_start = 50 * 10 + 1
    assert decode(splits["val"]["inputs"][0], vocab) == text[val_start : val_start + 10]


def test_charlm_encode_decode_round_trip_and_unknown_characters(tmp_path):
    (tmp_path / "train.txt").write_text("hello world\n" * 30)
    (tmp_path / "zz.txt").write_text("héllo wörld\n" * 30)  # read after train.txt: val/test see é and ö
    task, splits, info = make("charlm", text=[str(tmp_path)], seq_len=8, n_train=40, n_val=10, n_test=10)
    vocab = info["vocab"]
    assert decode(encode("hello world\n", vocab), vocab) == "hello world\n"
    assert (encode("é", vocab) == 0).all() and decode(encode("hé", vocab), vocab) == "h\ufffd"
    assert (splits["test"]["inputs"] == 0).any()  # unknown characters map to <unk>
    uniform = torch.zeros(*splits["test"]["targets"].shape, len(vocab))
    bpc = mean_of(task.score(uniform, as_batch(splits["test"])), "bpc")
    assert bpc == pytest.approx(math.log2(len(vocab)), rel=1e-6)


def test_charlm_refuses_too_little_text_or_no_match(tmp_path):
    (tmp_path / "a.txt").write_text("short")
    with pytest.raises(DataError, match="needs"):
        make("charlm", text=[str(tmp_path / "a.txt")], seq_len=10, **SMALL)
    with pytest.raises(DataError, match="matches no file"):
        make("charlm", text=[str(tmp_path / "missing*.txt")], **SMALL)


# -- Mackey-Glass ----------------------------------------------------------------------------------
def test_mackey_glass_windows_normalisation_and_baselines():
    task, splits, info = make("mackey-glass", seq_len=12, horizon=3, n_train=3000, n_val=50, n_test=500)
    train = splits["train"]
    assert train["inputs"].shape == (3000, 12, 1) and train["targets"].shape == (3000, 3)
    assert (train["inputs"][1:, -1, 0] == train["targets"][:-1, 0]).all()  # stride one sample
    assert abs(train["inputs"][:, 0, 0].mean()) < 0.1 and 0.9 < train["inputs"][:, 0, 0].std() < 1.1
    raw = train["inputs"] * info["std"] + info["mean"]
    assert 0.2 < raw.min() and raw.max() < 1.5  # the attractor of the τ = 17 equation
    test = as_batch(splits["test"])
    persistence = test["inputs"][:, -1, :].expand(-1, 3)
    baselines = task.baselines(splits, info)
    assert mean_of(task.score(persistence, test), "mse") == pytest.approx(baselines["trivial"], rel=1e-5)
    assert baselines["trivial"] < baselines["variance"]
    assert 0.5 < baselines["variance"] < 1.5


def test_mackey_glass_integration_converges():
    from lstmlab.tasks.mackey_glass import mackey_glass

    x = mackey_glass(300, tau=17, x0=1.2)
    assert len(x) == 3001 and np.isfinite(x).all() and x[0] == 1.2
    # one RK4 step from a constant history equals the exact solution of dx/dt = a - γ x to O(dt^5)
    a = 0.2 * 1.2 / (1 + 1.2**10)
    exact = a / 0.1 + (1.2 - a / 0.1) * math.exp(-0.1 * 0.1)
    assert x[1] == pytest.approx(exact, abs=1e-9)


# -- window parity -----------------------------------------------------------------------------------
def test_window_parity_worked_example_and_baseline():
    """The docstring's example (k = 3): bits 1 0 1 1 0 0 1 0 -> targets 1 1 0 0 0 1 1 1."""
    task, splits, _ = make("window-parity", window=3, seq_len=8, **SMALL)
    bits = (splits["train"]["inputs"][:, :, 0] > 0).astype(int)
    for row, target in zip(bits, splits["train"]["targets"], strict=True):
        expected = [sum(row[max(0, t - 2) : t + 1]) % 2 for t in range(8)]  # the last 3 bits, zeros before the start
        assert list(target) == expected
    example = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    ones = np.concatenate([[0], np.cumsum(example)])
    assert [(ones[t + 1] - ones[max(t + 1 - 3, 0)]) % 2 for t in range(8)] == [1, 1, 0, 0, 0, 1, 1, 1]
    assert set(np.unique(splits["train"]["inputs"])) == {-1.0, 1.0}
    # a constant guess is right half the time
    batch = as_batch(splits["test"])
    guess = torch.zeros(*batch["targets"].shape, 2)
    guess[..., 0] = 1.0
    accuracy = mean_of(task.score(guess, batch), "accuracy")
    assert accuracy == pytest.approx(1 - splits["test"]["targets"].mean())
    assert task.baselines(splits, {})["trivial"] == 0.5
