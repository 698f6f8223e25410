"""Loading, building, prompting and running image-text models."""

from transformers.utils import logging as _hf_logging

# Our own Rich bars show progress; transformers' tqdm bars on stderr would drown one-line errors and logs.
_hf_logging.disable_progress_bar()
