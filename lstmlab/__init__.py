"""lstmlab: train recurrent networks on sequence tasks and compare them with error bars."""

__version__ = "0.1.0"
