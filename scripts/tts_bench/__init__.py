"""Helpers of scripts/bench_tts.py and scripts/tts_regression.py (measurement, baselines, checks).

The scripts put scripts/ on sys.path by being run from it, so this folder imports as `tts_bench`.
"""
