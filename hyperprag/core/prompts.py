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
    return chat_prompt(tokenizer, user_message(question, passages, options), ANSWER_PREFILL)


def answer_completion(answer: str) -> str:
    """The target continuation after the pre-fill, as the teacher trains it."""
    return f" {answer.strip().rstrip('.')}."


# ----------------------------------------------------------------------------------------------------------
# Document augmentation (training/augment): LLM rewrite and QA-generation prompts, rule-based question forms
# ----------------------------------------------------------------------------------------------------------

REWRITE_INSTRUCTION = ("Rewrite the following passage. Keep every name, number and date; change the wording. "
                       "Output only the rewritten passage.")
# Measured on SmolLM2-135M: naming a "full_answer" key makes the model loop on "What is the full answer to
# the question ..."; without it, it writes short grounded pairs for some passages. The full answer is then
# taken from the passage (the sentence holding the answer). Larger models may be asked for it.
QA_GEN_INSTRUCTION = ("Write {n} questions about the passage, each with a short answer (a name, number, date or "
                      "place copied from the passage). Output only a JSON list: "
                      '[{{"question": "...", "answer": "..."}}]')
QA_GEN_INSTRUCTION_FULL = ("Write {n} questions about the passage, each with a short answer (a name, number, date "
                           "or place copied from the passage) and the full answer as one sentence. Output only a "
                           'JSON list: [{{"question": "...", "answer": "...", "full_answer": "..."}}]')
# The assistant turn of the QA-generation prompt is pre-filled with the start of the JSON list: without it a
# 135M model loops under greedy decoding instead of opening the list.
QA_GEN_PREFILL = '[{"question": "'

# Rule-based question forms (training/augment/facts.py); the title makes each question closed-book answerable.
CLOZE_BLANK = "____"
CLOZE_QUESTION = "Fill in the blank about {title}: {sentence}"
CLOZE_QUESTION_NO_TITLE = "Fill in the blank: {sentence}"
COMPLETE_QUESTION = "Complete the fact about {title}: {prefix} ..."
COMPLETE_QUESTION_NO_TITLE = "Complete the fact: {prefix} ..."
CONTEXT_QUESTION = "Regarding {title}, {question}"


def chat_prompt(tokenizer, user: str, prefill: str = "") -> str:
    """`user` as one chat turn with the assistant turn opened (and pre-filled).

    Base models without a chat template (e.g. Gemma-3-270M base) get the plain text and a newline; the
    text starts with the tokenizer's BOS where it adds one itself (tokenize it without special tokens).
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = f"{user}\n"
    bos = bos_text(tokenizer)
    return (bos if bos and not text.startswith(bos) else "") + text + prefill


def bos_text(tokenizer) -> str:
    """The BOS token's text if the tokenizer puts one first on its own, else "".

    Prompts are tokenized without special tokens (a chat template writes its own BOS, which must not be
    doubled), so a prompt carries the BOS in its text: without it Gemma-3 answers nonsense.
    """
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if not bos or bos_id is None:
        return ""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos if ids and ids[0] == bos_id else ""


def rewrite_prompt(tokenizer, title: str, text: str) -> str:
    """PRAG-style rewrite request for one passage; the reply is the rewritten passage."""
    passage = f"{title}: {text}" if title else text
    return chat_prompt(tokenizer, f"{REWRITE_INSTRUCTION}\nPassage: {passage}")


def qa_generation_prompt(tokenizer, title: str, text: str, n: int = 3, full_answer: bool = False) -> str:
    """Ask for `n` grounded QA pairs as JSON; ends in QA_GEN_PREFILL, so the reply continues the first question."""
    passage = f"{title}: {text}" if title else text
    instruction = (QA_GEN_INSTRUCTION_FULL if full_answer else QA_GEN_INSTRUCTION).format(n=n)
    return chat_prompt(tokenizer, f"{instruction}\nPassage: {passage}", QA_GEN_PREFILL)
