# HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serving.py --docs 256 --teacher-docs 4 --questions 8 [--threads 1]
"""Serving costs on the embedded SmolLM2, all in one process, as ratios measured in the same run.

1. Parameterization throughput: hypernetwork docs/s (encode + one forward per batch + store write, over
   --docs synthetic or demo documents) vs per-document teacher training (the model's default teacher,
   TeacherConfig.for_model = configs/teacher/<model>.yaml, the settings measured to inject knowledge; or
   --teacher-config YAML) on the first --teacher-docs of the same documents, trained together as one group,
   with and without the augmentation step (rules by default, --augment llm for LLM-written QA and rewrites).
   Targets: >= 1000x including augmentation, >= 100x excluding it.
2. Answer latency per question at batch 1 in every mode over the demo corpus (BM25 top-3, EOS disabled so
   every mode generates exactly --max-new-tokens). Targets: hyper (store) <= 1.25x vanilla and < rag;
   hyper on the fly (adapters encoded and generated at question time) < rag.
3. Batched per-question adapters: 16 questions, each with its own composed top-3 adapter, decoded in one
   generate loop vs one at a time. Target: >= 4x throughput.
4. Peak resident memory of each path: RSS above the RSS at its start (freed heap returned to the OS with
   malloc_trim first), sampled every 5 ms by psutil in a thread; for answering, the max over its calls.

The hypernetwork is --hypernet PATH, else a freshly initialized HyperLoRA (timing does not depend on
training). prag uses --teacher-store PATH if given, else stand-in adapters of the teacher's shape (the
answer path does not depend on the values). Modes are timed round robin, question by question, so a
shared CPU's load falls on all alike. Short run: --docs 64 --teacher-docs 1 --questions 3 --threads 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _trim_heap() -> None:
    """Return freed heap memory to the OS (glibc), so a path's allocations show up as new RSS."""
    import ctypes
    import gc

    gc.collect()
    with suppress(OSError, AttributeError):  # not glibc: deltas may then read low after earlier paths
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Peak resident memory above the starting RSS while the block runs, sampled in a thread."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.proc, self.interval = psutil.Process(), interval
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        _trim_heap()
        self.start = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / 2**20


@contextmanager
def timer(out: dict, key: str):
    t = time.perf_counter()
    yield
    out[key] = time.perf_counter() - t


def fresh_hypernet(folder: Path, base, encoder_kind: str) -> Path:
    """A freshly initialized hypernetwork saved as a checkpoint for `base`: HyperLoRA (the old demo sizes) for
    a pooled encoder, PerceiverLoRA at rank 2 + 6 (configs/hypernet/keyvalue_perceiver.yaml) for 'tokens'."""
    import torch

    from hypernet.checkpoint import save_hypernet
    from hypernet.config import EncoderSpec, HyperNetConfig
    from hypernet.encoders import encoder_dim
    from hypernet.model import build_hypernet
    from hyperprag.core.lora import LoraSpec, target_shapes
    from hyperprag.core.models import model_id

    encoder = EncoderSpec(kind=encoder_kind)
    if encoder_kind == "tokens":
        spec = LoraSpec(rank=8)
        config = HyperNetConfig(arch="perceiver", latent_dim=256, heads=4, blocks=2, bias_rank=2,
                                emb_dim=encoder_dim(encoder, base.config))
    else:
        spec = LoraSpec()
        config = HyperNetConfig(arch="hyperlora", hidden=256, trunk_layers=2, basis=128,
                                emb_dim=encoder_dim(encoder, base.config))
    shapes = target_shapes(base, spec)
    torch.manual_seed(0)
    return save_hypernet(folder, build_hypernet(config, shapes, spec), config, spec, model_id(base), encoder, shapes)


def bench_parameterize(args, base, tok, hypernet: Path, tmp: Path) -> dict:
    """Hypernetwork docs/s (encode / generate / write) vs teacher docs/s (+ augmentation)."""
    from hyperprag.core.store import AdapterStore
    from hyperprag.demo.synth import generate_synthetic
    from inference.parameterize import parameterize_corpus
    from training.augment import augment_documents
    from training.teacher import TeacherConfig, train_documents

    if args.source == "demo":
        from hyperprag.demo import load_demo_corpus

        docs = (load_demo_corpus("train") + load_demo_corpus("unseen"))[: args.docs]
    else:
        docs, _ = generate_synthetic(args.docs, seed=0)
    parameterize_corpus(hypernet, docs[:32], tmp / "warm", base, tok, batch_size=32, progress=False,
                        compute_dtype=args.compute_dtype)  # warm-up
    with PeakRSS() as mem_h:
        stats = parameterize_corpus(hypernet, docs, tmp / "param-store", base, tok, batch_size=args.batch,
                                    progress=False, compute_dtype=args.compute_dtype)
    used = AdapterStore.open(tmp / "param-store").settings["encoder"].get("compute_dtype", "float32")
    precisions = encode_precisions(hypernet, base, tok, [d.full_text for d in docs], args.batch)
    teach_docs = docs[: args.teacher_docs]
    t: dict = {}
    with PeakRSS() as mem_a, timer(t, "augment"):
        augs = augment_documents(teach_docs, method=args.augment, model=base, tokenizer=tok)
    config = TeacherConfig.from_yaml(args.teacher_config) if args.teacher_config else \
        TeacherConfig.for_model(args.model)
    with PeakRSS() as mem_t, timer(t, "train"):
        adapters = train_documents(base, tok, teach_docs, augs, config)
    n_t = len(teach_docs)
    hyper_dps = stats["generated"] / stats["seconds"]
    return {"docs": stats["generated"], "hyper_s": stats["seconds"], "encode_s": stats["encode_s"],
            "generate_s": stats["generate_s"], "write_s": stats["write_s"], "hyper_dps": hyper_dps,
            "teacher_docs": n_t, "augment_s": t["augment"], "train_s": t["train"],
            "teacher_steps": sum(a.meta["steps"] for a in adapters) / n_t,
            "teacher_dps": n_t / t["train"], "teacher_dps_aug": n_t / (t["train"] + t["augment"]),
            "ratio_excl": hyper_dps / (n_t / t["train"]), "ratio_incl": hyper_dps / (n_t / (t["train"] + t["augment"])),
            "mem_hyper": mem_h.mb, "mem_augment": mem_a.mb, "mem_teacher": mem_t.mb, "compute_dtype": used,
            **precisions}


def encode_precisions(hypernet: Path, base, tok, texts: list[str], batch: int) -> dict:
    """Encoding time with the base pass in float32 and in bfloat16 (EncoderSpec.compute_dtype), batch by batch
    on the same length-sorted batches parameterization uses, alternating, and how far the bf16 states move
    from float32's (max 1 - cosine over real tokens and layers)."""
    import torch

    from hypernet.encoders import DocStates
    from inference.parameterize import load_for_model

    encoders = {dtype: load_for_model(hypernet, base, tok, dtype)[1] for dtype in ("float32", "bfloat16")}
    texts = sorted(texts, key=len)
    for enc in encoders.values():
        enc.encode(texts[:batch])  # warm-up (oneDNN's bf16 kernels)
    seconds, drift = {dtype: 0.0 for dtype in encoders}, 0.0
    for start in range(0, len(texts), batch):
        got = {}
        for dtype, enc in encoders.items():
            t = time.perf_counter()
            got[dtype] = enc.encode(texts[start:start + batch])
            seconds[dtype] += time.perf_counter() - t
        ref, emb = got["float32"], got["bfloat16"]
        if isinstance(ref, DocStates):  # per token and layer, over the real tokens
            real = ref.mask.bool()[:, None, :].expand(ref.states.shape[:3])
            ref, emb = ref.states[real], emb.states[real]
        drift = max(drift, float((1 - torch.nn.functional.cosine_similarity(ref, emb, dim=-1)).max()))
    return {"encode_float32_s": seconds["float32"], "encode_bfloat16_s": seconds["bfloat16"], "bf16_cos_drift": drift}


def stand_in_teacher(folder: Path, base, docs) -> object:
    """A store of teacher-shaped adapters (seeded PEFT init A, small random B) for every document."""
    import torch

    from hyperprag.core.lora import LoraSpec, LoraWeights, init_lora, target_shapes
    from hyperprag.core.models import model_id
    from hyperprag.core.store import AdapterStore

    spec = LoraSpec()
    shapes = target_shapes(base, spec)
    g = torch.Generator().manual_seed(0)
    with AdapterStore.create(folder, model_id(base), spec, {"teacher": "stand-in (benchmarks/serving.py)"}) as st:
        for i, d in enumerate(docs):
            w = init_lora(shapes, spec, seed=i)
            st.put(d.id, LoraWeights(w.A, {m: torch.randn(b.shape, generator=g) * 1e-3 for m, b in w.B.items()}))
    return AdapterStore.open(folder)


def bench_answer(args, base, tok, hypernet: Path, tmp: Path) -> tuple[dict, dict]:
    """Per-question latency (batch 1) and peak memory of every answering path; then batched vs one-by-one."""
    from hyperprag.core.store import AdapterStore
    from hyperprag.demo import load_demo_corpus, load_demo_questions
    from inference.answer import Answerer, make_answerer
    from inference.generate import use_merged
    from inference.parameterize import OnTheFlySource, load_for_model, parameterize_corpus
    from inference.retrieval import build_retriever

    base.generation_config.eos_token_id = None  # equal work in every mode: exactly max_new_tokens each
    check_token_counts(base, tok, args.max_new_tokens)
    corpus = load_demo_corpus("train") + load_demo_corpus("unseen")
    questions = load_demo_questions("unseen")
    by_id = {d.id: d for d in corpus}
    retriever = build_retriever("bm25", corpus)
    parameterize_corpus(hypernet, corpus, tmp / "demo-store", base, tok, progress=False)
    hyper_store = AdapterStore.open(tmp / "demo-store").preload()
    teacher = AdapterStore.open(args.teacher_store) if args.teacher_store else \
        stand_in_teacher(tmp / "teacher-store", base, corpus)
    teacher.preload()
    hyper, encoder = load_for_model(hypernet, base, tok)
    on_the_fly = OnTheFlySource(hyper, encoder, by_id)

    def answerer(source, batch_size: int = 1) -> Answerer:
        return make_answerer(base, tok, by_id, retriever=retriever, teacher=teacher, hyper=source, top_k=args.top_k,
                             stop_at_answer=False,  # equal work: every mode generates exactly max_new_tokens
                             max_new_tokens=args.max_new_tokens, batch_size=batch_size)

    paths = [("vanilla", "vanilla", hyper_store), ("rag", "rag", hyper_store), ("prag (store)", "prag", hyper_store),
             ("hyper (store)", "hyper", hyper_store), ("hyper (on the fly)", "hyper", on_the_fly),
             ("hyper-combine (store)", "hyper-combine", hyper_store)]
    qs = questions[: args.questions]
    answerers = {name: (answerer(source), mode, source) for name, mode, source in paths}
    times: dict[str, list[float]] = {name: [] for name in answerers}
    mems: dict[str, float] = dict.fromkeys(answerers, 0.0)
    # Round robin (every mode answers question i before any answers question i+1), so the load of a
    # shared CPU falls on all modes alike; the first round is the warm-up and counts only for memory.
    for i, q in enumerate([questions[-1], *qs]):
        for name, (ans, mode, _) in answerers.items():
            on_the_fly.cache.clear()  # on the fly means encoding + generation at question time
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                ans.answer([q], mode)
                seconds = time.perf_counter() - t0
            mems[name] = max(mems[name], mem.mb)
            if i:
                times[name].append(seconds)
    rows = {}
    for name, (ans, mode, _) in answerers.items():
        rows[name] = {"s": statistics.mean(times[name]), "sd": statistics.pstdev(times[name]), "mem": mems[name],
                      "prompt_tokens": statistics.mean(p.prompt_tokens for p in ans.answer(qs[:1], mode))}

    batch_qs = (questions * 16)[:16]
    batched: dict = {}
    one, many = answerer(hyper_store, 1), answerer(hyper_store, 16)
    _, adapters, _, _ = many.prompts_and_adapters(batch_qs, "hyper")
    batched["distinct_adapters"] = len({id(a) for a in adapters})
    batched["rank"] = max(a.rank for a in adapters)
    many.answer(batch_qs[:2], "hyper")  # warm-up of the per-example hook path
    one_s, batch_s, mem_one, mem_batch = [], [], 0.0, 0.0
    for _ in range(args.repeats):  # alternated; the fastest of each counts (least disturbed by other load)
        with PeakRSS() as mem1:
            t0 = time.perf_counter()
            one.answer(batch_qs, "hyper")
            one_s.append(time.perf_counter() - t0)
        with PeakRSS() as mem16:
            t0 = time.perf_counter()
            many.answer(batch_qs, "hyper")
            batch_s.append(time.perf_counter() - t0)
        mem_one, mem_batch = max(mem_one, mem1.mb), max(mem_batch, mem16.mb)
    batched.update(one_s=min(one_s), batch_s=min(batch_s), one_all=one_s, batch_all=batch_s)
    batched.update(mem_one=mem_one, mem_batch=mem_batch, ratio=batched["one_s"] / batched["batch_s"],
                   one_path="merged weights" if use_merged(base, adapters[0], args.max_new_tokens) else "hooks")
    return rows, batched


def check_token_counts(base, tok, n: int) -> None:
    """With EOS disabled every generation is exactly n new tokens (so modes are timed on equal work)."""
    from hyperprag.core.prompts import answer_prompt

    enc = tok([answer_prompt(tok, "What is the capital of France?")], return_tensors="pt")
    out = base.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    got = out.shape[1] - enc["input_ids"].shape[1]
    if got != n:
        raise RuntimeError(f"generation stopped after {got} of {n} tokens although EOS is disabled")


def report(args, p: dict | None, rows: dict | None, batched: dict | None) -> str:
    ok = {True: "yes", False: "**no**"}
    out = []
    if p is not None:
        parts = {"encode": p["encode_s"], "generate": p["generate_s"], "store write": p["write_s"]}
        top = max(parts, key=parts.get)
        used = p["compute_dtype"]
        other = "float32" if used == "bfloat16" else "bfloat16"
        other_s = p["hyper_s"] - p["encode_s"] * (1 - p[f"encode_{other}_s"] / p[f"encode_{used}_s"])
        other_ratio = p["ratio_incl"] * p["hyper_s"] / other_s
        out += [f"### Parameterization throughput ({args.source} documents)", "",
                "| path | docs | seconds | docs/s | peak RSS +MB |", "|---|---|---|---|---|",
                f"| hypernetwork (encode in {used} + generate + write, batch {args.batch}) | {p['docs']} | "
                f"{p['hyper_s']:.2f} | "
                f"{p['hyper_dps']:.1f} | {p['mem_hyper']:.0f} |"]
        out += [f"| &nbsp; {k} | | {v:.2f} ({100 * v / p['hyper_s']:.0f}%) | {p['docs'] / v:.1f} | |"
                for k, v in parts.items()]
        out += [f"| &nbsp; (encode again, base pass in float32) | {p['docs']} | "
                f"{p['encode_float32_s']:.2f} | {p['docs'] / p['encode_float32_s']:.1f} | |",
                f"| &nbsp; (encode again, base pass in bfloat16; max 1 - cos vs float32 = {p['bf16_cos_drift']:.1e}) "
                f"| {p['docs']} | {p['encode_bfloat16_s']:.2f} | {p['docs'] / p['encode_bfloat16_s']:.1f} | |"]
        out += [f"| {args.augment} augmentation | {p['teacher_docs']} | {p['augment_s']:.3g} | "
                f"{p['teacher_docs'] / p['augment_s']:.4g} | {p['mem_augment']:.0f} |",
                f"| teacher training ({args.teacher_config or 'default for ' + args.model}, "
                f"{p['teacher_steps']:.0f} steps/doc, K={p['teacher_docs']}) | "
                f"{p['teacher_docs']} | {p['train_s']:.2f} | {p['teacher_dps']:.4g} | {p['mem_teacher']:.0f} |",
                "", "| ratio hypernetwork / teacher | measured | target | met |", "|---|---|---|---|",
                f"| including augmentation | {p['ratio_incl']:.0f}x | >= 1000x | {ok[p['ratio_incl'] >= 1000]} |",
                f"| excluding augmentation | {p['ratio_excl']:.0f}x | >= 100x | {ok[p['ratio_excl'] >= 100]} |",
                "", f"Hypernetwork time is dominated by **{top}** ({100 * parts[top] / p['hyper_s']:.0f}%). With the "
                f"encoder's base pass in {other} the ratio would be about {other_ratio:.0f}x (incl. augmentation).", ""]
    if rows is not None:
        v, r = rows["vanilla"]["s"], rows["rag"]["s"]
        out += [f"### Answer latency per question (batch 1, top-{args.top_k}, {args.max_new_tokens} new tokens, "
                f"mean of {args.questions} after a warm-up)", "",
                "| mode | prompt tokens | s/question | sd | vs vanilla | vs rag | peak RSS +MB |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {k} | {x['prompt_tokens']:.0f} | {x['s']:.3f} | {x['sd']:.3f} | {x['s'] / v:.2f}x | "
                f"{x['s'] / r:.2f}x | {x['mem']:.0f} |" for k, x in rows.items()]
        h, f = rows["hyper (store)"]["s"], rows["hyper (on the fly)"]["s"]
        teacher = args.teacher_store or "stand-in adapters of the teacher's shape (the path does not depend on values)"
        out += ["", f"prag's teacher store: {teacher}. Stores are preloaded; on the fly clears its cache before "
                    "every question."]
        out += ["", "| latency target | measured | met |", "|---|---|---|",
                f"| hyper (store) <= 1.25x vanilla | {h / v:.2f}x | {ok[h / v <= 1.25]} |",
                f"| hyper (store) < rag | {h / r:.2f}x | {ok[h < r]} |",
                f"| hyper (on the fly) < rag | {f / r:.2f}x | {ok[f < r]} |", ""]
    if batched is not None:
        b = batched
        out += [f"### Batched per-question adapters (16 questions, {b['distinct_adapters']} distinct composed "
                f"adapters, rank {b['rank']})", "",
                "| path | seconds | questions/s | peak RSS +MB |", "|---|---|---|---|",
                f"| one at a time (batch 1, shared adapter by {b['one_path']}) | {b['one_s']:.2f} | {16 / b['one_s']:.2f} | "
                f"{b['mem_one']:.0f} |",
                f"| batch 16, one generate loop (per-example hooks) | {b['batch_s']:.2f} | {16 / b['batch_s']:.2f} | "
                f"{b['mem_batch']:.0f} |",
                "", f"Throughput ratio {b['ratio']:.2f}x (target >= 4x: {ok[b['ratio'] >= 4]}); fastest of "
                f"{args.repeats} alternated runs (one at a time {', '.join(f'{x:.1f}' for x in b['one_all'])} s, "
                f"batched {', '.join(f'{x:.1f}' for x in b['batch_all'])} s).", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--hypernet", default=None, help="hypernetwork checkpoint (default: a fresh HyperLoRA)")
    ap.add_argument("--encoder", default="tokens", choices=["sentence", "llm", "tokens"],
                    help="fresh hypernetwork's encoder (tokens: the token-level PerceiverLoRA)")
    ap.add_argument("--teacher-store", default=None, help="teacher store covering the demo corpus (prag)")
    ap.add_argument("--docs", type=int, default=256, help="synthetic documents parameterized by the hypernetwork")
    ap.add_argument("--source", default="synthetic", choices=["synthetic", "demo"],
                    help="documents of the parameterization section: synthetic (3-5 facts each) or the 60 demo ones")
    ap.add_argument("--augment", default="rules", choices=["rules", "llm", "rules+llm"],
                    help="teacher's augmentation (the demo config's is rules; llm generates QA with the base model)")
    ap.add_argument("--batch", type=int, default=32, help="hypernetwork batch (documents per forward)")
    ap.add_argument("--compute-dtype", default=None, choices=["float32", "bfloat16", "auto"],
                    help="precision of the encoder's base pass (default: the checkpoint's)")
    ap.add_argument("--teacher-docs", type=int, default=4, help="documents trained by the teacher (one group)")
    ap.add_argument("--teacher-config", default=None,
                    help="teacher YAML (default: the model's defaults, TeacherConfig.for_model)")
    ap.add_argument("--questions", type=int, default=8, help="questions timed per answering mode")
    ap.add_argument("--max-new-tokens", type=int, default=20, help="as the Answerer default")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="alternated runs of the batched comparison (min counts)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0 = torch's default; use 1 on a shared CPU: oversubscribed OpenMP "
                         "threads made generation ~10x slower there)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["parameterize", "answer"], help="sections to skip")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import logging

    import torch

    from hyperprag.core.models import load_base_model

    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    base, tok = load_base_model(args.model)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        hypernet = Path(args.hypernet) if args.hypernet else fresh_hypernet(tmp / "hypernet", base, args.encoder)
        p = None if "parameterize" in args.skip else bench_parameterize(args, base, tok, hypernet, tmp)
        rows, batched = (None, None) if "answer" in args.skip else bench_answer(args, base, tok, hypernet, tmp)
    load = os.getloadavg()[0]
    text = (f"## Serving benchmark: {args.model}, {'checkpoint ' + args.hypernet if args.hypernet else 'fresh HyperLoRA'}"
            f" ({args.encoder if not args.hypernet else 'its'} encoder), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load:.1f} at the end\n\n"
            + report(args, p, rows, batched))
    print(text)
    return text


if __name__ == "__main__":
    main()
