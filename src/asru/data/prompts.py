"""The benchmark's prompt wording in one place, so training corpora and the evaluator say exactly the same thing."""

from __future__ import annotations

GEN_INSTRUCTION = "Answer the question based on your trained knowledge in one sentence accurately in ENGLISH."
MC_INSTRUCTION = "Just give ONE letter representing the answer directly."
CLOZE_INSTRUCTION = "Please ONLY provide the correct answer that should replace the [Blank]."


def options_block(options: dict[str, str]) -> str:
    return "\n".join(f"{key}: {value}" for key, value in options.items())


def mc_prompt(question: str, options: dict[str, str], example: tuple[str, dict[str, str], str] | None = None) -> str:
    """MLLMU-Bench multiple choice; `example` = (question, options, letter) is the 1-shot demonstration."""
    body = f"{question}\n{options_block(options)}\n{MC_INSTRUCTION}"
    if example is None:
        return body
    ex_question, ex_options, ex_letter = example
    return f"Example:\n{ex_question}\n{options_block(ex_options)}\nAnswer: {ex_letter}\n\n{body}"


def cloze_prompt(question: str) -> str:
    return f"{question.replace('__', '[Blank]')}\n{CLOZE_INSTRUCTION}"


def gen_prompt(question: str) -> str:
    return f"{question}\n{GEN_INSTRUCTION}"
