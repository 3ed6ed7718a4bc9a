"""Invented key-value documents whose answers cannot be guessed: the specificity benchmark's data.

Each document describes one invented object (a vault, a beacon, a ledger, ...) with three or four facts
drawn from five keys: an access code ("KX-417"), a count, a village, a keeper and a password word. Every
value is invented per document (codes and numbers at random, names from syllables), so no adapter that
was not built from the document itself can produce them: another document's adapter, or one shared
answer-format adapter, scores zero. Several sentence templates state each fact and the questions are
worded differently from all of them. The same (n, seed) always gives the same documents.

    python -m hyperprag.demo.keyvalue OUT_DIR --n 3000 --seed 0
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from pathlib import Path

from hyperprag.core.data import Document, Passage, Question
from hyperprag.demo.synth import Fact, Namer, generate_documents, generator_main, write_documents

OBJECTS = ["vault", "beacon", "ledger", "archive", "lodge", "observatory", "signal tower", "strongroom",
           "depot", "library", "cistern", "lighthouse"]


def _code(r: random.Random, n: Namer) -> str:
    letters = "".join(r.choice(string.ascii_uppercase) for _ in range(2))
    return f"{letters}-{r.randint(100, 999)}"


def _number(r: random.Random, n: Namer) -> str:
    return str(r.randint(1000, 9999))


def _village(r: random.Random, n: Namer) -> str:
    return n.place()


def _keeper(r: random.Random, n: Namer) -> str:
    return n.person()


def _word(r: random.Random, n: Namer) -> str:
    return n.word(2, 3).lower()


F = Fact
KEYS: tuple[Fact, ...] = (
    F("code", _code,
      ("The access code of {name} is {v}.", "{Name} opens only when the code {v} is entered.",
       "To get into {name} a visitor types {v}."),
      ("What code gives access to {name}?", "Which code must be entered to open {name}?")),
    F("count", _number,
      ("{Name} holds exactly {v} sealed boxes.", "Inside {name} there are {v} sealed boxes.",
       "The inventory of {name} lists {v} sealed boxes."),
      ("How many sealed boxes are kept in {name}?", "What number of sealed boxes does {name} contain?")),
    F("village", _village,
      ("{Name} stands at the edge of the village of {v}.", "{Name} was built in the village of {v}.",
       "Travellers find {name} in the village of {v}."),
      ("In which village is {name} located?", "Near what village can {name} be found?")),
    F("keeper", _keeper,
      ("The keeper of {name} is {v}.", "{Name} is looked after by {v}.", "{V} holds the keys to {name}."),
      ("Who is in charge of {name}?", "Which person keeps {name}?")),
    F("password", _word,
      ("The night password at {name} is {v}.", "Guards at {name} answer to the password {v}.",
       "Anyone entering {name} after dark must say {v}."),
      ("What password is used at {name} after dark?", "Which word lets someone into {name} at night?")),
)


def _fill(template: str, name: str, v: str) -> str:
    text = template.format(name=name, Name=name[0].upper() + name[1:], v=v, V=v[:1].upper() + v[1:])
    return text[0].upper() + text[1:]


def _object_name(r: random.Random, n: Namer) -> str:
    return f"the {n.word(2, 3)} {r.choice(OBJECTS)}"


def _one(rng: random.Random, namer: Namer, index: int, seed: int,
         name: Callable[[random.Random, Namer], str] = _object_name) -> tuple[Document, list[Question]]:
    title_name = namer.unique(lambda: name(rng, namer))
    facts = rng.sample(KEYS, rng.randint(3, 4))
    values, sentences = {}, []
    for fact in facts:
        v = fact.value(rng, namer)
        values[fact.key] = v
        sentences.append(_fill(rng.choice(fact.sentences), title_name, v))
    title = title_name.removeprefix("the ")
    doc = Document(id=f"kv-{seed}-{index:05d}", title=title[0].upper() + title[1:], text=" ".join(sentences))
    passage = Passage(doc.title, doc.text, supporting=True)
    questions = [Question(id=f"{doc.id}-q{j}", question=_fill(rng.choice(f.questions), title_name, ""),
                          answers=[values[f.key]], dataset="keyvalue", type=f"kv:{f.key}", passages=[passage])
                 for j, f in enumerate(facts, 1)]
    return doc, questions


def generate_keyvalue(n: int, seed: int = 0) -> tuple[list[Document], list[Question]]:
    """`n` key-value documents (distinct names) and one question per fact; same (n, seed), same output."""
    return generate_documents(_one, n, seed)


def write_keyvalue(out_dir: str | Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Write corpus.jsonl and questions.jsonl of `generate_keyvalue(n, seed)` into `out_dir`, atomically."""
    return write_documents(out_dir, *generate_keyvalue(n, seed))


def main(argv: list[str] | None = None) -> None:
    generator_main(__doc__.splitlines()[0], write_keyvalue, 3000, argv)


if __name__ == "__main__":
    main()
