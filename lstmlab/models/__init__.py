"""Recurrent models. `LSTM` and `LSTMCell` are the from-scratch drop-ins for torch.nn.LSTM / nn.LSTMCell."""

from lstmlab.models.lstm import LSTM, LSTMCell

__all__ = ["LSTM", "LSTMCell"]
