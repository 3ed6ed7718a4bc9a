"""The `hyperprag` console script: one verb per job, each a plain function whose signature is its interface.

Heavy imports happen inside the verbs so that `hyperprag --help` answers at once. A user error (any
hyperprag.core.errors.InputError: a bad record, an unknown model, a folder that is not a hypernetwork or
store, a bad config) ends the script with one line, ``hyperprag: error: <message>``, and exit status 1;
`--debug` (anywhere on the command line) or HYPERPRAG_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Literal

from hyperprag.core.errors import InputError
from hyperprag.core.models import DEFAULT_MODEL
from inference.modes import McqScoring, Mode

DEFAULT_MODES = ("vanilla", "rag")
DEBUG_FLAG = "--debug"
DEBUG_ENV = "HYPERPRAG_DEBUG"
# Choices the parser checks (a mistyped value stops at parsing with a message naming the option).
OnError = Literal["fail", "skip"]
RetrieverKind = Literal["bm25", "dense", "gold"]
ModelDtype = Literal["float32", "bfloat16", "float16"]
StoreDtype = Literal["float32", "float16", "bfloat16"]
ComputeDtype = Literal["float32", "bfloat16", "auto"]
Composition = Literal["cat", "sum", "mean", "cat-mean"]
IndexKind = Literal["bm25", "dense"]
AugmentMethod = Literal["rules", "llm", "rules+llm"]
RawKind = Literal["hotpotqa", "2wiki", "popqa", "cwq"]
Gold = Literal["supporting", "all"]


def _setup() -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    hf_logging.set_verbosity_error()


def demo(model: str = DEFAULT_MODEL, out: str = "runs/demo", train: bool = False, batch_size: int = 40,
         hypernet: str | None = None, teacher: str | None = None, max_new_tokens: int = 16) -> dict:
    """The main job: parameterize unseen invented documents and answer their questions from the weights.

    Args:
        model: Base model: an embedded name (smollm2-135m, gemma3-270m), a local folder or a hub id.
        out: Output folder for predictions, metrics and adapters.
        train: Train teacher LoRAs and the hypernetwork here instead of loading the shipped checkpoint.
        batch_size: Questions answered together.
        hypernet: Use this hypernetwork checkpoint folder instead of the shipped one.
        teacher: Teacher adapter store of the unseen documents for the prag rows (default: the shipped one).
        max_new_tokens: Generation length of every answer.
    """
    from hyperprag.pipeline import run_demo

    return run_demo(model=model, out=out, train=train, batch_size=batch_size, hypernet=hypernet, teacher=teacher,
                    max_new_tokens=max_new_tokens)


def eval(  # noqa: A001 - the verb users type
    questions: str,
    corpus: str | None = None,
    modes: tuple[Mode, ...] = DEFAULT_MODES,
    retriever: RetrieverKind = "bm25",
    index: str | None = None,
    top_k: int = 3,
    model: str = DEFAULT_MODEL,
    dtype: ModelDtype = "float32",
    store: str | None = None,
    hypernet: str | None = None,
    composition: Composition = "cat",
    out: str = "runs/eval",
    limit: int | None = None,
    offset: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 20,
    answer_loss: bool = False,
    mcq_scoring: McqScoring = "generate",
    on_error: OnError = "fail",
) -> dict:
    """Answer a question file in several modes and score it (EM/F1 or accuracy); resumable.

    Args:
        questions: Question JSONL (the schema in the README).
        corpus: Corpus JSONL to retrieve from; default pools the questions' own passages.
        modes: Any of vanilla, rag, prag, prag-combine, hyper, hyper-combine.
        retriever: bm25, dense, or gold (each question's own passages, no retrieval).
        index: A saved retrieval index folder (from `hyperprag index`) to reuse.
        top_k: Documents per question.
        model: Base model: embedded name, local folder or hub id.
        dtype: float32 or bfloat16.
        store: Teacher adapter store (for prag modes) from `hyperprag teach`.
        hypernet: Hypernetwork checkpoint folder (hyper modes, adapters generated on the fly) or a
            generated adapter store from `hyperprag parameterize`.
        composition: How the top-k documents' adapters combine: cat, sum, mean, cat-mean.
        out: Output folder (predictions/<mode>.jsonl, metrics.json, metrics.md); rerun to resume.
        limit: Evaluate at most this many questions.
        offset: Skip this many questions first.
        batch_size: Questions generated together.
        max_new_tokens: Generation length.
        answer_loss: Also compute the mean loss per gold-answer token.
        mcq_scoring: Multiple choice: generate (read the letter off greedy text), likelihood (the option
            whose text is likeliest as the answer, per token) or calibrated (likelihood relative to the
            option's likelihood after a content-free question).
        on_error: fail or skip bad input records.
    """
    from hyperprag.session import build_answerer, load_eval_inputs
    from inference.evaluate import evaluate, format_table

    qs, docs = load_eval_inputs(questions, corpus, on_error=on_error, limit=limit, offset=offset)
    answerer = build_answerer(docs, model=model, dtype=dtype, retriever=retriever, index=index, top_k=top_k,
                              store=store, hypernet=hypernet, composition=composition,
                              max_new_tokens=max_new_tokens, batch_size=batch_size, mcq_scoring=mcq_scoring)
    metrics = evaluate(answerer, qs, modes, out, batch_size=batch_size, with_nll=answer_loss)
    print(format_table(metrics))
    print(f"\nmetrics: {Path(out) / 'metrics.json'} (per dataset and type: {Path(out) / 'metrics.md'})")
    return metrics


def index(corpus: str, out: str, kind: IndexKind = "bm25", on_error: OnError = "fail") -> str:
    """Build a retrieval index over a corpus (or a question file's pooled passages) and save it.

    Args:
        corpus: Corpus JSONL, or a question JSONL whose passages are pooled.
        out: Index folder to write.
        kind: bm25 or dense (MiniLM + faiss).
        on_error: fail or skip bad input records.
    """
    from hyperprag.session import load_documents
    from inference.retrieval import build_retriever

    docs = load_documents(corpus, on_error=on_error)
    build_retriever(kind, docs).save(out)
    print(f"{kind} index over {len(docs)} documents written to {out}")
    return out


def ask(question: str, documents: list[str] | None = None, corpus: str | None = None, mode: Mode = "vanilla",
        model: str = DEFAULT_MODEL, store: str | None = None, hypernet: str | None = None, top_k: int = 3,
        max_new_tokens: int = 32) -> str:
    """Answer one question, with documents given inline or retrieved from a corpus.

    Args:
        question: The question.
        documents: Document texts to answer from (each its own document).
        corpus: Corpus JSONL to retrieve from instead.
        mode: vanilla, rag, prag, prag-combine, hyper or hyper-combine.
        model: Base model: embedded name, local folder or hub id.
        store: Teacher adapter store (prag modes).
        hypernet: Hypernetwork checkpoint or generated store (hyper modes).
        top_k: Documents retrieved.
        max_new_tokens: Generation length.
    """
    from hyperprag.core.data import Document, Question
    from hyperprag.session import build_answerer, load_documents

    if documents:
        docs = [Document(f"doc{i}", "", text) for i, text in enumerate(documents)]
    elif corpus:
        docs = load_documents(corpus)
    else:
        docs = []
    answerer = build_answerer(docs, model=model, retriever="bm25" if docs else "none", top_k=top_k, store=store,
                              hypernet=hypernet, max_new_tokens=max_new_tokens, batch_size=1)
    pred = answerer.answer([Question("q", question, [""])], mode)[0]
    print(pred.prediction)
    return pred.prediction


def augment(corpus: str, cache: str = "runs/augment", method: AugmentMethod = "rules", model: str = DEFAULT_MODEL,
            augment_model: str | None = None, limit: int | None = None, on_error: OnError = "fail") -> dict:
    """Write each document's rewrites and QA pairs (cached by content hash; reruns skip finished ones).

    Args:
        corpus: Corpus JSONL (or a question JSONL whose passages are pooled).
        cache: Folder of per-document augmentation files.
        method: rules (fact-covering questions from the passage), llm, or rules+llm.
        model: Base model (used by the llm method unless augment_model is given).
        augment_model: A separate, larger instruct model for the llm method (hub id, folder or embedded name).
        limit: Augment only the first N documents.
        on_error: fail or skip bad input records.
    """
    from hyperprag.session import load_documents
    from training.augment import augment_documents, summarize

    docs = load_documents(corpus, on_error=on_error)[:limit]
    llm = None
    if "llm" in method and augment_model is None:
        from hyperprag.core.models import load_base_model

        llm = load_base_model(model)
    augs = augment_documents(docs, method=method, model=llm[0] if llm else None,
                             tokenizer=llm[1] if llm else None, augment_model=augment_model, cache_dir=cache)
    summary = summarize(augs)
    print(json.dumps(summary, indent=2))
    return summary


def teach(corpus: str, store: str, model: str = DEFAULT_MODEL, settings: str | None = None,
          augment: AugmentMethod = "rules",
          augment_cache: str | None = "runs/augment", shard: str = "0/1", limit: int | None = None,
          store_dtype: StoreDtype = "float32", on_error: OnError = "fail") -> dict:
    """Train one LoRA per document (the PRAG teacher), K documents per forward pass, into an adapter store.

    Resumable (finished documents are skipped) and shardable: run `--shard i/N` in N processes or on N
    machines sharing the store folder; together they cover the corpus exactly once.

    Args:
        corpus: Corpus JSONL.
        store: Adapter store folder (created, or resumed if it exists with the same model and spec).
        model: Base model: embedded name, local folder or hub id.
        settings: A YAML of TeacherConfig fields (configs/teacher/); default: the measured defaults for the model.
        augment: Augmentation method: rules, llm or rules+llm.
        augment_cache: Folder caching augmentations by content hash.
        shard: This process's part of the corpus, "i/N".
        limit: Train at most N new documents (useful for a quick look).
        store_dtype: float32, float16 or bfloat16 storage.
        on_error: fail, or skip documents that cannot be trained (logged and reported).
    """
    from training.teacher import TeacherConfig, train_corpus

    cfg = TeacherConfig.from_yaml(settings) if settings else TeacherConfig.for_model(model)
    summary = train_corpus(model, corpus, store, cfg, augment=augment, augment_cache=augment_cache, shard=shard,
                           on_error=on_error, limit=limit, store_dtype=store_dtype)
    print(json.dumps(summary, indent=2))
    return summary


def parameterize(corpus: str, hypernet: str, store: str, model: str = DEFAULT_MODEL, batch_size: int = 32,
                 shard: str = "0/1", store_dtype: StoreDtype = "float32", on_error: OnError = "fail",
                 compute_dtype: ComputeDtype | None = None) -> dict:
    """Generate every document's adapter with a trained hypernetwork (one forward per batch) into a store.

    Args:
        corpus: Corpus JSONL (or a question JSONL whose passages are pooled).
        hypernet: Hypernetwork checkpoint folder (from `hyperprag train`).
        store: Adapter store folder to write; rerun to resume.
        model: Base model the hypernetwork was trained for.
        batch_size: Documents per hypernetwork forward.
        shard: This process's part of the corpus, "i/N".
        store_dtype: float32, float16 or bfloat16 storage.
        on_error: fail or skip bad input records.
        compute_dtype: Precision of the encoder's base pass (float32, bfloat16, auto); default the checkpoint's.
    """
    from hyperprag.core.models import load_base_model
    from hyperprag.session import load_documents
    from inference.parameterize import parameterize_corpus

    docs = load_documents(corpus, on_error=on_error)
    base, tok = load_base_model(model)
    stats = parameterize_corpus(hypernet, docs, store, base, tok, batch_size=batch_size, shard=shard,
                                store_dtype=store_dtype, compute_dtype=compute_dtype)
    print(json.dumps(stats, indent=2))
    return stats


def inspect(store: str) -> dict:
    """Summarize an adapter store: base model, LoRA spec, settings, document count, bytes per adapter.

    Args:
        store: Adapter store folder.
    """
    from hyperprag.core.store import AdapterStore

    st = AdapterStore.open(store)
    info = {"root": str(store), "base_model": st.base_model, "spec": st.spec.to_dict(), "documents": len(st),
            "bytes_per_adapter": st.bytes_per_adapter(), "settings": st.settings}
    print(json.dumps(info, indent=2))
    return info


def export(store: str, doc_id: str, out: str) -> str:
    """Export one document's adapter as a standard PEFT folder (loads with PeftModel.from_pretrained).

    Args:
        store: Adapter store folder.
        doc_id: The document's id.
        out: PEFT folder to write.
    """
    from hyperprag.core.models import resolve_model_path
    from hyperprag.core.store import AdapterStore

    st = AdapterStore.open(store)
    st.export_peft(doc_id, out, resolve_model_path(st.base_model))
    print(f"wrote PEFT adapter {out}")
    return out


def plot(run: str, out: str | None = None) -> dict:
    """Plot a hypernetwork training run's curves to a PNG: parameter loss, held-out answer loss with own /
    other / teacher / no adapter, closed-book EM; prints each validation metric's first and last value.

    Args:
        run: The run's metrics.csv (CSVLogger), or a folder below which the newest one is taken.
        out: PNG to write (default: curves.png beside metrics.csv).
    """
    from training.curves import find_metrics_csv, plot_curves

    png = out or str(find_metrics_csv(run).parent / "curves.png")
    result = plot_curves(run, png)
    width = max(map(len, result["summary"]), default=10)
    for key, v in result["summary"].items():
        print(f"{key:<{width}}  first {v['first']:.4f}  last {v['last']:.4f}  (step {v['last_step']})")
    print(f"wrote {png}")
    return result


def pool(questions: list[str], out: str, docs: int | list[int] | None = None, gold: Gold = "supporting",
         exclude: list[str] | None = None) -> dict:
    """Write the gold passages of question files as one corpus JSONL: a training pool for `teach`.

    Passages are taken in question order and deduplicated by content; ids are content hashes, so a passage
    has one id (and one adapter) whichever file it came from.

    Args:
        questions: Question JSONL files; PATH@START:END takes the questions START..END-1 (e.g. popqa@0:400).
        out: Corpus JSONL to write.
        docs: Documents to take from each file: one number for every file, or one per file (default: all).
        gold: supporting (a question's supporting passages; all if none is marked) or all its passages.
        exclude: Question files (same PATH@START:END form) whose every passage is kept out, e.g. the
            questions you will evaluate on.
    """
    from hyperprag.core.data import Document, load_questions, parse_slice, passage_documents, write_jsonl

    per_file = docs if isinstance(docs, list) else [docs]
    limits = per_file * len(questions) if len(per_file) == 1 else per_file
    if len(limits) != len(questions):
        raise ValueError(f"--docs has {len(per_file)} numbers for {len(questions)} question files (give 1 or one each)")
    banned: set[str] = set()
    for spec in exclude or []:
        path, rng = parse_slice(spec)
        banned |= {p.content_hash for q in list(load_questions(path))[rng] for p in q.passages}
    taken: dict[str, Document] = {}
    counts = {}
    for spec, limit in zip(questions, limits, strict=True):
        path, rng = parse_slice(spec)
        picked = passage_documents(list(load_questions(path))[rng], gold, limit, exclude=banned | set(taken))
        counts[spec] = len(picked)
        taken.update((d.id, d) for d in picked)
    n = write_jsonl(out, taken.values())
    print(f"wrote {n} documents to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return {"documents": n, "per_file": counts, "excluded_passages": len(banned)}


def convert(kind: RawKind, path: str, out: str) -> str:
    """Convert a dataset's official raw file into the project's question JSONL.

    Args:
        kind: hotpotqa, 2wiki, popqa or cwq.
        path: The raw file (HotpotQA/2Wiki/CWQ json, PopQA tsv).
        out: Question JSONL to write.
    """
    from hyperprag.core.data import convert_raw

    convert_raw(kind, path, out)
    print(f"wrote {out}")
    return out


def ablate(config: str, out: str | None = None) -> dict:
    """Run a comparison grid (datasets x methods x hypernetwork variants x top-k x composition); resumable.

    Writes one results folder: metrics.json (every cell), table.md, plots/*.png, the resolved config and
    logs; teacher LoRAs and hypernetworks are trained once there and shared by the cells. Rerun to finish
    or extend a grid: finished cells are skipped.

    Args:
        config: A YAML file from configs/ablation/ (its first line is the command that runs it).
        out: Results folder; default: the config's `out`.
    """
    from hyperprag.ablation.runner import run_ablation

    summary = run_ablation(config, out=out)
    print(f"\nresults: {summary['config']['out']} (table.md, metrics.json, plots/)")
    return summary


def _run_ablate(args: list[str]):
    """`hyperprag ablate --config X.yaml [--out DIR]`, parsed from `ablate`'s own signature and docstring."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="hyperprag ablate", description=ablate.__doc__.split("\n")[0])
    parser.add_function_arguments(ablate, as_group=False, as_positional=False)
    return ablate(**parser.parse_args(args).as_dict())


def train(config: str) -> None:
    """Train the hypernetwork with PyTorch Lightning (LightningCLI; `hyperprag train --help` for all options).

    Args:
        config: A YAML file from configs/hypernet/.
    """
    raise AssertionError("dispatched in main()")  # pragma: no cover


VERBS = {"demo": demo, "augment": augment, "teach": teach, "train": train, "parameterize": parameterize,
         "ask": ask, "eval": eval, "index": index, "inspect": inspect, "export": export, "convert": convert,
         "pool": pool, "plot": plot, "ablate": ablate}


def main(argv: list[str] | None = None):
    """Run a verb. Given `argv`, returns the verb's result (programmatic use; errors propagate); as the
    console script (argv None) returns None, because the script ends with `sys.exit(main())` and any other
    value would be printed to stderr with exit status 1, and a user error ends it with one line."""
    as_script = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    _setup()
    try:
        result = _dispatch(argv)
    except InputError as err:
        if not as_script or debug:
            raise
        print(f"hyperprag: error: {err}", file=sys.stderr)
        sys.exit(1)
    return None if as_script else result


def _dispatch(argv: list[str]):
    if argv and argv[0] == "train":  # Lightning owns this verb's parser (fit/validate, trainer options)
        from training.hypernet_cli import run_train

        return run_train(argv[1:])
    if argv and argv[0] == "ablate":  # auto_cli drops a parameter named `config` (its own option's name)
        return _run_ablate(argv[1:])
    from jsonargparse import auto_cli

    return auto_cli(VERBS, args=argv, description="hyperprag: parametric RAG with per-document and generated "
                    f"LoRAs (add {DEBUG_FLAG} to see the traceback of an error)")


if __name__ == "__main__":
    main()
