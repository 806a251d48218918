"""start_all.sh's decisions, in Python and unit-tested; the script keeps the processes (launch, health
waits, stop, status, logs, pid files). It imports nothing heavy (no torch, no livekit):

    python -m agent.launch plan --run-dir RUN_DIR        # start: choose, check, write RUN_DIR/chosen.env
    python -m agent.launch omni-plan --run-dir RUN_DIR   # how start would split the GPU with vLLM-Omni
    python -m agent.launch omni-split --run-dir RUN_DIR --tts-measured-from MIB
                                                         # the measured split, into RUN_DIR/omni-deploy.yaml
    ... --facts FILE.json                                # decide from GivenFacts instead of probing

In: the environment (the README's configuration tables), what the probes find (Go, a LiveKit server
binary, a GPU, vLLM-Omni, the TTS checkpoint in the HF cache or on the hub, the endpoints and ports),
and the key pair an earlier chosen.env kept. Out: the "[start_all] ..." lines, and chosen.env (0600);
exit status 1 after an "ERROR:" and a "fix:" line when something is wrong, before anything started.
"""

from .chosen import Chosen, read_chosen
from .console import Console, LaunchError
from .omni import OmniOnGpu
from .plan import Planner
from .probes import GivenFacts, Probes, SystemProbes
from .settings import START_ENV, StartSettings

__all__ = ["START_ENV", "Chosen", "Console", "GivenFacts", "LaunchError", "OmniOnGpu", "Planner", "Probes",
           "StartSettings", "SystemProbes", "read_chosen"]
