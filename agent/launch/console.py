"""start_all's voice: lines tagged [start_all], progress on stdout, warnings and errors on stderr; and
LaunchError, what stops a start (or omni-plan) before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from .settings import DEFAULT_TTS_HUB_ID

TAG = "[start_all]"
TEST_VOICE_BANNER = f"""\
{TAG} ############################################################################
{TAG} WARNING: the TTS voice is a RANDOM-WEIGHT TEST VOICE: it speaks noise, not words.
{TAG}   The page shows this warning too. For a real voice set TTS_MODEL to a Qwen3-TTS
{TAG}   checkpoint folder (huggingface-cli download {DEFAULT_TTS_HUB_ID} --local-dir DIR).
{TAG} ############################################################################
"""


class LaunchError(Exception):
    """What is wrong, and `fix`: what to do about it (None: nothing to add)."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message, self.fix = message, fix


@dataclass
class Console:
    out: TextIO
    err: TextIO

    def say(self, text: str) -> None:
        print(f"{TAG} {text}", file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(f"{TAG} WARNING: {text}", file=self.err, flush=True)

    def error(self, failure: LaunchError) -> None:
        print(f"{TAG} ERROR: {failure.message}", file=self.err, flush=True)
        if failure.fix is not None:
            print(f"{TAG}   fix: {failure.fix}", file=self.err, flush=True)

    def detail(self, text: str, to_stderr: bool = False) -> None:
        """A line of something else's output (an install, deploy/omni/gpu_split.py), indented."""
        print(f"{TAG}   {text}", file=self.err if to_stderr else self.out, flush=True)

    def banner(self) -> None:
        self.err.write(TEST_VOICE_BANNER)
        self.err.flush()
