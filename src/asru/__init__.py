"""asru: machine unlearning for multimodal LLMs (ASRU, baselines, generation-quality evaluation)."""

__version__ = "0.1.0"
