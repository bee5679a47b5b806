"""Text from a trained charlm run: read what its best weights learned, one character at a time.

    sample_text(run, chars=500, temperature=1.0, prime="\\n", seed=None, data_dir="data") -> Sample

The model reads the prime, then draws each next character from softmax(logits / temperature) and reads
it in turn, carrying its recurrent state (as pytorch/examples word_language_model's generate.py does):

    p(c_{t+1} | c_1..c_t) = softmax(z_t / temperature),    z_t = head(core(embed(c_t), state_{t-1}))

temperature → 0 approaches always taking the most likely character (0 is exactly that); 1 samples the
model's own distribution; above 1 flattens it. <unk> (id 0, characters the training text never had) is
never drawn. The weights are the run's best by validation (the ones its test metric was measured with;
"best-or-latest" of lstmlab.run.reader: the latest where a format-1 checkpoint kept no best weights), from
checkpoint.pt; the alphabet is the vocabulary in its dataset's meta.json. The dataset is found where the run
says it was trained from (env.json's `data.dir`, written by train) unless --data-dir is given; a run folder
without that record, or whose data dir is gone, falls back to ./data.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from pathlib import Path

from lstmlab.errors import UserError
from lstmlab.run.reader import WeightsDoNotFit, find_data_dir, open_run
from lstmlab.schema import SEED_MAX


@dataclass
class Sample:
    text: str  # the prime, then the drawn characters
    prime: str
    step: int | None  # the training step of the weights used
    unknown: str  # characters of the prime outside the run's alphabet (read as <unk>)


def load_run(path: str | Path, data_dir: str | Path | None = None):
    """(resolved config, vocabulary, model with the run's best weights, their step) of a charlm run folder;
    `data_dir` None: where the run's dataset was trained from (find_data_dir)."""
    from lstmlab.tasks.datasets import load

    run = open_run(path)
    cfg = run.resolved()
    if cfg.task.name != "charlm":
        raise UserError(f"{run.path} is a run of task {cfg.task.name}; lstmlab sample writes text from charlm runs")
    run.weights("best-or-latest")  # no checkpoint.pt yet, or an unreadable one: said before the data is looked for
    dataset = load(cfg.task, find_data_dir(run, cfg.task, data_dir), generate_missing=False)
    vocab = dataset.meta["info"]["vocab"]
    try:
        model, used = run.load_model("best-or-latest", spec=dataset.spec)
    except WeightsDoNotFit as e:  # another alphabet: the dataset was made anew from different text
        raise UserError(f"{run.path}/checkpoint.pt does not fit the model of its config with the {len(vocab)}-"
                        f"character alphabet of {dataset.folder} (was the dataset made anew from other text?): "
                        f"{e.problem}") from None
    return cfg, vocab, model, used["step"]


def sample_text(path: str | Path, *, chars: int = 500, temperature: float = 1.0, prime: str = "\n",
                seed: int | None = None, data_dir: str | Path | None = None) -> Sample:
    import torch

    from lstmlab.tasks.charlm import encode

    if chars < 0:
        raise UserError(f"--chars: must not be negative (got {chars})")
    if not (0 <= temperature < math.inf):  # nan fails this too
        raise UserError(f"--temperature: a finite number ≥ 0 (got {temperature}); 0 always takes the most likely "
                        "character, 1 samples the model's distribution")
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise UserError(f"--seed: an integer from 0 to {SEED_MAX} (got {seed})")
    if not prime:
        raise UserError("--prime: give at least one character for the model to start from")
    cfg, vocab, model, step = load_run(path, data_dir)
    generator = torch.Generator().manual_seed(seed if seed is not None else secrets.randbits(63))
    ids = torch.from_numpy(encode(prime, vocab))[None, :]  # (1, P)
    unknown = "".join(sorted({ch for ch, i in zip(prime, ids[0].tolist(), strict=True) if i == 0}))
    drawn: list[int] = []
    with torch.no_grad():
        state = None
        for _ in range(chars):
            x = model.encoder(ids)  # (1, t, E): the whole prime first, then one character a step
            y, state = model.core(x, state)
            logits = model.head(y[:, -1]).double()  # (1, V)
            logits[:, 0] = -torch.inf  # never draw <unk>
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                # softmax((z - max z) / T): the largest logit becomes 0, so a tiny T underflows the others to
                # probability 0 instead of overflowing them to inf / inf = nan
                scaled = (logits - logits.max(-1, keepdim=True).values) / temperature
                nxt = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)
            drawn.append(int(nxt))
            ids = nxt  # (1, 1)
    return Sample(prime + "".join(vocab[i] for i in drawn), prime, step, unknown)
