"""The livekit plugin roles, one class each: `OmniSTT` (speech -> text), `OmniLLM` (text -> reply
tokens), both over `omni_wire`'s OpenAI-compatible dialect, and `EngineTTS` (reply tokens -> the
shared engine's 20 ms packets). They report to the per-turn tracer through `hooks.PipelineHooks`."""
