"""SequenceModel: input encoder -> recurrent core -> head, and the parameter-budget arithmetic.

    tokens (B, T)    -> Embedding -> (B, T, E) ┐
    values (B, T, D) ------------------------> ┴-> core (B, T, H) -> head Linear(H, C) -> (B, C) last step
                                                                                       or (B, T, C) every step

Real-valued inputs go straight into the core: its first input projection W_ih is already the linear
encoder, so a separate Linear would add parameters and nothing the model could not express.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lstmlab.config import LSTM_TYPES, ModelConfig
from lstmlab.errors import BadValue
from lstmlab.tasks.base import TaskSpec


def _scratch_lstm(input_size: int, cfg: ModelConfig) -> nn.Module:
    from lstmlab.models.lstm import LSTM

    return LSTM(input_size, cfg.hidden_size, cfg.layers, batch_first=True, dropout=cfg.dropout, backend=cfg.backend)


def _torch_core(cls: type[nn.RNNBase]) -> Callable[[int, ModelConfig], nn.Module]:
    def make(input_size: int, cfg: ModelConfig) -> nn.Module:
        extra = {"nonlinearity": cfg.nonlinearity} if cls is nn.RNN else {}
        return cls(input_size, cfg.hidden_size, cfg.layers, batch_first=True, dropout=cfg.dropout, **extra)

    return make


# model.type -> factory(input_size, cfg) of a batch-first recurrent core, called as core(x, state=None) and
# returning (output, state); plugin cores (entry points in group lstmlab.cores) are looked up by `core_factory`
CORES: dict[str, Callable[[int, ModelConfig], nn.Module]] = {
    "scratch-lstm": _scratch_lstm,
    "lstm": _torch_core(nn.LSTM),
    "gru": _torch_core(nn.GRU),
    "rnn": _torch_core(nn.RNN),
}


class SequenceModel(nn.Module):
    def __init__(self, cfg: ModelConfig, spec: TaskSpec):
        super().__init__()
        if cfg.hidden_size is None:
            raise ValueError("model.hidden_size is not set (derive it from param_budget with resolve_hidden_size)")
        self.readout = spec.readout
        if spec.input_kind == "tokens":
            embedding_dim = cfg.embedding_dim or cfg.hidden_size
            self.encoder: nn.Module = nn.Embedding(spec.input_size, embedding_dim)
            core_input = embedding_dim
        else:
            self.encoder = nn.Identity()
            core_input = spec.input_size
        self.core = core_factory(cfg.type)(core_input, cfg)
        self.head = nn.Linear(cfg.hidden_size, spec.output_size)
        if cfg.tie_weights:
            if spec.input_kind != "tokens" or spec.output_size != spec.input_size:
                raise BadValue("model.tie_weights needs a token task that predicts tokens of the same vocabulary")
            if core_input != cfg.hidden_size:
                raise BadValue("model.tie_weights needs model.embedding_dim equal to model.hidden_size")
            self.head.weight = self.encoder.weight
        if cfg.forget_bias is not None and cfg.type in LSTM_TYPES:
            init_forget_bias(self.core, cfg.forget_bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        y, _ = self.core(self.encode(inputs))  # (B, T, H)
        return self.read_out(y)  # (B, C) or (B, T, C)

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> embeddings (B, T, E); values (B, T, D) pass through. PackedModel encodes with it too."""
        return self.encoder(inputs)

    def read_out(self, y: torch.Tensor) -> torch.Tensor:
        """The core's outputs (B, T, H) -> predictions: (B, C) from the last step (readout "last"), or (B, T, C)
        at every step. PackedModel reads out with it too."""
        if self.readout == "last":
            y = y[:, -1]  # (B, H)
        return self.head(y)


def core_factory(name: str) -> Callable[[int, ModelConfig], nn.Module]:
    """A built-in core's factory, or an installed plugin's; ValueError naming the valid types otherwise."""
    from lstmlab import plugins

    if name in CORES:
        return CORES[name]
    if name in plugins.plugin_entry_points(plugins.CORE_GROUP):
        return plugins.load_core(name)
    raise ValueError(f"unknown model type {name!r}; valid types: {', '.join(plugins.core_names(tuple(CORES)))}")


def init_forget_bias(core: nn.Module, value: float) -> None:
    """Set b_if + b_hf = value in every layer (gate order i, f, g, o: the forget gate is rows H..2H)."""
    with torch.no_grad():
        for name, param in core.named_parameters():
            if name.startswith("bias_"):
                hidden = param.shape[0] // 4
                param[hidden : 2 * hidden] = value if name.startswith("bias_ih") else 0.0


def build_model(cfg: ModelConfig, spec: TaskSpec) -> SequenceModel:
    return SequenceModel(cfg, spec)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once (tied weights)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_count(cfg: ModelConfig, spec: TaskSpec) -> int:
    with torch.device("meta"):
        return count_parameters(build_model(cfg, spec))


def resolve_hidden_size(cfg: ModelConfig, spec: TaskSpec) -> ModelConfig:
    """With param_budget set, return cfg with the integer hidden_size whose model count is closest to it."""
    if cfg.param_budget is None:
        return cfg

    def count(hidden: int) -> int:
        return parameter_count(cfg.model_copy(update={"hidden_size": hidden}), spec)

    low, high = 1, 2
    while count(high) < cfg.param_budget:  # the count grows with the hidden size: bracket, then bisect
        low, high = high, high * 2
        if high > 65536:
            break
    while high - low > 1:
        mid = (low + high) // 2
        if count(mid) < cfg.param_budget:
            low = mid
        else:
            high = mid
    best = min((low, high), key=lambda h: (abs(count(h) - cfg.param_budget), h))
    return cfg.model_copy(update={"hidden_size": best})
