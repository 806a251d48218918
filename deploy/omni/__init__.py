"""vLLM-Omni on the agent's GPU: the thinker-only deploy config and the memory split
(docs/omni-on-one-gpu.md). Run from the repository root: python -m deploy.omni.gpu_split --help"""
