"""The main job (`hyperprag demo`): parameterize documents the hypernetwork has never seen, answer from weights.

Stages, each announced on one line:
  1. load the base model and the demo data (invented documents: 40 to learn from, 20 unseen);
  2. get a hypernetwork: the checkpoint shipped for this base model, or (``--train``, or when none
     ships) train teacher LoRAs on the training documents and fit the hypernetwork on them;
  3. parameterize the unseen documents in one batched pass (docs/s);
  4. answer the unseen documents' questions closed-book and with passages in every mode (prag and
     prag-combine where teacher LoRAs of the unseen documents ship: hyperprag/demo/teacher/<model>);
  5. the own-vs-other-document check: gold-answer loss and exact match with each question's own
     document's adapter (generated, and the teacher's), another document's, and none; general questions
     with adapters.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hyperprag.core.data import load_corpus, load_questions, write_jsonl
from hyperprag.core.io import atomic_write_json, atomic_write_text
from hyperprag.core.models import load_base_model
from hyperprag.core.paths import config_path
from hyperprag.demo import demo_dir

STAGES = 5


_STARTED = [time.perf_counter()]


def stage(i: int, text: str) -> None:
    """One progress line per stage, with the seconds since the job started."""
    if i == 1:
        _STARTED[0] = time.perf_counter()
    print(f"[{i}/{STAGES}] {time.perf_counter() - _STARTED[0]:5.0f}s  {text}", flush=True)


def shipped_checkpoint(model: str) -> Path | None:
    """The hypernetwork that ships for an embedded model (made by the command in its folder's README)."""
    folder = demo_dir() / "checkpoints" / model
    return folder if (folder / "config.json").exists() else None


def shipped_teacher(model: str) -> Path | None:
    """Teacher LoRAs of the unseen demo documents that ship for an embedded model (the prag rows; made by
    the command in hyperprag/demo/README.md)."""
    folder = demo_dir() / "teacher" / model
    return folder if (folder / "manifest.json").exists() else None


# The training path's recipe: the CPU-sized teacher on the first TRAIN_DOCS demo training documents (a few
# minutes on a 2-core CPU for a 135M-270M model), then the shipped checkpoint's Lightning config.
# Both ship inside the package (hyperprag/core/paths.py), so this works from an installed wheel too.
TEACHER_SETTINGS = "teacher/cpu.yaml"
HYPERNET_CONFIG = "hypernet/smollm2_demo.yaml"
TRAIN_DOCS = 16


def train_demo_hypernet(model: str, out: Path, limit: int = TRAIN_DOCS) -> Path:
    """Teacher LoRAs for the first `limit` demo training documents, then the Lightning fit; returns the
    exported folder. Resumable: teacher LoRAs already in out/teacher are kept."""
    from training.hypernet_cli import run_train
    from training.teacher import TeacherConfig, train_corpus

    corpus = out / "train-corpus.jsonl"
    write_jsonl(corpus, list(load_corpus(demo_dir() / "train" / "corpus.jsonl"))[:limit])
    teacher_store, aug_cache = out / "teacher", out / "augment"
    summary = train_corpus(model, corpus, teacher_store, TeacherConfig.from_yaml(config_path(TEACHER_SETTINGS)),
                           augment="rules", augment_cache=aug_cache)
    print(f"      teacher: {summary['trained']} documents trained in {summary['seconds']:.0f}s "
          f"({summary['skipped_existing']} already there)", flush=True)
    root = out / "hypernet-train"
    run_train(["--config", str(config_path(HYPERNET_CONFIG)), "--model.base_model", model, "--data.corpus", str(corpus),
               "--data.teacher_store", str(teacher_store), "--data.augmentations", str(aug_cache),
               "--data.embedding_cache_dir", str(out / "embeddings"), "--trainer.default_root_dir", str(root),
               "--trainer.logger.class_path", "pytorch_lightning.loggers.CSVLogger",
               "--trainer.logger.init_args.save_dir", str(root), "--trainer.logger.init_args.name", "csv"])
    return root / "hypernet"


def _check_table(rows: dict[str, dict]) -> str:
    """Markdown of `specificity_check` rows; the answer loss column only where the rows have it."""
    cols = [c for c in ("answer_nll", "em", "contains") if all(c in v for v in rows.values())]
    return "\n".join([f"| adapter | {' | '.join(cols)} | n |", "|---" * (len(cols) + 2) + "|"] +
                     [f"| {k} | " + " | ".join(f"{v[c]:.3f}" for c in cols) + f" | {v['n']} |" for k, v in rows.items()])


def run_demo(model: str = "smollm2-135m", out: str = "runs/demo", train: bool = False, batch_size: int = 40,
             hypernet: str | None = None, teacher: str | None = None, max_new_tokens: int = 16) -> dict:
    """Run the main job and print its table; writes predictions, metrics.json and table.md under `out`."""
    from inference.answer import make_answerer
    from inference.checks import general_check, own_documents, shared_rank, specificity_check
    from inference.evaluate import evaluate, format_table
    from inference.parameterize import parameterize_corpus

    started = time.perf_counter()
    out_dir = Path(out)
    stage(1, f"loading {model} and the demo documents")
    base, tok = load_base_model(model)
    d = demo_dir()
    train_docs, unseen_docs = load_corpus(d / "train" / "corpus.jsonl"), load_corpus(d / "unseen" / "corpus.jsonl")
    questions = list(load_questions(d / "unseen" / "questions.jsonl"))
    general = list(load_questions(d / "general.jsonl"))
    all_docs = list(train_docs) + list(unseen_docs)

    ckpt = Path(hypernet) if hypernet else None if train else shipped_checkpoint(model)
    if ckpt is None:
        stage(2, f"training teacher LoRAs and the hypernetwork for {model} (no shipped checkpoint or --train)")
        ckpt = train_demo_hypernet(model, out_dir)
    else:
        shown = ckpt.resolve().relative_to(Path.cwd()) if ckpt.resolve().is_relative_to(Path.cwd()) else ckpt
        stage(2, f"using the hypernetwork {shown}")

    stage(3, f"parameterizing {len(unseen_docs)} unseen documents with the hypernetwork")
    store_dir = out_dir / "hyper-store"
    stats = parameterize_corpus(ckpt, list(unseen_docs), store_dir, base, tok, batch_size=32, progress=False)
    if stats["generated"]:
        print(f"      {stats['generated']} adapters in {stats['seconds']:.2f}s = {stats['docs_per_s']:.1f} docs/s "
              f"(encode {stats['encode_s']:.2f}s, generate {stats['generate_s']:.2f}s, write {stats['write_s']:.2f}s)")
    else:
        print(f"      all {stats['documents']} adapters already in {store_dir}")

    from hyperprag.core.store import AdapterStore

    store = AdapterStore.open(store_dir)
    store.preload()
    teacher_dir = Path(teacher) if teacher else None if train else shipped_teacher(model)
    teacher_store = AdapterStore.open(teacher_dir, expect_base_model=model) if teacher_dir else None
    modes = ["vanilla", "rag", "hyper", "hyper-combine"]
    prag_questions = []
    unseen = {x.id: x for x in unseen_docs}
    if teacher_store is not None:
        teacher_store.preload()
        modes[2:2] = ["prag", "prag-combine"]
        prag_questions = [q for q, own in zip(questions, own_documents(questions, unseen), strict=True)
                          if own in teacher_store]
    stage(4, f"answering {len(questions)} questions about the unseen documents in {len(modes)} modes"
             + (f" (prag: the {len(prag_questions)} whose document has a teacher LoRA)" if prag_questions
                else " (no teacher LoRAs for them: no prag rows)"))
    # Each question is asked with its own document (gold retrieval): the table measures what the weights
    # carry, not the retriever.
    answerer = make_answerer(base, tok, all_docs, retriever="gold", top_k=1, hyper=store, teacher=teacher_store,
                             batch_size=batch_size, max_new_tokens=max_new_tokens)
    # the gold-answer loss in the closed-book modes (the own-vs-other check's rows); in the in-context modes
    # it would cost a second pass over every passage
    closed_book = [m for m in modes if m in ("vanilla", "prag", "hyper")]
    metrics = evaluate(answerer, questions, modes, out_dir / "eval", batch_size=batch_size, with_nll=closed_book,
                       progress=False, subsets={m: prag_questions for m in modes if m.startswith("prag")})

    stage(5, "own-document vs other-document adapters (closed-book and with the passage), general questions")
    taught = {k: v for k, v in unseen.items() if teacher_store is not None and k in teacher_store}
    checks = {}
    for with_passage, (none, hyper, prag) in ((False, ("vanilla", "hyper", "prag")),
                                              (True, ("rag", "hyper-combine", "prag-combine"))):
        check = specificity_check(base, tok, questions, unseen, store, batch_size, max_new_tokens,
                                  known={"none": metrics[none]["all"], "own document": metrics[hyper]["all"]},
                                  with_passage=with_passage, shared_rank=shared_rank(store))
        if prag_questions:
            check = {f"generated: {k}" if k != "none" else k: v for k, v in check.items()}
            # "other" is another taught document
            teacher_check = specificity_check(base, tok, prag_questions, taught, teacher_store, batch_size,
                                              max_new_tokens, known={"own document": metrics[prag]["all"]},
                                              skip=("none",), with_passage=with_passage)
            check.update({f"teacher: {k}": v for k, v in teacher_check.items()})
        checks[with_passage] = check
    check, combine_check = checks[False], checks[True]
    sources = {"hypernetwork": (store, store.ids())}
    if prag_questions:
        sources["teacher"] = (teacher_store, teacher_store.ids())
    general_rows = general_check(base, tok, general, sources, batch_size, max_new_tokens)
    elapsed = time.perf_counter() - started
    table = format_table(metrics)
    gen_table = "\n".join(["| general questions | contains |", "|---|---|"] +
                          [f"| {k} | {v:.3f} |" for k, v in general_rows.items()])
    report = (f"## Unseen demo documents ({len(unseen_docs)} documents, {len(questions)} questions, {model})\n\n"
              f"{table}\n\n### Own vs another document's adapter (closed-book)\n\n{_check_table(check)}\n\n"
              "### Own vs another document's adapter, the document in the prompt (the combine modes; none = "
              f"rag)\n\n{_check_table(combine_check)}\n\n"
              f"{gen_table}\n\nparameterization: {stats['docs_per_s'] or 0:.1f} docs/s; total {elapsed:.0f}s\n")
    print("\n" + report)
    result = {"model": model, "metrics": metrics, "specificity": check, "specificity_combine": combine_check,
              "general": general_rows, "parameterize": stats, "seconds": elapsed}
    atomic_write_json(out_dir / "result.json", result)
    atomic_write_text(out_dir / "table.md", report)
    return result


if __name__ == "__main__":
    print(json.dumps(run_demo(), indent=2, default=str))
