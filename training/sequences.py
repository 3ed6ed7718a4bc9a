"""The teacher's training sequences, built from a document and its augmentation (PRAG's three kinds).

Every QA sequence is exactly what answering sends and expects: ``answer_prompt(tokenizer, question,
passages)`` as the prompt (it ends in the pre-fill "The answer is") and ``answer_completion(answer)`` as
the target, so an adapter learns the format it is asked in. Kinds:

- ``qa_passage``  QA with the document itself in context
- ``qa_rewrite``  QA with each rewrite of the document in context (one sequence per QA pair and rewrite)
- ``qa_closed``   QA with no passage (closed book: what the adapter must answer on its own)
- ``lm_passage``  the document's raw text as a plain language-modelling sequence
- ``lm_rewrite``  each rewrite as a plain language-modelling sequence
- ``anchor``      (added with ``anchors=n``) n general questions answered with the base model's own
                  greedy answer (self-distillation): they tell the adapter to leave questions that are not
                  about its document alone, which keeps general answers intact. With
                  ``anchor_loss="kl"`` every token of the anchor sequence is a target and the teacher
                  matches the base model's full next-token distribution there (training/teacher.py)

Truncation policy (``max_length`` tokens): the question, pre-fill and answer are never cut; a QA sequence
that is too long has the tail of its in-context passage dropped until it fits; LM sequences are split into
consecutive windows of at most ``max_length`` tokens (no text is lost). A QA sequence that does not fit
even without its passage is dropped and counted in ``BuildStats.dropped``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hyperprag.core.data import Document
from hyperprag.core.lm import IGNORE  # the label of a position without loss
from hyperprag.core.prompts import answer_completion, answer_prompt

QA_KINDS = ("qa_passage", "qa_rewrite", "qa_closed")
# General questions for anchor sequences; none is in hyperprag/demo/general.jsonl, and capitals, planets,
# oceans, mountains, Shakespeare and the languages of countries are left out because that evaluation file
# asks about them (the check measures whether anchoring generalizes to unseen general questions).
ANCHOR_QUESTIONS = (
    "What is the chemical symbol for gold?", "How many continents are there?",
    "What colour is the sky on a clear day?", "Who was the first president of the United States?",
    "What gas do plants take in from the air?", "How many minutes are there in an hour?",
    "Which animal is known as the king of the jungle?", "What is the square root of 81?",
    "In which country are the pyramids of Giza?", "Who developed the theory of relativity?",
    "How many sides does a triangle have?", "What do bees make?", "What is frozen water called?",
    "Which organ pumps blood through the body?", "How many months are there in a year?",
    "What is the opposite of hot?",
    "What is the boiling point of water in degrees Celsius?", "What is the largest animal on land?",
    "What is the fastest land animal?", "Which bird is a symbol of peace?",
    "What is the main ingredient of guacamole?", "What colour are ripe bananas?",
    "What instrument has 88 keys?", "Who invented the telephone?", "Who discovered penicillin?",
    "What is two plus two?", "What is ten times ten?", "Which metal is liquid at room temperature?",
    "What do caterpillars turn into?", "What is the hardest natural substance?",
    "What is the longest river in Africa?", "Which country has a maple leaf on its flag?",
    "What is the currency of the United Kingdom?", "Who wrote the Harry Potter books?",
    "What do you call a baby cat?", "What is the largest hot desert in the world?",
    "Which sport is played with a bat, a ball and wickets?", "What shape has eight sides?",
    "How many strings does a violin have?", "Which animal gives us wool?", "What fruit is wine made from?",
    "Who was the first person to walk on the Moon?", "How many weeks are there in a year?",
    "What does a thermometer measure?", "Which organs do we breathe with?", "What is the largest country by area?",
    "On which continent is Egypt?", "What is the tallest animal?", "What colour is chlorophyll?",
    "What do pandas mainly eat?", "Who painted The Starry Night?", "What is the chemical formula of table salt?",
)
LM_KINDS = ("lm_passage", "lm_rewrite")
ALL_KINDS = QA_KINDS + LM_KINDS
ANSWER_STYLES = ("short", "full")
ANCHOR_LOSSES = ("ce", "kl")


@dataclass(frozen=True)
class SequenceOptions:
    """What the teacher trains on; the fields mirror TeacherConfig's sequence fields."""

    kinds: tuple[str, ...] = QA_KINDS
    """Which sequence kinds to build (see the module doc)."""
    answers: tuple[str, ...] = ("short",)
    """Answer styles, one sequence each: "short" = the short answer; "full" = short answer then the
    full-sentence answer (" Paris. Paris is the capital of France."), falling back to short when absent."""
    max_qa: int | None = None
    """Use at most this many QA pairs per document (in augmentation order); None = all."""
    max_qa_per_answer: int | None = None
    """Keep at most this many QA pairs with the same answer (rule QA asks each fact in up to 3 forms);
    applied before max_qa; None = all."""
    max_rewrites: int | None = None
    """Use at most this many rewrites per document; None = all."""
    answer_only: bool = True
    """Loss only on the completion (answer + end token) of QA sequences; False = on every token."""
    append_eos: bool = True
    """End every QA completion with the tokenizer's EOS token, so the model learns to stop after it."""
    max_length: int = 512
    """Longest sequence in tokens; see the module doc for what is cut."""
    anchors: int = 0
    """Anchor sequences per document (general questions with the base model's own answers); 0 = none."""
    anchor_loss: str = "ce"
    """ce: anchors train on the base model's greedy answer tokens; kl: every position of the anchor
    sequence (prompt included) is a target, matched to the base model's whole next-token distribution."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "answers", tuple(self.answers))
        bad = [k for k in self.kinds if k not in ALL_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"sequence kinds {bad or '()'} invalid; choose from {ALL_KINDS}")
        bad = [a for a in self.answers if a not in ANSWER_STYLES]
        if bad or not self.answers:
            raise ValueError(f"answer styles {bad or '()'} invalid; choose from {ANSWER_STYLES}")
        if self.anchor_loss not in ANCHOR_LOSSES:
            raise ValueError(f"anchor_loss {self.anchor_loss!r} invalid; choose from {ANCHOR_LOSSES}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")


@dataclass(frozen=True)
class TrainingText:
    """One training sequence before tokenization: a QA prompt + completion, or a plain LM text."""

    doc_index: int
    kind: str
    completion: str  # QA: the target after the pre-fill; LM: the whole raw text
    question: str | None = None  # None for LM sequences
    passage: tuple[str, str] | None = None  # (title, text) in context, None for closed-book / LM


@dataclass
class Example:
    """One tokenized sequence; `labels` is IGNORE where no loss is taken."""

    doc_index: int
    kind: str
    input_ids: list[int]
    labels: list[int]

    @property
    def num_targets(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


@dataclass
class BuildStats:
    """Counts from building one document's examples (reported, and kept in adapter metadata)."""

    per_kind: dict[str, int] = field(default_factory=dict)
    truncated: int = 0  # QA sequences whose in-context passage was shortened
    dropped: int = 0  # QA sequences that did not fit at all


def _completion(qa, style: str) -> str:
    short = answer_completion(qa.answer)
    full = (getattr(qa, "full_answer", None) or "").strip()
    if style == "full" and full:
        return f"{short} {full}"
    return short


def build_texts(doc: Document, aug, options: SequenceOptions, doc_index: int = 0,
                anchor_pool: Sequence[tuple[str, str]] = ()) -> list[TrainingText]:
    """The training texts of one document; `aug` has `.qa` (question, answer, full_answer) and `.rewrites`.

    `anchor_pool` holds (question, base model's answer) pairs; document i takes `options.anchors` of them
    starting at i * anchors (wrapping), so different documents anchor on different questions.
    """
    qa_pairs = list(getattr(aug, "qa", None) or [])
    if options.max_qa_per_answer is not None:
        seen: dict[str, int] = {}
        kept = []
        for qa in qa_pairs:
            seen[qa.answer] = seen.get(qa.answer, 0) + 1
            if seen[qa.answer] <= options.max_qa_per_answer:
                kept.append(qa)
        qa_pairs = kept
    qa_pairs = qa_pairs[: options.max_qa]
    rewrites = [r for r in (getattr(aug, "rewrites", None) or []) if r and r.strip()][: options.max_rewrites]
    texts: list[TrainingText] = []
    for kind in options.kinds:
        if kind == "lm_passage":
            texts.append(TrainingText(doc_index, kind, doc.full_text))
        elif kind == "lm_rewrite":
            texts.extend(TrainingText(doc_index, kind, r) for r in rewrites)
        else:
            contexts: list[tuple[str, str] | None]
            if kind == "qa_passage":
                contexts = [(doc.title, doc.text)]
            elif kind == "qa_rewrite":
                contexts = [(doc.title, r) for r in rewrites]
            else:
                contexts = [None]
            for qa in qa_pairs:
                # one completion per answer style, deduplicated where "full" falls back to "short"
                completions = list(dict.fromkeys(_completion(qa, s) for s in options.answers))
                for ctx in contexts:
                    texts.extend(TrainingText(doc_index, kind, c, qa.question, ctx) for c in completions)
    if options.anchors and anchor_pool:
        for j in range(options.anchors):
            q, a = anchor_pool[(doc_index * options.anchors + j) % len(anchor_pool)]
            texts.append(TrainingText(doc_index, "anchor", answer_completion(a), q))
    return texts


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def tokenize_text(tokenizer, text: TrainingText, options: SequenceOptions,
                  stats: BuildStats | None = None) -> list[Example]:
    """Tokenize one text into one example (QA) or one or more windows (LM); [] if a QA text cannot fit.

    The prompt is tokenized on its own (its text carries any BOS; no special tokens added, as answering does) and the
    completion after it, so the token boundary is the one generation sees at the pre-fill.
    """
    stats = stats if stats is not None else BuildStats()
    L = options.max_length
    if text.question is None:  # LM sequence: loss on every token, split into windows
        ids = _ids(tokenizer, text.completion, special=True)
        return [Example(text.doc_index, text.kind, ids[i:i + L], list(ids[i:i + L]))
                for i in range(0, len(ids), L) if len(ids[i:i + L]) > 1]
    target = _ids(tokenizer, text.completion, special=False)
    if options.append_eos and tokenizer.eos_token_id is not None:
        target = target + [tokenizer.eos_token_id]
    passage = text.passage
    prompt = _ids(tokenizer, answer_prompt(tokenizer, text.question, [passage] if passage else []), special=False)
    if len(prompt) + len(target) > L and passage is not None:
        stats.truncated += 1
        body = _ids(tokenizer, passage[1], special=False)
        for _ in range(4):  # re-tokenizing a cut text can shift a token or two; retry with the new overflow
            overflow = len(prompt) + len(target) - L
            if overflow <= 0:
                break
            body = body[: max(0, len(body) - overflow - 2)]
            cut = (passage[0], tokenizer.decode(body))
            prompt = _ids(tokenizer, answer_prompt(tokenizer, text.question, [cut]), special=False)
    if len(prompt) + len(target) > L:
        stats.dropped += 1
        return []
    whole = not options.answer_only or (text.kind == "anchor" and options.anchor_loss == "kl")
    labels = (list(prompt) if whole else [IGNORE] * len(prompt)) + target
    return [Example(text.doc_index, text.kind, prompt + target, labels)]


def anchor_examples(tokenizer, pool: Sequence[tuple[str, str]], max_length: int) -> list[Example]:
    """Every (question, base model's answer) of `pool` as a KL anchor sequence (every token a target): for
    losses that keep an adapter from changing answers that are not about its document."""
    options = SequenceOptions(kinds=("qa_closed",), max_length=max_length, anchor_loss="kl")
    return [ex for q, a in pool
            for ex in tokenize_text(tokenizer, TrainingText(0, "anchor", answer_completion(a), q), options)]


def build_examples(tokenizer, doc: Document, aug, options: SequenceOptions, doc_index: int = 0,
                   anchor_pool: Sequence[tuple[str, str]] = ()) -> tuple[list[Example], BuildStats]:
    """All tokenized training examples of one document, in a fixed order, and their counts."""
    stats = BuildStats()
    examples: list[Example] = []
    for text in build_texts(doc, aug, options, doc_index, anchor_pool):
        made = tokenize_text(tokenizer, text, options, stats)
        for ex in made:
            stats.per_kind[ex.kind] = stats.per_kind.get(ex.kind, 0) + 1
        examples.extend(made)
    return examples, stats


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Tensor]:
    """Right-pad to the batch's longest sequence (causal attention never sees the padding after a token).

    Returns input_ids / labels / attention_mask [b, t] and doc_index [b].
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    t = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), t), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), t), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), t), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    doc_index = torch.tensor([e.doc_index for e in examples], dtype=torch.long)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "doc_index": doc_index}
