"""Batch runs: run manifest -> registry -> adapter -> results, with a config snapshot per run."""
