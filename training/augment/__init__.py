"""Document augmentation for the teacher: the source of every training sequence an adapter learns from.

Rule-based by default (fact spans -> cloze, wh- and complete-the-fact questions; sentence-level
paraphrases), so it does not depend on the base model being capable. The LLM path (QA generation and
rewrites with any instruct model) is optional, checked against the passage and bounded in retries.
"""

from training.augment.cache import AUGMENT_VERSION
from training.augment.facts import DocFacts, Span, analyze, coverage, find_spans, rule_qa, rule_qa_rounds
from training.augment.llm import generate_texts, llm_qa, llm_rewrites, parse_qa
from training.augment.paraphrase import paraphrase, rewrite_problem
from training.augment.pipeline import METHODS, augment_documents, summarize
from training.augment.records import Augmentation, QAPair

__all__ = [
    "AUGMENT_VERSION", "METHODS", "Augmentation", "DocFacts", "QAPair", "Span", "analyze", "augment_documents",
    "coverage", "find_spans", "generate_texts", "llm_qa", "llm_rewrites", "paraphrase", "parse_qa",
    "rewrite_problem", "rule_qa", "rule_qa_rounds", "summarize",
]
