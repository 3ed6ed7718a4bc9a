"""The Python API: a base model and its hypernetwork in one object; documents in, adapters and answers out.

    from hyperprag import HyperPRAG

    hp = HyperPRAG.load("smollm2-135m", hypernet="runs/hypernet/export")
    adapters = hp.parameterize(["Zorvath is a town on the Kell river. It was founded in 1841."])
    hp.answer(["When was Zorvath founded?"], documents=["Zorvath is a town ..."], mode="hyper")
    hp.export_peft(next(iter(adapters)), "zorvath-lora")   # loads with peft.PeftModel.from_pretrained

A thin layer over hyperprag.session, inference.answer.Answerer, inference.parameterize and
hyperprag.core.peft_io: answering, composition, generation and the file formats all live there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hyperprag.core.data import Document, Question, content_hash
from hyperprag.core.lora import LoraSpec, LoraWeights
from hyperprag.core.models import DEFAULT_MODEL, EMBEDDED, load_base_model, model_id, resolve_model_path

DocumentLike = Document | str
QuestionLike = Question | str


def as_document(doc: DocumentLike) -> Document:
    """A Document; a bare string gets its content hash as id, so the same text always has the same id."""
    if isinstance(doc, Document):
        return doc
    if not isinstance(doc, str):
        raise TypeError(f"a document must be a hyperprag Document or a string, got {type(doc).__name__}")
    return Document(content_hash("", doc), "", doc)


def as_question(q: QuestionLike, i: int) -> Question:
    if isinstance(q, Question):
        return q
    if not isinstance(q, str):
        raise TypeError(f"a question must be a hyperprag Question or a string, got {type(q).__name__}")
    return Question(f"q{i}", q, [""])


class HyperPRAG:
    """A base model with its hypernetwork (and optionally an adapter store), ready to parameterize and answer."""

    def __init__(self, model, tokenizer, hypernet=None, encoder=None, store=None, max_new_tokens: int = 20,
                 batch_size: int = 8, composition: str = "cat", mcq_scoring: str = "generate"):
        """`hypernet`: a LoadedHypernet with its `encoder`; `store`: an open AdapterStore; the rest go to Answerer."""
        from inference.parameterize import OnTheFlySource
        from inference.sources import StoreSource

        self.model, self.tokenizer = model, tokenizer
        self.hypernet, self.encoder = hypernet, encoder
        self.max_new_tokens, self.batch_size, self.composition = max_new_tokens, batch_size, composition
        self.mcq_scoring = mcq_scoring  # multiple choice: generate | likelihood (inference/modes.py)
        self.documents: dict[str, Document] = {}  # every document seen, by id (passages and on-the-fly adapters)
        generated = store is not None and (store.settings or {}).get("source") == "hypernet"
        self.teacher = None if store is None or generated else store  # teacher LoRAs: prag modes
        self._on_the_fly = None if hypernet is None else OnTheFlySource(hypernet, encoder, self.documents)
        # hyper modes: the generated store's adapter of a document (by id or content), else one made on the fly
        self._hyper = StoreSource(store, self.documents, on_missing=self._on_the_fly or "raise") if generated \
            else self._on_the_fly

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, hypernet: str | Path | None = None, store: str | Path | None = None,
             dtype: str = "float32", device: str = "cpu", **kwargs) -> HyperPRAG:
        """Base model (embedded name, folder or hub id) + trained hypernetwork (+ adapter store) in one call.

        `hypernet=None` takes the checkpoint shipped for an embedded model, if there is one. `store` is a
        teacher store (prag modes) or a generated one (`hyperprag parameterize`, hyper modes); a generated
        store passed as `hypernet` is taken as `store`, as the CLI does. `kwargs`: max_new_tokens,
        batch_size, composition, mcq_scoring (see __init__).
        """
        from hyperprag.pipeline import shipped_checkpoint
        from inference.parameterize import load_for_model

        path = hypernet
        if path is not None and (Path(path) / "manifest.json").exists():  # an adapter store, not a network
            if store is not None:
                raise ValueError(f"hypernet={path} is an adapter store and store={store} is given too")
            store, path = path, None
        elif path is None and model in EMBEDDED:  # shipped checkpoints exist only for embedded models
            path = shipped_checkpoint(model)
        base, tokenizer = load_base_model(model, dtype=dtype, device=device)
        hyper = encoder = None
        if path is not None:
            hyper, encoder = load_for_model(path, base, tokenizer)
            hyper.model.to(device)
        st = None
        if store is not None:
            from hyperprag.core.store import AdapterStore

            st = AdapterStore.open(store, expect_base_model=model_id(base))
        return cls(base, tokenizer, hyper, encoder, st, **kwargs)

    @property
    def spec(self) -> LoraSpec:
        """The LoRA layout of this model's adapters (hypernetwork's, else the store's)."""
        if self.hypernet is not None:
            return self.hypernet.spec
        if self.teacher is not None:
            return self.teacher.spec
        if self._hyper is not None:
            return self._hyper.spec
        raise ValueError("no hypernetwork or adapter store is loaded, so there is no LoRA spec")

    def _add(self, documents: Sequence[DocumentLike]) -> list[Document]:
        docs = [as_document(d) for d in documents]
        for d in docs:
            old = self.documents.get(d.id)
            if old is not None and old.content_hash != d.content_hash and self._on_the_fly is not None:
                self._on_the_fly.forget(d.id)  # same id, new text: its old adapter is stale
            self.documents[d.id] = d
        return docs

    def parameterize(self, documents: Sequence[DocumentLike], batch_size: int = 32) -> dict[str, LoraWeights]:
        """One generated adapter per document (A [L, r, in], B [L, out, r]), keyed by document id."""
        if self._on_the_fly is None:
            raise ValueError("parameterize needs a hypernetwork: HyperPRAG.load(..., hypernet=PATH)")
        from inference.parameterize import generate_adapters

        docs = self._add(documents)
        unique = list({d.id: d for d in docs}.values())
        adapters = generate_adapters(self.hypernet, self.encoder, unique, batch_size)
        for d, w in zip(unique, adapters, strict=True):
            w.meta["doc_id"] = d.id
            self._on_the_fly.remember(d.id, w)  # answering reuses them instead of generating again
        return {d.id: w for d, w in zip(unique, adapters, strict=True)}

    def answerer(self, documents: Sequence[DocumentLike] | None = None, retriever=None, top_k: int = 3,
                 mode: str = "hyper"):
        """The `inference.answer.Answerer` that `answer` uses (for predictions with timings and doc ids)."""
        from inference.answer import make_answerer
        from inference.retrieval import build_retriever

        docs = self._add(documents) if documents is not None else list(self.documents.values())
        if mode == "vanilla":
            retriever = None  # nothing is retrieved
        elif retriever is None or isinstance(retriever, str):
            if not docs:
                raise ValueError(f"mode {mode!r} needs documents: pass documents=[...] (or a retriever)")
            # over this call's documents only; passages and adapters may come from any document seen
            retriever = build_retriever(retriever or "bm25", list({d.id: d for d in docs}.values()))
        return make_answerer(self.model, self.tokenizer, self.documents, retriever=retriever, top_k=top_k,
                             teacher=self.teacher, hyper=self._hyper, composition=self.composition,
                             max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                             mcq_scoring=self.mcq_scoring)

    def answer(self, questions: Sequence[QuestionLike], documents: Sequence[DocumentLike] | None = None,
               retriever=None, mode: str = "hyper", top_k: int = 3) -> list[str]:
        """Short answers, one per question, in any mode of inference/modes.py.

        `documents` given: a `retriever` ("bm25" by default, or "dense") is built over them. Otherwise the
        documents seen so far are searched, or `retriever` is any object with `search(queries, k)` over
        documents seen before.
        """
        from inference.modes import check_mode

        check_mode(mode)
        if isinstance(questions, str | Question):
            raise TypeError("answer takes a list of questions")
        qs = [as_question(q, i) for i, q in enumerate(questions)]
        answerer = self.answerer(documents, retriever, top_k, mode)
        return [p.prediction for p in answerer.answer(qs, mode)]

    def adapter(self, doc_id: str) -> LoraWeights:
        """A document's adapter: parameterized, generated (from a document seen before) or stored."""
        from inference.sources import StoreSource

        hyper = self._hyper
        if hyper is not None and (doc_id in self.documents or (isinstance(hyper, StoreSource) and doc_id in hyper)):
            return hyper.get_many([doc_id])[0]
        if self.teacher is not None and doc_id in self.teacher:
            return self.teacher.get(doc_id)
        raise KeyError(f"document {doc_id!r} has no adapter: parameterize it first (or open a store holding it)")

    def export_peft(self, adapter_or_doc_id: LoraWeights | str, out_dir: str | Path) -> Path:
        """Write an adapter (or a document's, by id) as a PEFT folder loadable by PeftModel.from_pretrained."""
        from hyperprag.core.peft_io import export_peft

        weights = adapter_or_doc_id if isinstance(adapter_or_doc_id, LoraWeights) else self.adapter(adapter_or_doc_id)
        name = model_id(self.model)
        return export_peft(weights.detach().to("cpu"), self.spec, out_dir, self.model, resolve_model_path(name))

    def __repr__(self) -> str:
        hyper = "none" if self.hypernet is None else f"{type(self.hypernet.model).__name__}"
        return (f"HyperPRAG(model={model_id(self.model)!r}, hypernet={hyper}, "
                f"store={getattr(self.teacher, 'root', None)}, documents={len(self.documents)})")
