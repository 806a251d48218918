"""Scaffolding shared by the tests and the scripts (benchmarks, soak): never imported by agent/,
tts_engine/ or token_server/, and never a default of theirs.

- harness.py: a headless AgentSession (WAV microphone, recording speaker) and espeak-ng speech
- audio_input.py / recording.py: that microphone and that speaker
- fake_omni.py: the fake vLLM-Omni server (`python -m testing.fake_omni --port N`)
- utterances.py, event_log.py, direct_client.py, livekit_client.py: a caller in either mode
- soak.py, soak_report.py, duplex_bench.py, browser_call.py: the soak and the duplex benchmark
- plots.py: every PNG the scripts draw (matplotlib, from the dev extra)
- ports.py: free loopback ports
- tts_bench/: the TTS engine's benchmarks, regression checks and GPU checks

Importing this package imports nothing: the GPU suite imports tts_bench/ on a machine without livekit.
"""
