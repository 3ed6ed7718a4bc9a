"""Every prompt wording the system uses, in one file.

Answering (all modes) and the teacher's training sequences share one format, so that what an adapter
learns is exactly what it is asked at answer time:

    <chat template>
    user:      [Passage 1: {title}: {text}\n ...\n]  Answer the question briefly.\nQuestion: {question}
    assistant: The answer is{ answer}.

The assistant turn is pre-filled with "The answer is" (no trailing space: a trailing space leaves a
135M model on a lone space token, and it then answers "1." for most questions).
"""

from __future__ import annotations

from collections.abc import Sequence

ANSWER_PREFILL = "The answer is"
INSTRUCTION = "Answer the question briefly."
MC_INSTRUCTION = "Answer with the letter of the correct option."


def format_passages(passages: Sequence[tuple[str, str]]) -> str:
    """`passages` as (title, text) pairs, numbered from 1."""
    return "\n".join(f"Passage {i}: {title}: {text}" if title else f"Passage {i}: {text}"
                     for i, (title, text) in enumerate(passages, 1))


def user_message(question: str, passages: Sequence[tuple[str, str]] = (), options: dict[str, str] | None = None
                 ) -> str:
    parts = []
    if passages:
        parts.append(format_passages(passages))
    parts.append(MC_INSTRUCTION if options else INSTRUCTION)
    parts.append(f"Question: {question}")
    if options:
        parts.append("\n".join(f"{k}. {v}" for k, v in options.items()))
    return "\n".join(parts)


def answer_prompt(tokenizer, question: str, passages: Sequence[tuple[str, str]] = (),
                  options: dict[str, str] | None = None) -> str:
    """The full prompt text, ending in the assistant pre-fill; falls back to plain text without a template."""
    user = user_message(question, passages, options)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
    else:  # base models without a chat template (e.g. Gemma-3-270M base)
        text = f"{user}\n"
    return text + ANSWER_PREFILL


def answer_completion(answer: str) -> str:
    """The target continuation after the pre-fill, as the teacher trains it."""
    return f" {answer.strip().rstrip('.')}."
