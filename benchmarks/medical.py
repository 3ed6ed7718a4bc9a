# HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/medical.py --out runs/medical --n 100 --n-set pubmedqa=200
#     [--models smollm2-135m gemma3-270m]
# prag rows on PubMedQA/BioASQ: ... --teach 20 (teacher LoRAs of the first 20 questions' own documents)
"""The medical table: five multiple-choice sets x answering modes, accuracy with a 95% interval.

Sets and documents as hyperprag/core/medical.py makes them: PubMedQA and BioASQ answer from each question's
own document (gold retrieval, top-1), MedQA, MedMCQA and MMLU-Med retrieve top-k from the pooled medical
corpus with BM25 and dense (MiniLM + faiss) and report how much of the gold option the retrieved passages
hold (`option_support`). Options are scored by likelihood (lm-evaluation-harness's convention); vanilla is
also answered by generation (the letter read off greedy text), the comparison the likelihood rows must win.
The same n questions (a seeded sample, in file order) in every row of a set; every cell is a resumable
`evaluate` run under --out/<model>/<set>/<scoring>-<retrieval>/, so a killed run goes on where it stopped.
hyper rows use the model's shipped hypernetwork (or --hypernet); a model without one has no hyper rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
from pathlib import Path

OWN, RETRIEVED = ("pubmedqa", "bioasq"), ("medqa", "medmcqa", "mmlu-med")


def sample(questions: list, n: int, seed: int) -> list:
    """n questions drawn with `seed`, kept in file order (all of them if there are fewer)."""
    if n >= len(questions):
        return list(questions)
    keep = set(random.Random(seed).sample(range(len(questions)), n))
    return [q for i, q in enumerate(questions) if i in keep]


def cell(metrics: dict) -> dict:
    """Accuracy, its Wilson 95% interval, n and seconds per question of one mode's metrics."""
    from hyperprag.core.metrics import wilson_interval

    m = metrics["all"]
    low, high = wilson_interval(m["acc"] * m["n"], m["n"])
    return {"acc": m["acc"], "low": low, "high": high, "n": m["n"], "seconds_per_question": m["seconds_per_question"]}


def indexes(out: Path, docs: list, kinds: list[str]) -> dict[str, str]:
    """A saved retrieval index per kind over the medical corpus (built once, reused by every model)."""
    from inference.retrieval import build_retriever

    paths = {}
    for kind in kinds:
        path = out / f"index-{kind}"
        if not (path / "done").exists():
            build_retriever(kind, docs).save(path)
            (path / "done").write_text(str(len(docs)))
        paths[kind] = str(path)
    return paths


def run_model(model: str, args, sets: dict[str, list], corpus: list, index_paths: dict[str, str]) -> list[dict]:
    """Every (set, retrieval, mode) cell of one model; returns the table rows."""
    from hyperprag.core.medical import chance, option_support, own_documents
    from hyperprag.core.models import load_base_model
    from hyperprag.pipeline import shipped_checkpoint
    from hyperprag.session import build_answerer
    from inference.evaluate import evaluate, saved_metrics

    loaded = load_base_model(model)
    hypernet = args.hypernet or shipped_checkpoint(model)
    modes = [m for m in args.modes if hypernet or not m.startswith("hyper")]
    if modes != args.modes:
        print(f"{model}: no hypernetwork ships for it and none was given; hyper rows left out", flush=True)
    rows = []
    base = Path(args.out) / model
    for name, qs in sets.items():
        uniform, majority = chance(qs)
        plans = []  # (retrieval label, answerer, questions, modes)
        if name in OWN:
            qs, docs = own_documents(qs, name)
            answerer = build_answerer(docs, model=model, retriever="gold", top_k=1, hypernet=hypernet and str(hypernet),
                                      loaded=loaded, mcq_scoring=args.scoring)
            plans.append(("own", answerer, qs, modes))
        else:
            for i, kind in enumerate(args.retrievers):
                answerer = build_answerer(corpus, model=model, retriever=kind, index=index_paths[kind],
                                          top_k=args.top_k, hypernet=hypernet and str(hypernet), loaded=loaded,
                                          mcq_scoring=args.scoring)
                plans.append((kind, answerer, qs, [m for m in modes if m != "vanilla" or i == 0]))
        for label, answerer, asked, cell_modes in plans:
            start = time.perf_counter()
            subsets = {}
            if any(m.startswith("prag") for m in cell_modes):
                if name in OWN and (args.teach or args.store):
                    from shared_eval import teacher_for

                    taught = asked[: args.teach] if args.teach else asked
                    answerer.teacher = teacher_for(answerer, taught, argparse.Namespace(
                        store=args.store, teach=bool(args.teach), out=str(base), model=model,
                        teacher_config=args.teacher_config), f"{name}-{label}")
                    subsets = {m: taught for m in cell_modes if m.startswith("prag")}
                else:  # teachers only for the sets with their own documents
                    cell_modes = [m for m in cell_modes if not m.startswith("prag")]
            cell_dir = base / name / f"{args.scoring}-{label}"
            metrics = evaluate(answerer, asked, cell_modes, cell_dir, progress=False, subsets=subsets)
            row = {"model": model, "set": name, "retrieval": label, "scoring": args.scoring, "chance_uniform": uniform,
                   "chance_majority": majority, **{mode: cell(m) for mode, m in metrics.items()}}
            if label == plans[0][0] and args.generate:
                answerer.mcq_scoring = "generate"
                gen = evaluate(answerer, asked, ["vanilla"], base / name / "generate", progress=False)
                answerer.mcq_scoring = args.scoring
                row["vanilla-generate"] = cell(gen["vanilla"])
            if name in RETRIEVED:
                found = answerer.documents_for(asked)
                support = [option_support(q, [answerer.corpus[i].text for i in ids]) for q, ids in zip(asked, found,
                                                                                                       strict=True)]
                row["support_gold"] = sum(s[0] for s in support) / len(support)
                row["support_wrong"] = sum(s[1] for s in support) / len(support)
            rows.append(row)
            if subsets:  # every mode again on the questions the prag rows answered: one sample across the row
                taught = next(iter(subsets.values()))
                u, m = chance(taught)
                rows.append({"model": model, "set": name, "retrieval": f"{label}, taught", "scoring": args.scoring,
                             "chance_uniform": u, "chance_majority": m,
                             **{mode: cell(saved_metrics(cell_dir, mode, taught)) for mode in cell_modes}})
                if "vanilla-generate" in row:
                    rows[-1]["vanilla-generate"] = cell(saved_metrics(base / name / "generate", "vanilla", taught))
            print(f"{model} {name} {label}: {time.perf_counter() - start:.0f} s "
                  f"{ {k: round(v['acc'], 3) for k, v in row.items() if isinstance(v, dict)} }", flush=True)
    return rows


COLUMNS = ("vanilla-generate", "vanilla", "rag", "prag", "prag-combine", "hyper", "hyper-combine")


def table(rows: list[dict]) -> str:
    """Markdown: per model, one row per (set, retrieval), accuracy [95% interval] per mode."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        cols = [c for c in COLUMNS if any(c in r for r in mine)]
        out += [f"**{model}** ({mine[0].get('scoring', 'likelihood')} scoring unless marked; accuracy "
                "[95% Wilson interval])", "",
                "| set | documents | n | chance (uniform / majority) | " + " | ".join(cols)
                + " | gold / wrong option words retrieved |",
                "|---" * (len(cols) + 5) + "|"]
        for r in mine:
            n = r["vanilla"]["n"] if "vanilla" in r else next(v["n"] for v in r.values() if isinstance(v, dict))
            cells = ["-" if (v := r.get(c)) is None else f"{v['acc']:.3f} [{v['low']:.2f}, {v['high']:.2f}]"
                     + (f" (n={v['n']})" if v["n"] != n else "") for c in cols]
            support = f"{r['support_gold']:.2f} / {r['support_wrong']:.2f}" if "support_gold" in r else "-"
            docs = {"own": "its own", "own, taught": "its own, the taught subset"}.get(r["retrieval"],
                                                                                     f"{r['retrieval']} top-k")
            out.append(f"| {r['set']} | {docs} | {n} | {r['chance_uniform']:.3f} / {r['chance_majority']:.3f} | "
                       + " | ".join(cells) + f" | {support} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the teacher's progress lines
    from hyperprag.core.medical import SETS, load_set, medical_corpus

    default = os.environ.get("HYPERPRAG_SHARED_DATA", str(Path(__file__).resolve().parents[1] / "../shared/data"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default, help="the shared data folder (its medical/ subfolder is read)")
    ap.add_argument("--out", default="runs/medical")
    ap.add_argument("--n", type=int, default=200, help="questions per set (the same in every row)")
    ap.add_argument("--n-set", nargs="*", default=[], metavar="SET=N", help="another n for a set, e.g. pubmedqa=200")
    ap.add_argument("--seed", type=int, default=0, help="seed of the question sample")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--models", nargs="+", default=["smollm2-135m"])
    ap.add_argument("--modes", nargs="+", default=["vanilla", "rag", "hyper", "hyper-combine"])
    ap.add_argument("--retrievers", nargs="+", default=["bm25", "dense"], choices=["bm25", "dense"])
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--hypernet", default=None, help="hypernetwork for the hyper rows (default: the shipped one)")
    ap.add_argument("--store", default=None, help="teacher store for prag rows (default <out>/<model>/teacher)")
    ap.add_argument("--teach", type=int, default=0,
                    help="train teacher LoRAs for the first N questions' own documents (PubMedQA, BioASQ) first")
    ap.add_argument("--teacher-config", default=None,
                    help="teacher recipe YAML for --teach, e.g. configs/teacher/smollm2-135m-fast.yaml (default: the model's)")
    ap.add_argument("--scoring", default="likelihood", choices=["likelihood", "calibrated"],
                    help="option scoring of every row but vanilla-generate (inference/modes.py)")
    ap.add_argument("--no-generate", dest="generate", action="store_false", help="skip the vanilla generation row")
    args = ap.parse_args()
    if args.teach and not any(m.startswith("prag") for m in args.modes):
        args.modes = [*args.modes, "prag", "prag-combine"]
    folder = Path(args.data) / "medical"
    every = {name: load_set(folder, name) for name in SETS}
    sizes = {name: args.n for name in args.sets}
    for item in args.n_set:
        name, _, n = item.partition("=")
        if name not in SETS or not n.isdigit():
            ap.error(f"--n-set {item!r}: expected SET=N with SET one of {', '.join(SETS)}")
        sizes[name] = int(n)
    sets = {name: sample(every[name], sizes[name], args.seed) for name in args.sets}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = medical_corpus(every["pubmedqa"], every["bioasq"])
    index_paths = indexes(out, corpus, args.retrievers) if set(args.sets) & set(RETRIEVED) else {}
    print(f"medical corpus: {len(corpus)} documents (PubMedQA abstracts + BioASQ snippets)", flush=True)
    rows = [r for model in args.models for r in run_model(model, args, sets, corpus, index_paths)]
    (out / "table.json").write_text(json.dumps({"corpus_documents": len(corpus), "rows": rows}, indent=1))
    text = table(rows)
    (out / "table.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
