"""The TTS engine's benchmarks and checks (measurement, baselines, regression and GPU checks), used
by scripts/bench_tts.py, tts_regression.py, check_codec_decoder.py and gpu_check.py and by their tests.

Imports only torch, numpy, qwen_tts and the engine (the GPU suite runs it on a machine without
livekit, with the repository on PYTHONPATH).
"""
