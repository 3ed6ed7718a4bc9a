"""Where a token-level hypernetwork training step spends its time, on the embedded base model.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/hypernet_step.py --docs 8 --qa 4 --repeats 3 [--threads 2] \
        [--precision bf16-mixed]

One step of configs/hypernet/keyvalue_perceiver.yaml's recipe on synthetic documents, timed in parts: the frozen base
model's forward over the documents (their per-layer token states, no gradients), the hypernetwork's
forward, the base model's forward and backward over the QA sequences with each document's adapter (with
the chat prefix computed once per document, and, for comparison, once per sequence), the hypernetwork's
backward share and the optimizer step. Reports the median over --repeats of each part.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--docs", type=int, default=8, help="documents per step")
    p.add_argument("--qa", type=int, default=4, help="questions per document")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--precision", default="32", choices=["32", "bf16-mixed"],
                   help="as Lightning's Trainer(precision=...): bf16-mixed runs the step under bf16 autocast")
    a = p.parse_args(argv)
    import torch

    from hypernet.config import HyperNetConfig
    from hypernet.encoders import TokenStateEncoder
    from hypernet.losses import lm_loss, select_logits, target_mask
    from hypernet.model import build_hypernet, count_parameters
    from hyperprag.core.lora import LoraSpec, target_shapes
    from hyperprag.core.models import load_base_model
    from hyperprag.demo.synth import generate_synthetic
    from training.hypernet_data import document_examples
    from training.sequences import SequenceOptions, collate

    if a.threads:
        torch.set_num_threads(a.threads)
    base, tok = load_base_model(a.model)
    base.requires_grad_(False)
    spec = LoraSpec(rank=a.rank)
    config = HyperNetConfig(arch="perceiver", latent_dim=256, heads=4, blocks=2, bias_rank=2, b_scale=0.02,
                            emb_dim=base.config.hidden_size)
    torch.manual_seed(0)  # the same start in either precision, so their losses compare
    net = build_hypernet(config, target_shapes(base, spec), spec)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    mixed = a.precision == "bf16-mixed"
    encoder = TokenStateEncoder(base, tok, compute_dtype="bfloat16" if mixed else "float32")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed)  # what Lightning wraps steps in
    docs, questions = generate_synthetic(a.docs * a.repeats, seed=0)
    options = SequenceOptions(kinds=("qa_closed",), max_length=256)
    parts: dict[str, list[float]] = {}

    @contextmanager
    def timed(name: str):
        t = time.perf_counter()
        yield
        parts.setdefault(name, []).append(time.perf_counter() - t)

    tokens, losses = {}, []
    for r in range(a.repeats):
        chunk = docs[r * a.docs:(r + 1) * a.docs]
        examples = []
        for i, d in enumerate(chunk):
            qa = [SimpleNamespace(question=q.question, answer=q.answers[0], full_answer="")
                  for q in questions if q.passages[0].content_hash == d.content_hash]
            ex, _ = document_examples(tok, d, SimpleNamespace(qa=(qa * a.qa)[: a.qa], rewrites=[]), options)
            examples += [SimpleNamespace(**{**vars(e), "doc_index": i}) for e in ex]
        batch = collate(examples, tok.pad_token_id)
        ans = target_mask(batch["labels"], batch["attention_mask"])
        targets = batch["labels"][:, 1:][ans]
        enc = encoder.tokenize([d.full_text for d in chunk])
        tokens = {"documents": int(enc["attention_mask"].sum()), "qa": int(batch["attention_mask"].sum())}
        with timed("document states (base forward, no grad)"):
            states = encoder.states(enc["input_ids"], enc["attention_mask"])
        with timed("hypernetwork forward"), autocast:
            weights = net(states)
        ids, mask, groups = batch["input_ids"], batch["attention_mask"], batch["doc_index"]
        with timed("QA forward, prefix once per document"), autocast:
            loss = lm_loss(select_logits(base, spec, weights, ids, mask, ans, groups=groups), targets)
        losses.append(float(loss.detach()))
        with timed("QA + hypernetwork backward"):
            loss.backward()
        with timed("optimizer step"):
            opt.step()
            opt.zero_grad()
        with torch.no_grad(), autocast:
            shared = net(states)
            with timed("(for comparison) QA forward without gradients, prefix per sequence"):
                select_logits(base, spec, shared.select(groups), ids, mask, ans)
            with timed("(for comparison) QA forward without gradients, prefix once per document"):
                select_logits(base, spec, shared, ids, mask, ans, groups=groups)
    medians = {k: statistics.median(v) for k, v in parts.items()}
    step = sum(v for k, v in medians.items() if not k.startswith("("))
    print(f"{a.docs} documents x {a.qa} questions, rank {a.rank}, {count_parameters(net):,} hypernetwork "
          f"parameters, {torch.get_num_threads()} threads, precision {a.precision}; tokens per step: {tokens}")
    print("| part | seconds | share of the step |\n|---|---|---|")
    for k, v in medians.items():
        share = f"{v / step:.0%}" if not k.startswith("(") else "-"
        print(f"| {k} | {v:.2f} | {share} |")
    print(f"| **one training step** | **{step:.2f}** | 100% |")
    print("answer loss at each step: " + ", ".join(f"{x:.4f}" for x in losses))
    return {"medians": medians, "step": step, "tokens": tokens, "losses": losses}


if __name__ == "__main__":
    main()
