"""Does an adapter carry its own document, and does it leave everything else alone? The two checks the
demo (hyperprag/pipeline.py) and the ablation grid (hyperprag/ablation/runner.py) report.

* `specificity_check`: closed-book gold-answer loss and exact match of each question with its own
  document's adapter, another document's (a fixed derangement) and none; or exact match with the own
  document in the prompt too (the combine modes). An adapter that injects its
  document beats both; an "average" adapter gives own = other. For a token-level network's adapters also
  the document-independent slots alone (`hypernet.token_model.shared_part`): what any document's adapter
  brings, the control for a gain that is not the document's.
* `general_check`: general-knowledge questions answered with no adapter and under many different
  documents' adapters; an adapter should not cost the model what it already knew.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from hypernet.config import TOKEN_ARCHS
from hypernet.token_model import shared_part
from hyperprag.core.data import Document, Question, corpus_index
from hyperprag.core.metrics import extract_answer, score
from hyperprag.core.prompts import answer_completion, answer_prompt
from inference.generate import answer_nll, generate
from inference.sources import AdapterSource

ROWS = ("none", "own document", "other document", "document-independent part")
"""The rows of `specificity_check`; the last only for token-level networks' adapters (`shared_rank`)."""


def other_document_map(doc_ids: Sequence[str], seed: int = 0) -> dict[str, str]:
    """Each document paired with a different one (a fixed derangement: a seeded cycle)."""
    order = sorted(doc_ids)
    random.Random(seed).shuffle(order)
    return {a: order[(i + 1) % len(order)] for i, a in enumerate(order)}


def own_document(question: Question, index: Mapping[tuple[str, str], str]) -> str | None:
    """The id of the question's own document: its first passage's, in a corpus_index; None if absent."""
    p = question.passages[0] if question.passages else None
    return None if p is None else index.get((p.title, p.text))


def own_documents(questions: Sequence[Question], docs: Mapping[str, Document]) -> list[str]:
    """The id in `docs` of each question's own document (`own_document`); a KeyError names a question whose
    passage is not there."""
    index = corpus_index(docs.values())
    out = []
    for q in questions:
        doc_id = own_document(q, index)
        if doc_id is None:
            raise KeyError(f"question {q.id!r}: its first passage is not among the {len(docs)} checked documents")
        out.append(doc_id)
    return out


def check_prompts(tokenizer, questions: Sequence[Question], passages: Sequence[Document] | None = None) -> list[str]:
    """Closed-book prompts, or with `passages` (one document per question) that document in the prompt as the
    combine modes put their top-1 document (inference/answer.py)."""
    return [answer_prompt(tokenizer, q.question, [] if d is None else [(d.title, d.text)])
            for q, d in zip(questions, passages or [None] * len(questions), strict=True)]


def _answer_row(model, tokenizer, questions: Sequence[Question], adapters, spec, batch_size: int,
                max_new_tokens: int, with_nll: bool, passages: Sequence[Document] | None = None) -> dict:
    """Mean answer loss (if asked), EM and contains of the answers under `adapters` (None: no adapter), closed-book
    or with each question's document in the prompt (`check_prompts`)."""
    prompts = check_prompts(tokenizer, questions, passages)
    raw = generate(model, tokenizer, prompts, adapters, spec, max_new_tokens, batch_size, stop_at_answer=True)
    scores = [score(extract_answer(r), q) for r, q in zip(raw, questions, strict=True)]
    row = {"em": sum(s["em"] for s in scores) / len(scores),
           "contains": sum(s["contains"] for s in scores) / len(scores), "n": len(questions)}
    if with_nll:
        nll = answer_nll(model, tokenizer, prompts, [answer_completion(q.answers[0]) for q in questions], adapters,
                         spec, batch_size)
        row = {"answer_nll": sum(nll) / len(nll), **row}
    return row


def shared_rank(store) -> int | None:
    """The document-independent slots (bias_rank) of the token-level network that made a generated store
    (`hyperprag parameterize` records its config); None for other stores (pooled networks keep none)."""
    config = (getattr(store, "settings", None) or {}).get("hypernet_config") or {}
    return (config.get("bias_rank") or None) if config.get("arch") in TOKEN_ARCHS else None


def specificity_check(model, tokenizer, questions: Sequence[Question], docs: Mapping[str, Document],
                      source: AdapterSource, batch_size: int = 8, max_new_tokens: int = 16,
                      known: Mapping[str, Mapping] | None = None, skip: Sequence[str] = (),
                      with_passage: bool = False, shared_rank: int | None = None) -> dict[str, dict]:
    """Rows "none", "own document", "other document": closed-book answer_nll, em, contains and n; with
    `shared_rank` (a token-level network's bias_rank) also "document-independent part": the own adapters
    with every generated slot zeroed.

    Each question's own document is the one of `docs` holding its first passage; "other" is another
    document of `docs`. `known` rows already measured elsewhere (e.g. the evaluation's vanilla row) are
    taken as given instead of being recomputed; rows named in `skip` are left out. `with_passage` asks with
    the own document in the prompt (the combine modes: is an adapter's gain there its document's, or
    one any adapter would give?), em / contains / n only.
    """
    own = own_documents(questions, docs)
    other = other_document_map(list(docs))
    fields = ("em", "contains", "n") if with_passage else ("answer_nll", "em", "contains", "n")
    rows = {k: {m: v[m] for m in fields} for k, v in (known or {}).items()}
    passages = [docs[i] for i in own] if with_passage else None
    plans = [("none", None), ("own document", own), ("other document", [other[i] for i in own])]
    if shared_rank:
        plans.append(("document-independent part", own))
    for name, ids in plans:
        if name in rows or name in skip:
            continue
        adapters = None if ids is None else source.get_many(ids)
        if name == "document-independent part":
            adapters = [shared_part(a, shared_rank) for a in adapters]
        rows[name] = _answer_row(model, tokenizer, questions, adapters, source.spec, batch_size, max_new_tokens,
                                 with_nll=not with_passage, passages=passages)
    return {k: rows[k] for k in ROWS if k in rows}


def general_check(model, tokenizer, general: Sequence[Question], sources: Mapping[str, tuple[AdapterSource, Sequence[str]]],
                  batch_size: int = 8, max_new_tokens: int = 16) -> dict[str, float]:
    """Share of general questions answered (contains) with no adapter, and under each named source's
    adapters of the given document ids: question i gets the i-th document's adapter (cycling), so a
    dozen questions check a dozen different adapters in one batched pass."""
    def contains(adapters, spec) -> float:
        return _answer_row(model, tokenizer, general, adapters, spec, batch_size, max_new_tokens,
                           with_nll=False)["contains"]

    rows = {"no adapter": contains(None, None)}
    for name, (source, doc_ids) in sources.items():
        ids = sorted(doc_ids)
        used = [ids[i % len(ids)] for i in range(len(general))]
        rows[f"with {name} document adapters ({len(set(used))} different)"] = \
            contains(source.get_many(used), source.spec)
    return rows
