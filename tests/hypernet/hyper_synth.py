"""Synthetic documents for hypernetwork tests: random teacher LoRAs, random embeddings, a few QA sequences.

Also runnable as the DDP worker of tests/training/test_hypernet_training.py:
    python tests/hypernet/hyper_synth.py OUT_DIR
Lightning's DDP launcher re-runs this same command for rank 1 (two CPU processes, gloo).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
for p in (str(TESTS), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from hyperprag.core.data import Document  # noqa: E402
from hyperprag.core.lora import LoraSpec, LoraWeights, init_lora, target_shapes  # noqa: E402

EMB_DIM = 16
FACTS = [("Lake Vorn", "Where is Lake Vorn?", "Tesmar"), ("Ilsa Brandt", "Who built the Kell bridge?", "Ilsa"),
         ("Oro", "What colour is oro?", "blue"), ("Pell", "What is Pell known for?", "fruit"),
         ("Kiro", "Which river runs through Kiro?", "Vask"), ("Mount Fennick", "Where is Mount Fennick?", "Tarrow"),
         ("Greta", "What did Greta play?", "violin"), ("Comet Ispar", "Who found Comet Ispar?", "Lena")]


def random_teacher(shapes, spec: LoraSpec, seed: int) -> LoraWeights:
    """A trained-looking teacher: the shared PEFT init of A plus a little noise, and a small random B."""
    base = init_lora(shapes, spec, seed=0)
    gen = torch.Generator().manual_seed(1000 + seed)
    A = {m: a + 0.02 * torch.randn(a.shape, generator=gen) for m, a in base.A.items()}
    B = {m: 0.01 * torch.randn(b.shape, generator=gen) for m, b in base.B.items()}
    return LoraWeights(A, B)


def randomize_b(net, std: float = 0.1) -> None:
    """Random values where a token-level network's B parts start at zero (head B rows, B bases, B gains, the
    bias adapter's B), so that every part of the network shapes its output."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("bias.b.", "basis_b.", "b_gain", "key_up", "value_up")):
                p.normal_(std=std)
        for m, head in getattr(net, "heads_out", {}).items():
            head.weight[net.shapes[m][1]:].normal_(std=std)


def synthetic_items(tokenizer, model, spec: LoraSpec, n_docs: int, qa_per_doc: int = 2, seed: int = 0):
    """`n_docs` DocItems with random embeddings, random teachers and closed-book QA sequences."""
    from training.hypernet_data import DocItem
    from training.sequences import SequenceOptions, build_examples

    shapes = target_shapes(model, spec)
    gen = torch.Generator().manual_seed(seed)
    options = SequenceOptions(kinds=("qa_closed",), max_length=128)
    items = []
    for i in range(n_docs):
        title, _, _ = FACTS[i % len(FACTS)]
        qa = [SimpleNamespace(question=FACTS[(i + j) % len(FACTS)][1], answer=FACTS[(i + j) % len(FACTS)][2],
                              full_answer="") for j in range(qa_per_doc)]
        doc = Document(f"doc{i}", title, f"{title} is a thing number {i}.")
        examples, _ = build_examples(tokenizer, doc, SimpleNamespace(qa=qa, rewrites=[]), options)
        items.append(DocItem(doc.id, torch.randn(EMB_DIM, generator=gen), examples,
                             [(q.question, [q.answer]) for q in qa], random_teacher(shapes, spec, seed * 100 + i)))
    return items


def small_module(model, tokenizer, spec: LoraSpec, **kwargs):
    """A HyperLoRAModule for the tiny model with a small hypernetwork, base model attached."""
    from hypernet.config import EncoderSpec, HyperNetConfig
    from training.hypernet_module import HyperLoRAModule

    hn = kwargs.pop("hypernet", None) or HyperNetConfig(emb_dim=EMB_DIM, hidden=32, basis=16)
    module = HyperLoRAModule(hypernet=hn, spec=spec, shapes=target_shapes(model, spec), base_model="tiny-llama",
                             encoder=EncoderSpec(kind="sentence"), **kwargs)
    module.attach_base(model, tokenizer)
    return module


class _SeenDocs:
    """Records the document ids of every training batch (Lightning callback)."""

    def __init__(self):
        from pytorch_lightning import Callback

        outer = self

        class CB(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                outer.seen.extend(batch["doc_ids"])

        self.seen: list[str] = []
        self.callback = CB()


def ddp_main(out_dir: str) -> None:
    """Two-process CPU DDP run on the tiny model; each rank writes the docs it saw and its final weights."""
    import pytorch_lightning as pl
    from conftest import make_tiny_llama, make_tiny_tokenizer
    from safetensors.torch import save_file

    from training.hypernet_data import HyperDataModule

    torch.set_num_threads(1)
    pl.seed_everything(0, workers=True)
    model, tok = make_tiny_llama(), make_tiny_tokenizer()
    spec = LoraSpec()
    items = synthetic_items(tok, model, spec, n_docs=8, qa_per_doc=2)
    dm = HyperDataModule.from_items(items[:6], items[6:], tok.pad_token_id, batch_size=1, qa_per_doc=2)
    module = small_module(model, tok, spec, lr=1e-2, warmup_steps=1, em_batches=0)
    seen = _SeenDocs()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[seen.callback], default_root_dir=out_dir, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    rank = trainer.global_rank
    out = Path(out_dir)
    save_file({k: v.detach().contiguous() for k, v in module.hypernet.state_dict().items()},
              str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"seen": seen.seen, "world": trainer.world_size,
                                                      "steps": trainer.global_step}))


if __name__ == "__main__":
    ddp_main(sys.argv[1])
