"""The voice agent, laid out along the data path (microphone -> transport -> VAD -> STT -> LLM ->
TTS -> paced output -> transport -> speaker; the README's "Data path" table names each hop):

    transport/  the audio's way in and out: paced 20 ms output, the LiveKit room sink, the LiveKit
                worker (`python -m agent`) and its health server; direct/ is the other transport
    direct/     direct WebRTC, no LiveKit server (`python -m agent.direct`)
    session/    one conversation: the pipeline, the duplex controller and its barge-in contract,
                echo gate, VAD tap, end of turn
    plugins/    the livekit roles: Omni STT, Omni LLM (and the wire both speak), TTS over tts_engine
    observe/    per-turn traces, their statistics, Prometheus metrics, the engine watch
    launch/     start_all.sh's decisions (`python -m agent.launch`)
    config.py, resources.py: the settings and what one process loads once, shared by both transports

The stage packages' __init__ files import nothing (so `agent.launch`, which reads the Omni settings
in plugins/, stays free of torch and livekit); tests/test_agent_architecture.py checks the layout's rules.
"""
