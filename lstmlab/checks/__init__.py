"""Checks of the tool itself: kernel and study benchmarks (bench, study) and the parity checks of every
backend on this machine (verify)."""
