"""Deterministic generator of invented encyclopedia-style documents with questions, for training hypernetworks.

Each document describes one invented entity (person, town, company, species, invention, ship, festival,
river, sports club); the default 'short' style states 3-5 facts, one sentence each. Names are built from
syllables, so the base model cannot know them; every answer is a short span copied from the text, and
questions are worded differently from the sentence that states the fact. The same (n, seed, style) always
gives the same documents. The 'prose' style writes longer passages closer to real text: every fact, the
entity often named as "the town" or by surname, joined sentences and an unaskable one, so a hypernetwork
must resolve which entity a sentence is about.

    python -m hyperprag.demo.synth OUT_DIR --n 2000 --seed 0 [--style prose]
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hyperprag.core.data import Document, Passage, Question, write_jsonl

# ---- name parts -------------------------------------------------------------------------------------------
ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "qu", "r", "s", "sk", "t",
          "th", "tr", "v", "w", "z", "", ""]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "y"]
CODAS = ["", "", "", "l", "n", "r", "s", "th", "nd", "rk", "ll", "m", "st", "v"]
PLACE_SUFFIXES = ["ford", "by", "mere", "wick", "holm", "dale", "haven", "ton", "stead", "moor", "bridge", "combe"]
FIRST_ENDINGS_F = ["a", "ina", "ette", "ia", "elle", "ora"]
FIRST_ENDINGS_M = ["o", "an", "ert", "is", "el", "ric"]
SURNAME_ENDINGS = ["son", "ley", "ard", "ick", "mont", "berg", "ov", "ell", "ane", "ott"]

COLOURS = ["red", "blue", "green", "yellow", "orange", "purple", "violet", "grey", "white", "black", "brown",
           "pink", "crimson", "amber", "turquoise", "silver", "golden", "maroon", "navy blue", "pale green"]
MATERIALS = ["oak", "brass", "copper", "granite", "cast iron", "glass", "walnut", "slate", "bronze", "steel",
             "marble", "pine", "limestone", "tin", "ivory", "birch"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
OCCUPATIONS = ["painter", "composer", "astronomer", "architect", "chemist", "glassblower", "sculptor", "poet",
               "cartographer", "clockmaker", "botanist", "engineer", "novelist", "violinist", "chef"]
PRODUCTS = ["barometers", "bicycles", "biscuits", "wool blankets", "pocket watches", "ceramic tiles", "rope",
            "paper", "pianos", "umbrellas", "candles", "fishing nets", "lanterns", "wooden toys", "soap"]
GOODS = ["cheese", "wool", "salt", "honey", "cider", "linen", "pottery", "lace", "timber", "apples"]
FOODS = ["beetles", "snails", "seeds", "berries", "small fish", "moss", "clover", "grasshoppers", "shrimp"]
ANIMALS = ["moth", "vole", "tern", "beetle", "lizard", "frog", "owl", "carp", "shrew", "finch", "snail", "bat"]
ANIMAL_HOMES = ["island", "valley", "forest", "marsh", "plateau"]
SPORTS = ["rugby", "football", "hockey", "rowing", "cricket", "basketball", "handball", "polo"]
NICK_ANIMALS = ["Herons", "Otters", "Foxes", "Falcons", "Badgers", "Wolves", "Stags", "Ravens", "Hares", "Kites"]
PRIZES = ["silver cup", "copper bell", "brass lantern", "wooden spoon", "silver ladle", "gold ribbon",
          "bronze medal", "carved staff"]
SHIP_TYPES = ["schooner", "steamship", "ferry", "icebreaker", "tea clipper", "research ship", "paddle steamer"]
FISH = ["eels", "trout", "salmon", "pike", "perch", "grayling"]
WORK_ADJ = ["Silver", "Quiet", "Northern", "Broken", "Crimson", "Last", "Hollow", "Winter", "Golden", "Distant"]
WORK_NOUN = ["Fox", "Harbour", "Lantern", "Orchard", "Tide", "Garden", "Bell", "Road", "Mirror", "Meadow"]
LANDFORMS = ["Hills", "Valley", "Plain", "Mountains", "Coast", "Highlands"]


@dataclass(frozen=True)
class Fact:
    """One askable fact kind: how to draw its value, state it, and ask about it."""

    key: str
    value: Callable[[random.Random, Namer], str]  # the answer span, copied verbatim into the text
    sentences: tuple[str, ...]  # templates with {name} and {v}; one is drawn per document
    questions: tuple[str, ...]  # templates with {name}; worded differently from every sentence template


class Namer:
    """Invented names from syllables; `unique` names are never repeated within one generator run."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def stem(self, syllables: int) -> str:
        r = self.rng
        return "".join(r.choice(ONSETS) + r.choice(VOWELS) + r.choice(CODAS) for _ in range(syllables))

    def word(self, lo: int = 2, hi: int = 3) -> str:
        while True:
            w = self.stem(self.rng.randint(lo, hi))
            if 4 <= len(w) <= 11:
                return w.capitalize()

    def place(self) -> str:
        return (self.stem(self.rng.randint(1, 2)) + self.rng.choice(PLACE_SUFFIXES)).capitalize()

    def person(self) -> str:
        first = self.stem(1) + self.rng.choice(FIRST_ENDINGS_F + FIRST_ENDINGS_M)
        last = self.stem(self.rng.randint(1, 2)) + self.rng.choice(SURNAME_ENDINGS)
        return f"{first.capitalize()} {last.capitalize()}"

    def unique(self, make: Callable[[], str]) -> str:
        for _ in range(1000):
            name = make()
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("could not draw a fresh name; the name space is exhausted")


def _year(lo: int, hi: int) -> Callable[[random.Random, Namer], str]:
    return lambda r, n: str(r.randint(lo, hi))


def _count(lo: int, hi: int, unit: str = "", step: int = 1) -> Callable[[random.Random, Namer], str]:
    return lambda r, n: f"{r.randrange(lo, hi, step):,}" + (f" {unit}" if unit else "")


def _pick(options: list[str]) -> Callable[[random.Random, Namer], str]:
    return lambda r, n: r.choice(options)


def _work(r: random.Random, n: Namer) -> str:
    return f"The {r.choice(WORK_ADJ)} {r.choice(WORK_NOUN)}"


def _region(r: random.Random, n: Namer) -> str:
    return f"{n.word(2, 2)} {r.choice(LANDFORMS)}"


def _place(r: random.Random, n: Namer) -> str:
    return n.place()


def _person(r: random.Random, n: Namer) -> str:
    return n.person()


@dataclass(frozen=True)
class Kind:
    """An entity kind: how its name is made, its opening sentence (always a fact), and its other facts."""

    name: Callable[[Namer], str]
    intro: Fact
    facts: tuple[Fact, ...]


F = Fact
KINDS: dict[str, Kind] = {
    "person": Kind(
        name=lambda n: n.person(),
        intro=F("occupation", _pick(OCCUPATIONS),
                ("{name} was a {v} from a small village.", "{name} is remembered as a {v}.",
                 "{name} spent a whole career as a {v}."),
                ("What was the profession of {name}?", "What kind of work did {name} do?")),
        facts=(
            F("birth_year", _year(1700, 1990),
              ("{name} was born in {v}.", "Born in {v}, {name} was the eldest of four children."),
              ("In what year did {name} come into the world?", "When was {name} born?")),
            F("hometown", _place,
              ("{name} grew up in the town of {v}.", "The family of {name} lived in {v}."),
              ("Which town was the childhood home of {name}?", "Where did {name} spend their childhood?")),
            F("work", _work,
              ("The best-known work of {name} is called {v}.", "{name} became famous for a work titled {v}."),
              ("What is the most famous work by {name}?", "Which work made {name} well known?")),
            F("award", lambda r, n: f"{n.word(2, 2)} Prize",
              ("In later life {name} received the {v}.", "{name} was awarded the {v} for a lifetime of work."),
              ("Which prize was given to {name}?", "What honour did {name} win?")),
            F("teacher", _person,
              ("{name} was trained by {v}.", "As a student, {name} learned from {v}."),
              ("Who taught {name}?", "Under whom did {name} study?")),
        )),
    "town": Kind(
        name=lambda n: n.place(),
        intro=F("region", _region,
                ("{name} is a market town in the {v}.", "The town of {name} lies in the {v}."),
                ("In what region is {name} situated?", "Where is the town of {name} located?")),
        facts=(
            F("population", _count(800, 90000, step=100),
              ("{name} has about {v} inhabitants.", "Around {v} people live in {name} today."),
              ("What is the population of {name}?", "How many residents does {name} have?")),
            F("founded", _year(900, 1800),
              ("{name} was founded in {v}.", "The first houses of {name} were built in {v}."),
              ("When was {name} established?", "In what year did {name} come into being?")),
            F("river", lambda r, n: f"{n.word(2, 2)} River",
              ("{name} stands on the banks of the {v}.", "The {v} flows through the middle of {name}."),
              ("Which river runs through {name}?", "On what river is {name} built?")),
            F("good", _pick(GOODS),
              ("{name} is known for its {v}.", "For centuries {name} has been famous for {v}."),
              ("What product is {name} famous for?", "What does {name} have a reputation for making?")),
            F("market_day", _pick(WEEKDAYS),
              ("A market is held in {name} every {v}.", "Every {v} the square of {name} fills with stalls."),
              ("On which day of the week is market day in {name}?", "When does {name} hold its weekly market?")),
        )),
    "company": Kind(
        name=lambda n: f"{n.word(2, 3)} {n.rng.choice(['Works', 'Company', 'Brothers', 'Instruments', 'Mills'])}",
        intro=F("product", _pick(PRODUCTS),
                ("{name} is a company that makes {v}.", "{name} is a maker of {v}."),
                ("What does {name} produce?", "What goods are manufactured by {name}?")),
        facts=(
            F("founded", _year(1750, 2010),
              ("{name} was founded in {v}.", "{name} opened its first workshop in {v}."),
              ("When was {name} started?", "In what year did {name} begin trading?")),
            F("founder", _person,
              ("The company was started by {v}.", "{name} was set up by {v}."),
              ("Who founded {name}?", "Which person established {name}?")),
            F("city", _place,
              ("{name} has its headquarters in {v}.", "The main factory of {name} is in {v}."),
              ("Where is {name} based?", "In which town is {name} headquartered?")),
            F("employees", _count(20, 9000, "people"),
              ("{name} employs {v}.", "Today {name} has a staff of {v}."),
              ("How many workers does {name} have?", "What is the size of the workforce at {name}?")),
            F("logo", _pick(COLOURS),
              ("The logo of {name} is {v}.", "{name} packs its goods in {v} boxes."),
              ("What colour is used for the branding of {name}?", "Which colour is {name} known for?")),
        )),
    "species": Kind(
        name=lambda n: f"{n.word(2, 2)} {n.rng.choice(ANIMALS)}",
        intro=F("home", lambda r, n: f"{n.word(2, 2)} {r.choice(ANIMAL_HOMES).capitalize()}",
                ("The {name} is an animal found only in the {v}.", "The {name} lives in the {v}."),
                ("Where does the {name} live?", "In what habitat is the {name} found?")),
        facts=(
            F("colour", _pick(COLOURS),
              ("The {name} is {v} in colour.", "Adults of the {name} have {v} markings."),
              ("What colour is the {name}?", "What is the colouring of the {name}?")),
            F("length", _count(2, 90, "centimetres"),
              ("The {name} grows to {v} long.", "An adult {name} measures {v}."),
              ("How long is the {name}?", "What size does the {name} reach?")),
            F("food", _pick(FOODS),
              ("The {name} feeds mainly on {v}.", "The diet of the {name} is made up of {v}."),
              ("What does the {name} eat?", "What is the main food of the {name}?")),
            F("discoverer", _person,
              ("The {name} was first described by {v}.", "The naturalist {v} discovered the {name}."),
              ("Who first described the {name}?", "Which naturalist found the {name}?")),
            F("discovered", _year(1750, 2015),
              ("The {name} was first recorded in {v}.", "Scientists first saw the {name} in {v}."),
              ("In what year was the {name} discovered?", "When was the {name} first noted?")),
        )),
    "invention": Kind(
        name=lambda n: f"{n.word(2, 3)} {n.rng.choice(['lamp', 'loom', 'press', 'stove', 'pump', 'calculator'])}",
        intro=F("inventor", _person,
                ("The {name} was invented by {v}.", "The {name} is a machine designed by {v}."),
                ("Who invented the {name}?", "Who was the designer of the {name}?")),
        facts=(
            F("year", _year(1650, 1990),
              ("The {name} was patented in {v}.", "The first {name} was built in {v}."),
              ("When was the {name} invented?", "In what year did the {name} appear?")),
            F("material", _pick(MATERIALS),
              ("The body of the {name} is made of {v}.", "Each {name} was built from {v}."),
              ("What material is the {name} made from?", "Out of what was the {name} constructed?")),
            F("first_use", _place,
              ("The {name} was first used in {v}.", "The first town to use the {name} was {v}."),
              ("Where was the {name} first put to use?", "In which town did the {name} first see service?")),
            F("made", _count(10, 50000, step=10),
              ("About {v} copies of the {name} were made.", "In total {v} units of the {name} were built."),
              ("What was the total production run of the {name}?", "How many {name}s were manufactured?")),
            F("museum", lambda r, n: f"{n.place()} Museum",
              ("An original {name} can be seen at the {v}.", "The last working {name} is kept at the {v}."),
              ("Where can an original {name} be viewed today?", "Which museum holds a {name}?")),
        )),
    "ship": Kind(
        name=lambda n: f"the {n.word(2, 3)}",
        intro=F("type", _pick(SHIP_TYPES),
                ("{Name} was a {v} with a crew of forty.", "{Name} was a famous {v}."),
                ("What kind of vessel was {name}?", "What type of ship was {name}?")),
        facts=(
            F("launched", _year(1700, 2000),
              ("{Name} was launched in {v}.", "{Name} first went to sea in {v}."),
              ("When was {name} launched?", "In what year did {name} take to the water?")),
            F("shipyard", lambda r, n: f"{n.word(2, 2)} shipyard",
              ("{Name} was built at the {v}.", "The {v} built {name}."),
              ("Which shipyard built {name}?", "Where was {name} constructed?")),
            F("length", _count(20, 300, "metres"),
              ("{Name} was {v} long.", "The hull of {name} measured {v}."),
              ("How long was {name}?", "What was the length of {name}?")),
            F("hull", _pick(COLOURS),
              ("The hull of {name} was painted {v}.", "{Name} had a {v} hull."),
              ("What colour was the hull of {name}?", "What colour was {name} painted?")),
            F("home_port", _place,
              ("{Name} sailed from the port of {v}.", "The home port of {name} was {v}."),
              ("Which port was {name} based in?", "From what port did {name} operate?")),
        )),
    "festival": Kind(
        name=lambda n: f"{n.place()} {n.rng.choice(['Lantern Fair', 'Harvest Feast', 'Kite Day', 'Snow Fair'])}",
        intro=F("month", _pick(MONTHS),
                ("The {name} is held every {v}.", "Each year in {v} the {name} takes place."),
                ("In which month is the {name} celebrated?", "When in the year does the {name} happen?")),
        facts=(
            F("founded", _year(1500, 2010),
              ("The {name} was first held in {v}.", "The {name} began in {v}."),
              ("When did the {name} start?", "In what year was the first {name}?")),
            F("prize", _pick(PRIZES),
              ("The winner of the main contest at the {name} receives a {v}.",
               "At the {name} the best entry wins a {v}."),
              ("What prize is given at the {name}?", "What do winners get at the {name}?")),
            F("visitors", _count(500, 90000, step=100),
              ("About {v} visitors come to the {name}.", "The {name} draws around {v} guests."),
              ("How many people attend the {name}?", "How large is the crowd at the {name}?")),
            F("colour", _pick(COLOURS),
              ("The colour of the {name} is {v}.", "Decorations at the {name} are always {v}."),
              ("What colour is associated with the {name}?", "Which colour are the {name} decorations?")),
            F("founder", _person,
              ("The {name} was started by {v}.", "{v} organised the first {name}."),
              ("Who founded the {name}?", "Who set up the {name}?")),
        )),
    "river": Kind(
        name=lambda n: f"{n.word(2, 2)} River",
        intro=F("source", lambda r, n: f"Mount {n.word(2, 2)}",
                ("The {name} rises on {v}.", "The source of the {name} is on {v}."),
                ("Where does the {name} begin?", "On which mountain does the {name} rise?")),
        facts=(
            F("length", _count(10, 900, "kilometres"),
              ("The {name} is {v} long.", "The {name} runs for {v}."),
              ("How long is the {name}?", "What is the length of the {name}?")),
            F("mouth", lambda r, n: f"{n.word(2, 2)} Bay",
              ("The {name} flows into {v}.", "The {name} reaches the sea at {v}."),
              ("Where does the {name} end?", "Into what body of water does the {name} empty?")),
            F("city", _place,
              ("The largest town on the {name} is {v}.", "The {name} passes through the town of {v}."),
              ("Which town lies on the {name}?", "What town does the {name} flow through?")),
            F("fish", _pick(FISH),
              ("The {name} is known for its {v}.", "Anglers come to the {name} to catch {v}."),
              ("What fish is the {name} famous for?", "Which fish live in the {name}?")),
            F("bridges", _count(2, 60),
              ("There are {v} bridges over the {name}.", "The {name} is crossed by {v} bridges."),
              ("How many bridges span the {name}?", "How many crossings does the {name} have?")),
        )),
    "club": Kind(
        name=lambda n: f"{n.place()} {n.rng.choice(['Rovers', 'Athletic', 'Wanderers', 'United', 'Club'])}",
        intro=F("sport", _pick(SPORTS),
                ("{name} is a {v} club.", "{name} is a team that plays {v}."),
                ("What sport does {name} play?", "In which sport does {name} compete?")),
        facts=(
            F("founded", _year(1850, 2010),
              ("{name} was founded in {v}.", "{name} played its first match in {v}."),
              ("When was {name} formed?", "In what year was {name} started?")),
            F("ground", lambda r, n: f"{n.word(2, 2)} Park",
              ("{name} plays its home games at {v}.", "The home ground of {name} is {v}."),
              ("Where does {name} play at home?", "What is the name of the stadium of {name}?")),
            F("nickname", _pick(NICK_ANIMALS),
              ("{name} is nicknamed the {v}.", "Fans call {name} the {v}."),
              ("What is the nickname of {name}?", "By what name do supporters know {name}?")),
            F("colours", _pick(COLOURS),
              ("{name} plays in {v} shirts.", "The team colour of {name} is {v}."),
              ("What colour shirts does {name} wear?", "What colour is the kit of {name}?")),
            F("capacity", _count(500, 60000, "spectators", step=100),
              ("The ground of {name} holds {v}.", "Up to {v} can watch {name} at home."),
              ("How many fans fit in the ground of {name}?", "What is the capacity of the stadium of {name}?")),
        )),
}


def _fill(template: str, name: str, v: str) -> str:
    text = template.format(name=name, Name=name[0].upper() + name[1:], v=v)
    return text[0].upper() + text[1:]


def _title(name: str) -> str:
    return name.removeprefix("the ").removeprefix("The ")


def _one(rng: random.Random, namer: Namer, index: int, seed: int) -> tuple[Document, list[Question]]:
    kind_name = rng.choice(sorted(KINDS))
    kind = KINDS[kind_name]
    name = namer.unique(lambda: kind.name(namer))
    facts = [kind.intro, *rng.sample(kind.facts, rng.randint(2, 4))]  # 3-5 sentences
    values, sentences = {}, []
    for fact in facts:
        v = fact.value(rng, namer)
        while any(v == u for u in values.values()):  # answers within a document must differ
            v = fact.value(rng, namer)
        values[fact.key] = v
        sentences.append(_fill(rng.choice(fact.sentences), name, v))
    return _with_questions(rng, Document(id=f"synth-{seed}-{index:05d}", title=_title(name), text=" ".join(sentences)),
                           name, kind_name, facts, values, asked=(2, 3))


def _with_questions(rng: random.Random, doc: Document, name: str, kind_name: str, facts: list[Fact],
                    values: dict[str, str], asked: tuple[int, int]) -> tuple[Document, list[Question]]:
    """`doc` and questions about a random asked[0]..asked[1] of its facts, each naming the entity in full."""
    passage = Passage(doc.title, doc.text, supporting=True)
    chosen = rng.sample(facts, rng.randint(*asked))
    return doc, [Question(id=f"{doc.id}-q{j}", question=_fill(rng.choice(f.questions), name, ""),
                          answers=[values[f.key]], dataset="synth", type=f"{kind_name}:{f.key}",
                          passages=[passage]) for j, f in enumerate(chosen, 1)]


# ---- prose: longer documents that refer back to their entity, as written text does ------------------------
# How a later sentence names the entity: kinds whose templates say "the {name}" take a bare noun.
REFERENTS: dict[str, Callable[[str], str]] = {
    "person": lambda name: name.split()[-1],  # the surname
    "town": lambda name: "the town",
    "company": lambda name: "the company",
    "species": lambda name: name.split()[-1],  # "the {name}" -> "the moth"
    "invention": lambda name: name.split()[-1],  # "the {name}" -> "the loom"
    "ship": lambda name: "the ship",
    "festival": lambda name: "festival",
    "river": lambda name: "river",
    "club": lambda name: "the club",
}
# Sentences that state nothing askable: passages carry more than their facts.
FILLERS = ("Little is written about its early years.", "Local records from that time are incomplete.",
           "Its story is told in a short booklet sold in the area.", "Not everyone agrees on every detail.",
           "A small plaque tells visitors about it.", "Its history was written down much later.")
JOINABLE = {"the", "a", "an", "each", "every", "around", "about", "in", "as", "born", "for", "fans", "up",
            "today", "scientists", "adults", "decorations", "anglers", "there"}  # may start a joined clause


def _join(first: str, second: str) -> str:
    """Two sentences as one, lower-casing the second's first word where it is not a name."""
    word = second.split()[0]
    if word.lower() in JOINABLE:
        second = word.lower() + second[len(word):]
    return f"{first[:-1]}, and {second}"


def _one_prose(rng: random.Random, namer: Namer, index: int, seed: int) -> tuple[Document, list[Question]]:
    """A 5-8 sentence document: every fact of its kind, later ones often naming the entity as "the town" or
    by surname, some joined into one sentence, one unaskable sentence; 3-4 questions name it in full."""
    kind_name = rng.choice(sorted(KINDS))
    kind = KINDS[kind_name]
    name = namer.unique(lambda: kind.name(namer))
    referent = REFERENTS[kind_name](name)
    facts = [kind.intro, *rng.sample(kind.facts, len(kind.facts))]
    values, sentences = {}, []
    for i, fact in enumerate(facts):
        v = fact.value(rng, namer)
        while any(v == u for u in values.values()) or v == referent:
            v = fact.value(rng, namer)
        values[fact.key] = v
        sentences.append(_fill(rng.choice(fact.sentences), referent if i and rng.random() < 0.6 else name, v))
    for i in range(len(sentences) - 2, 0, -1):  # never the opening sentence, which introduces the entity
        if rng.random() < 0.25:
            sentences[i:i + 2] = [_join(sentences[i], sentences[i + 1])]
    if rng.random() < 0.6:
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(FILLERS))
    return _with_questions(rng, Document(id=f"prose-{seed}-{index:05d}", title=_title(name), text=" ".join(sentences)),
                           name, kind_name, facts, values, asked=(3, 4))


STYLES = {"short": _one, "prose": _one_prose}
"""Document styles: 'short' states 3-5 facts, each naming the entity in full; 'prose' states every fact and
names the entity back as "the town" or by surname (_one_prose)."""

DocumentMaker = Callable[[random.Random, Namer, int, int], tuple[Document, list[Question]]]
"""(rng, namer, index, seed) -> one invented document and its questions."""


def generate_documents(make: DocumentMaker, n: int, seed: int) -> tuple[list[Document], list[Question]]:
    """`n` documents from `make` with one random stream and one namer (distinct names); deterministic."""
    rng = random.Random(seed)
    namer = Namer(rng)
    docs, questions = [], []
    for i in range(n):
        doc, qs = make(rng, namer, i, seed)
        docs.append(doc)
        questions.extend(qs)
    return docs, questions


def write_documents(out_dir: str | Path, docs: list[Document], questions: list[Question]) -> tuple[Path, Path]:
    """Write corpus.jsonl and questions.jsonl into `out_dir`, atomically; returns their paths."""
    out = Path(out_dir)
    corpus_path, questions_path = out / "corpus.jsonl", out / "questions.jsonl"
    write_jsonl(corpus_path, docs)
    write_jsonl(questions_path, questions)
    return corpus_path, questions_path


def generator_main(description: str, write: Callable[..., tuple[Path, Path]], default_n: int,
                   argv: list[str] | None = None, styles: tuple[str, ...] = ()) -> None:
    """The command line of a document generator: OUT_DIR --n --seed [--style], printing the files written."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("out_dir")
    p.add_argument("--n", type=int, default=default_n)
    p.add_argument("--seed", type=int, default=0)
    if styles:
        p.add_argument("--style", choices=styles, default=styles[0], help="how documents are written")
    a = p.parse_args(argv)
    for path in write(a.out_dir, a.n, a.seed, **({"style": a.style} if styles else {})):
        print(path)


def generate_synthetic(n: int, seed: int = 0, style: str = "short") -> tuple[list[Document], list[Question]]:
    """`n` invented documents (distinct titles) with their questions; same (n, seed, style), same output."""
    if style not in STYLES:
        raise ValueError(f"style {style!r} is not one of {sorted(STYLES)}")
    return generate_documents(STYLES[style], n, seed)


def write_synthetic(out_dir: str | Path, n: int, seed: int = 0, style: str = "short") -> tuple[Path, Path]:
    """Write corpus.jsonl and questions.jsonl for `generate_synthetic(n, seed, style)` into `out_dir`, atomically."""
    return write_documents(out_dir, *generate_synthetic(n, seed, style))


def main(argv: list[str] | None = None) -> None:
    generator_main(__doc__.splitlines()[0], write_synthetic, 2000, argv, styles=tuple(STYLES))


if __name__ == "__main__":
    main()
