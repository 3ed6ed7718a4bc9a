"""Optional LLM augmentation: QA generation and rewrites, robust to a small model's failures.

Measured on SmolLM2-135M-Instruct: 3 of 40 passages got 3 valid grounded pairs, greedy decoding looped
unless the JSON list was pre-filled, rewrites were near-copies. So every output is parsed tolerantly,
checked against the passage, retried a bounded number of times, and every failure is recorded.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence

import torch

from hyperprag.core.data import Document
from hyperprag.core.prompts import QA_GEN_PREFILL, qa_generation_prompt, rewrite_prompt
from training.augment.facts import DocFacts, analyze, is_subject, with_title
from training.augment.paraphrase import paraphrase, rewrite_problem
from training.augment.records import QAPair
from training.augment.text import contains, normalize, title_core, words

MAX_ANSWER_WORDS = 12  # longer "answers" are sentences, not facts
RETRY_TEMPERATURE = 0.8  # sampling temperature of QA retries (the first try is greedy)
REWRITE_TEMPERATURE = 0.7


# ----------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------

class _StopAfterList:
    """Stop a row once its continuation closes the JSON list ("}]") or holds `max_objects` objects."""

    def __init__(self, tokenizer, prompt_len: int, max_objects: int):
        self.tokenizer, self.prompt_len, self.max_objects = tokenizer, prompt_len, max_objects

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([re.search(r"\}\s*\]", t) is not None or t.count("}") >= self.max_objects
                             for t in texts], device=input_ids.device)


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


@torch.inference_mode()
def generate_texts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int | Sequence[int],
                   do_sample: bool = False, temperature: float = 0.7, top_p: float = 0.95, batch_size: int = 8,
                   seed: int = 0, stop_after_objects: int | None = None) -> list[str]:
    """Continuations of `prompts` in left-padded batches; `max_new_tokens` may differ per prompt.

    `stop_after_objects`: end a row early once it closes a JSON list or has written that many objects.
    """
    from transformers import StoppingCriteriaList

    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    outputs: list[str] = []
    old_side = getattr(tokenizer, "padding_side", "left")
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(_device(model)) for k, v in enc.items()}
            prompt_len = enc["input_ids"].shape[1]
            kwargs = dict(max_new_tokens=max(limits[start:start + len(chunk)]), pad_token_id=tokenizer.pad_token_id,
                          num_beams=1)
            if do_sample:
                torch.manual_seed(seed + start)
                kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if stop_after_objects:
                kwargs["stopping_criteria"] = StoppingCriteriaList([_StopAfterList(tokenizer, prompt_len,
                                                                                   stop_after_objects)])
            out = model.generate(**enc, **kwargs)
            for row, limit in zip(out[:, prompt_len:], limits[start:start + len(chunk)], strict=True):
                outputs.append(tokenizer.decode(row[:limit], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return outputs


# ----------------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------------

_STR = r"\"((?:[^\"\\]|\\.)*)\""
_PAIR_RE = re.compile(rf"[\"']question[\"']\s*:\s*{_STR}\s*,*\s*[\"']answer[\"']\s*:\s*{_STR}"
                      rf"(?:\s*,*\s*[\"']full_answer[\"']\s*:\s*{_STR})?", re.DOTALL)
_LINES_RE = re.compile(r"^\s*(?:\d+[.)]\s*)?(?:Q|Question)\s*\d*\s*[:.)-]\s*(?P<q>.+?)\s*\n"
                       r"\s*(?:A|Answer)\s*\d*\s*[:.)-]\s*(?P<a>.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def _unescape(s: str) -> str:
    try:
        return json.loads(f'"{s}"')
    except json.JSONDecodeError:
        return s.replace('\\"', '"')


def _json_pairs(text: str) -> list[dict]:
    start = text.find("[")
    if start < 0:
        return []
    body = text[start:]
    candidates = [body]
    end = body.rfind("]")
    if end >= 0:
        candidates.append(body[:end + 1])
    last_obj = body.rfind("}")
    if last_obj >= 0:  # truncated list: keep the complete objects
        candidates.append(body[:last_obj + 1] + "]")
    for cand in candidates:
        try:
            data, _ = json.JSONDecoder().raw_decode(cand)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            data = [data]
        if isinstance(data, list):
            return [d for d in data if isinstance(d, dict)]
    return []


def parse_qa(generated: str, prefill: str = QA_GEN_PREFILL) -> tuple[list[dict], str]:
    """Raw {"question", "answer", "full_answer"} dicts from a generation, and how they were found.

    Tries JSON (with the pre-fill restored, repairing a truncated list), then a tolerant regex for
    "question"/"answer" fields, then "Q: ... / A: ..." lines. Returns ([], "none") if nothing parses.
    """
    text = prefill + generated
    found: list[dict] = []
    method = "none"
    for d in _json_pairs(text):
        if isinstance(d.get("question"), str) and isinstance(d.get("answer"), str | int | float):
            fa = d.get("full_answer")
            found.append({"question": d["question"], "answer": str(d["answer"]),
                          "full_answer": fa if isinstance(fa, str) else ""})
    if found:
        method = "json"
    for m in _PAIR_RE.finditer(text):
        found.append({"question": _unescape(m.group(1)), "answer": _unescape(m.group(2)),
                      "full_answer": _unescape(m.group(3) or "")})
        method = method if method != "none" else "regex"
    for m in _LINES_RE.finditer(generated):
        found.append({"question": m.group("q"), "answer": m.group("a"), "full_answer": ""})
        method = method if method != "none" else "lines"
    unique, seen = [], set()
    for d in found:
        key = (normalize(d["question"]), normalize(d["answer"]))
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique, method


def _sentence_with(facts: DocFacts, answer: str) -> str:
    return next((s for s in facts.sentences if contains(s, answer)), "")


_QUESTION_START = re.compile(r"^(?:who|whom|whose|what|which|when|where|why|how|in|on|at|from|for|by|to|is|are|was|"
                             r"were|do|does|did|has|have|had|can|could|will|would|name|list|according)\b",
                             re.IGNORECASE)


def _bad_question(question: str) -> bool:
    """Not a question, or degenerate repetition ("Abstrakt Abstrakt Abstrakk")."""
    ws = words(question)
    if not (question.rstrip().endswith("?") or _QUESTION_START.match(question)):
        return True
    return len(set(ws)) < 0.6 * len(ws) or any(a == b for a, b in zip(ws, ws[1:], strict=False))


def check_pair(document: Document, facts: DocFacts, raw: dict) -> tuple[QAPair | None, str]:
    """A grounded QAPair from a raw dict, or (None, reason) with reason in empty / bad_question /
    long_answer / ungrounded / answer_is_title / copied_question / answer_in_question."""
    question = " ".join(str(raw.get("question", "")).split())
    answer = " ".join(str(raw.get("answer", "")).split()).strip().rstrip(".")
    if len(question.split()) < 3 or not answer:
        return None, "empty"
    if _bad_question(question):
        return None, "bad_question"
    if len(answer.split()) > MAX_ANSWER_WORDS:
        return None, "long_answer"
    if not contains(document.text, answer):
        return None, "ungrounded"
    if is_subject(answer, document.title):
        return None, "answer_is_title"
    q_norm = normalize(question)
    if len(q_norm.split()) >= 4 and f" {q_norm} " in f" {normalize(document.text)} ":
        return None, "copied_question"
    subject = title_core(document.title) if document.title else ""
    question = with_title(question, document.title, subject)
    if contains(question, answer) or normalize(question) == normalize(answer):
        return None, "answer_in_question"
    full = _sentence_with(facts, answer)  # grounded; the model's own sentence only when none holds the answer
    if not full:
        model_full = " ".join(str(raw.get("full_answer", "")).split())
        full = model_full if contains(model_full, answer) else ""
    return QAPair(question=question, answer=answer, full_answer=full, source="llm"), ""


# ----------------------------------------------------------------------------------------------------------
# LLM QA and rewrites
# ----------------------------------------------------------------------------------------------------------

def llm_qa(documents: Sequence[Document], model, tokenizer, n: int = 3, max_retries: int = 2, batch_size: int = 8,
           max_new_tokens: int = 256, seed: int = 0, facts: Sequence[DocFacts] | None = None,
           ask_full_answer: bool = False) -> list[tuple[list[QAPair], list[str]]]:
    """Up to `n` grounded LLM QA pairs per document, and its failure reasons ("code: detail").

    The first attempt is greedy; each of at most `max_retries` further attempts samples, and only for the
    documents still short of `n` pairs, so there are at most (1 + max_retries) * ceil(D / batch_size)
    generate calls. `ask_full_answer` also asks for a "full_answer" sentence (confuses 135M models; by
    default the full answer is the passage sentence that holds the answer).
    """
    if n < 1 or max_retries < 0:
        raise ValueError(f"need n >= 1 and max_retries >= 0, got n={n}, max_retries={max_retries}")
    facts = list(facts) if facts is not None else [analyze(d) for d in documents]
    pairs: list[list[QAPair]] = [[] for _ in documents]
    rejected: list[Counter] = [Counter() for _ in documents]
    unparsed = [0] * len(documents)
    attempts = [0] * len(documents)
    pending = list(range(len(documents)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        prompts = [qa_generation_prompt(tokenizer, documents[i].title, documents[i].text, n, ask_full_answer)
                   for i in pending]
        outs = generate_texts(model, tokenizer, prompts, max_new_tokens, do_sample=attempt > 0,
                              temperature=RETRY_TEMPERATURE, batch_size=batch_size, seed=seed + 1000 * attempt,
                              stop_after_objects=n + 1)
        for i, out in zip(pending, outs, strict=True):
            attempts[i] += 1
            raw, _method = parse_qa(out)
            if not raw:
                unparsed[i] += 1
            seen = {normalize(p.question) for p in pairs[i]}
            for r in raw:
                qa, reason = check_pair(documents[i], facts[i], r)
                if qa is None:
                    rejected[i][reason] += 1
                elif normalize(qa.question) not in seen and len(pairs[i]) < n:
                    seen.add(normalize(qa.question))
                    pairs[i].append(qa)
        pending = [i for i in pending if len(pairs[i]) < n]
    results = []
    for i in range(len(documents)):
        failures = []
        if unparsed[i]:
            failures.append(f"llm_qa_unparsed: {unparsed[i]} of {attempts[i]} outputs had no QA pair")
        failures += [f"llm_qa_{reason}: {count} pairs dropped" for reason, count in sorted(rejected[i].items())]
        if len(pairs[i]) < n:
            failures.append(f"llm_qa_short: {len(pairs[i])}/{n} grounded pairs after {attempts[i]} attempts")
        results.append((pairs[i], failures))
    return results


def llm_rewrites(documents: Sequence[Document], model, tokenizer, n: int = 2, batch_size: int = 8,
                 max_new_tokens: int = 384, seed: int = 0, facts: Sequence[DocFacts] | None = None
                 ) -> list[tuple[list[str], list[str]]]:
    """`n` rewrites per document: sampled LLM rewrites that pass the fidelity check, else rule paraphrases.

    Returns (rewrites, failures) per document; each rejected LLM rewrite adds one failure reason.
    """
    facts = list(facts) if facts is not None else [analyze(d) for d in documents]
    if n <= 0:
        return [([], []) for _ in documents]
    prompts, limits = [], []
    for d in documents:
        p = rewrite_prompt(tokenizer, d.title, d.text)
        budget = int(1.5 * len(tokenizer(d.text, add_special_tokens=False)["input_ids"])) + 32
        prompts += [p] * n
        limits += [min(max_new_tokens, budget)] * n
    outs = generate_texts(model, tokenizer, prompts, limits, do_sample=True, temperature=REWRITE_TEMPERATURE,
                          batch_size=batch_size, seed=seed)
    results = []
    for k, (d, f) in enumerate(zip(documents, facts, strict=True)):
        accepted, failures = [], []
        for out in outs[k * n:(k + 1) * n]:
            text = " ".join(out.split())
            if text.lower().startswith(f"{d.title.lower()}:"):
                text = text[len(d.title) + 1:].strip()
            problem = rewrite_problem(f, d.text, text)
            if problem is None and text not in accepted:
                accepted.append(text)
            elif problem is not None:
                failures.append(problem)
        if len(accepted) < n:
            fallback = [p for p in paraphrase(d, n=n, seed=seed, facts=f) if p not in accepted]
            accepted += fallback[:n - len(accepted)]
        results.append((accepted, failures))
    return results
