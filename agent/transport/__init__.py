"""The audio's way in and out of a session: `audio_output.PacedAudioOutput` plays the engine's
packets in real time for both transports; the LiveKit transport is the worker (`worker`, its
health server, `room_audio`'s sink). The direct WebRTC transport is `agent.direct`."""
