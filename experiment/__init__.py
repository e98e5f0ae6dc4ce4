"""Experiments that measure Shoal against published baselines.

Each subpackage reproduces one reference experiment so that Shoal's numbers can
be read line by line beside the published ones (see ``shared/BENCHMARKS.md``).
"""
