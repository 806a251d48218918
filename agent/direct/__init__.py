"""Direct mode: browsers talk WebRTC straight to the agent process, no LiveKit server needed.

The page gets a token from the token server, POSTs its offer to `/api/offer` here, and each
accepted offer becomes one DirectPeer with its own VoicePipeline on the shared engine and VAD.
Protocol, configuration and latency notes: README.md in this folder.
"""

from .config import DirectServerConfig
from .server import SERVER_KEY, DirectServer, make_app

__all__ = ["SERVER_KEY", "DirectServer", "DirectServerConfig", "make_app"]
