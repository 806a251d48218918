"""One conversation: `pipeline.VoicePipeline` wires a livekit AgentSession to the plugins, the echo
gate, the VAD tap, the end-of-turn model and the duplex controller, which alone acts on a barge-in
(`barge_in` is its typed contract)."""
