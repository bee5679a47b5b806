"""Experiments: which runs a config asks for (sweep, packing), where they execute (executors), how one
trains (train), and the run folder each writes and is read back through (folder). Nothing here imports
lstmlab.analysis: training never depends on how its results are read."""
