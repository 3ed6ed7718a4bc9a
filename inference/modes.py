"""The answering modes, defined once: the command line's choices, the ablation grid's methods and the
answerer's dispatch all read them from here (a light module: no torch, so `hyperprag --help` stays fast).

| mode          | passages in prompt | adapters applied                                   |
|---------------|--------------------|----------------------------------------------------|
| vanilla       | no                 | none                                               |
| rag           | top-k              | none                                               |
| prag          | no                 | teacher LoRAs of the top-k documents, composed     |
| prag-combine  | top-k              | teacher LoRAs of the top-k documents, composed     |
| hyper         | no                 | hypernetwork LoRAs of the top-k documents          |
| hyper-combine | top-k              | hypernetwork LoRAs of the top-k documents          |
"""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["vanilla", "rag", "prag", "prag-combine", "hyper", "hyper-combine"]
MODES: tuple[str, ...] = get_args(Mode)
PASSAGE_MODES = frozenset({"rag", "prag-combine", "hyper-combine"})
"""Modes that put the top-k passages into the prompt."""
TEACHER_MODES = ("prag", "prag-combine")
"""Modes that apply teacher LoRAs (an adapter store from `hyperprag teach`)."""
HYPER_MODES = ("hyper", "hyper-combine")
"""Modes that apply generated adapters (a hypernetwork, or a store from `hyperprag parameterize`)."""
ADAPTER_MODES = TEACHER_MODES + HYPER_MODES


McqScoring = Literal["generate", "likelihood", "calibrated"]
MCQ_SCORING: tuple[str, ...] = get_args(McqScoring)
"""How a multiple-choice question is answered: generate (greedy text, the letter read off it) | likelihood
(each option's text scored as the answer's continuation, per token; lm-evaluation-harness's way) |
calibrated (likelihood minus the same option's likelihood after a content-free question, "N/A", with the
same options and no passages or adapter: the domain-conditional PMI of Holtzman et al. 2021, which removes
the model's prior for an option's wording)."""


def check_mode(mode: str) -> str:
    """`mode` if it is one of MODES, else a ValueError listing them."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    return mode
