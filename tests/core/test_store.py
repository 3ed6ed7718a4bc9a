"""AdapterStore: exact round trips, clear errors on mismatch/corruption, crash and multi-writer safety."""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing as mp

import pytest
import torch

from hyperprag.core import store as store_mod
from hyperprag.core.lora import LoraSpec, LoraWeights, apply_lora, target_shapes
from hyperprag.core.store import (
    AdapterStore,
    StoreCorruptError,
    StoreMismatchError,
    StoreNotFoundError,
    adapter_nbytes,
)

SPEC = LoraSpec(rank=2, alpha=32)
SHAPES = {"gate_proj": (2, 16, 24), "up_proj": (2, 16, 24), "down_proj": (2, 24, 16)}  # (L, in, out)


def make_weights(seed: int, shapes=SHAPES, rank: int = 2) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    return LoraWeights({m: torch.randn(n, rank, i, generator=g) for m, (n, i, o) in shapes.items()},
                       {m: torch.randn(n, o, rank, generator=g) for m, (n, i, o) in shapes.items()})


def assert_same(a: LoraWeights, b: LoraWeights, atol: float = 0.0) -> None:
    for m in SPEC.target_modules:
        torch.testing.assert_close(a.A[m], b.A[m], atol=atol, rtol=0)
        torch.testing.assert_close(a.B[m], b.B[m], atol=atol, rtol=0)


def fill(root, n: int = 5, shard_size: int = 2, dtype: str = "float32") -> AdapterStore:
    with AdapterStore.create(root, "tiny-base", SPEC, settings={"lr": 3e-4}, dtype=dtype,
                             shard_size=shard_size) as st:
        for i in range(n):
            st.put(f"doc{i}", make_weights(i), meta={"title": f"T{i}"})
    return st


def test_round_trip_exact(tmp_path):
    st = fill(tmp_path / "s", n=5, shard_size=2)
    assert st.pending == 0 and len(list((tmp_path / "s" / "shards").glob("*.safetensors"))) == 3
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["base_model"] == "tiny-base" and manifest["spec"] == SPEC.to_dict()
    assert manifest["settings"] == {"lr": 3e-4} and manifest["dtype"] == "float32" and manifest["created"]

    rd = AdapterStore.open(tmp_path / "s", expect_base_model="tiny-base", expect_spec=SPEC)
    assert len(rd) == 5 and sorted(rd.ids()) == [f"doc{i}" for i in range(5)]
    assert "doc3" in rd and "doc9" not in rd
    assert rd.meta("doc3") == {"title": "T3"}
    w = rd.get("doc3")
    assert w.meta["doc_id"] == "doc3" and w.A["gate_proj"].dtype == torch.float32 and not w.batched
    assert_same(w, make_weights(3))
    for i, got in enumerate(rd.get_many(["doc0", "doc4", "doc1"])):
        assert_same(got, make_weights([0, 4, 1][i]))
    rd.preload()
    assert_same(rd.get("doc2"), make_weights(2))
    with pytest.raises(KeyError, match="doc9"):
        rd.get("doc9")
    payload = adapter_nbytes({m: s for m, s in SHAPES.items()}, 2, "float32")
    assert payload <= rd.bytes_per_adapter() < payload + 2048  # header + index overhead is small


def test_pending_adapters_are_visible_before_flush(tmp_path):
    st = AdapterStore.create(tmp_path / "s", "tiny-base", SPEC)
    st.put("a", make_weights(0))
    assert "a" in st and st.pending == 1 and len(st) == 1
    assert_same(st.get("a"), make_weights(0))
    assert len(AdapterStore.open(tmp_path / "s")) == 0  # nothing written yet
    st.flush()
    assert len(AdapterStore.open(tmp_path / "s")) == 1


@pytest.mark.parametrize("dtype,atol", [("float16", 5e-3), ("bf16", 3e-2)])
def test_half_precision(tmp_path, dtype, atol):
    fill(tmp_path / "s", n=3, dtype=dtype)
    rd = AdapterStore.open(tmp_path / "s")
    stored = {"float16": torch.float16, "bf16": torch.bfloat16}[dtype]
    assert rd.get("doc1").A["up_proj"].dtype == stored
    w = rd.get("doc1", dtype=torch.float32)
    assert w.B["down_proj"].dtype == torch.float32
    assert_same(w, make_weights(1), atol=atol)
    half = adapter_nbytes(SHAPES, 2, dtype)
    assert half * 2 == adapter_nbytes(SHAPES, 2, "float32") and rd.get("doc1").num_bytes() == half
    assert half <= rd.bytes_per_adapter() < half + 2048


def test_manifest_mismatch(tmp_path):
    root = tmp_path / "s"
    fill(root, n=1)
    cases = [(dict(base_model="other"), "base_model"), (dict(spec=LoraSpec(rank=4)), "rank"),
             (dict(spec=LoraSpec(alpha=16)), "alpha"),
             (dict(spec=LoraSpec(target_modules=("up_proj", "down_proj"))), "target_modules"),
             (dict(spec=LoraSpec(layers=(0, 1))), "layers"), (dict(dtype="bfloat16"), "dtype")]
    for change, field in cases:
        kwargs = {"base_model": "tiny-base", "spec": SPEC, **change}
        with pytest.raises(StoreMismatchError, match=field) as err:
            AdapterStore.create(root, **kwargs)
        assert err.value.field == field
    AdapterStore.create(root, "tiny-base", SPEC, dtype="fp32")  # same manifest: joins the store
    with pytest.raises(FileExistsError):
        AdapterStore.create(root, "tiny-base", SPEC, exist_ok=False)
    with pytest.raises(StoreMismatchError, match="base_model"):
        AdapterStore.open(root, expect_base_model="smollm2-135m")
    with pytest.raises(StoreMismatchError, match="rank"):
        AdapterStore.open(root, expect_spec=LoraSpec(rank=8))
    with pytest.raises(StoreMismatchError, match="target_modules"):
        AdapterStore.open(root, expect_spec=LoraSpec(target_modules=("gate_proj",)))


def test_missing_store(tmp_path):
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        AdapterStore.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreNotFoundError, match="manifest.json"):
        AdapterStore.open(tmp_path / "empty")


def test_put_validation(tmp_path):
    st = AdapterStore.create(tmp_path / "s", "tiny-base", SPEC)
    st.put("a", make_weights(0))
    with pytest.raises(ValueError, match="already"):
        st.put("a", make_weights(1))
    with pytest.raises(ValueError, match="rank 2"):
        st.put("b", make_weights(1, rank=3))
    with pytest.raises(ValueError, match="unbatched"):
        st.put("b", LoraWeights.stack([make_weights(1), make_weights(2)]))
    with pytest.raises(ValueError, match="shapes"):
        st.put("b", make_weights(1, shapes={m: (3, i, o) for m, (_, i, o) in SHAPES.items()}))
    with pytest.raises(ValueError, match="JSON"):
        st.put("b", make_weights(1), meta={"x": object()})
    src = make_weights(7)
    st.put("c", src)
    src.A["gate_proj"].zero_()  # the store keeps its own copy
    assert_same(st.get("c"), make_weights(7))


def _shard_files(root):
    return sorted((root / "shards").glob("*.safetensors"))


def test_truncated_shard_names_file(tmp_path):
    root = tmp_path / "s"
    fill(root, n=2, shard_size=2)
    (shard,) = _shard_files(root)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreCorruptError, match=shard.name) as err:
        AdapterStore.open(root)
    assert err.value.path == shard and "truncated" in str(err.value)
    assert len(AdapterStore.open(root, strict=False)) == 0  # lenient mode skips the broken shard
    # Without the recorded size, reading the truncated file still fails with the file's name.
    index = shard.with_suffix(".json")
    rec = json.loads(index.read_text())
    del rec["shard_bytes"]
    index.write_text(json.dumps(rec))
    rd = AdapterStore.open(root)
    with pytest.raises(StoreCorruptError, match=shard.name):
        rd.get("doc0")


def test_index_without_shard(tmp_path):
    root = tmp_path / "s"
    fill(root, n=2, shard_size=2)
    (shard,) = _shard_files(root)
    shard.unlink()
    with pytest.raises(StoreCorruptError, match="missing") as err:
        AdapterStore.open(root)
    assert err.value.path == shard and shard.name in str(err.value)


def test_crash_between_shard_and_index(tmp_path, monkeypatch):
    root = tmp_path / "s"
    fill(root, n=2, shard_size=10)
    st = AdapterStore.create(root, "tiny-base", SPEC, shard_size=10)
    st.put("late0", make_weights(10))
    st.put("late1", make_weights(11))
    seen = {}

    def crash(path, obj):  # the index write: check the shard is already complete, then "die"
        shard = path.with_suffix(".safetensors")
        seen["shard_complete_before_index"] = shard.exists() and shard.stat().st_size > 0
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(store_mod, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        st.flush()
    monkeypatch.undo()
    assert seen["shard_complete_before_index"]
    assert len(_shard_files(root)) == 2  # the orphan shard is on disk ...
    rd = AdapterStore.open(root)
    assert sorted(rd.ids()) == ["doc0", "doc1"] and "late0" not in rd  # ... but ignored
    assert not list((root / "shards").glob(".*.tmp"))  # no temp files left behind
    # The writer still holds its buffer: a retry writes it under a fresh name.
    assert st.pending == 2
    st.flush()
    rd = AdapterStore.open(root)
    assert len(rd) == 4
    assert_same(rd.get("late1"), make_weights(11))


def test_duplicates_keep_first_with_warning(tmp_path, caplog):
    root = tmp_path / "s"
    a = AdapterStore.create(root, "tiny-base", SPEC)
    b = AdapterStore.create(root, "tiny-base", SPEC)  # a second writer that has not seen a's docs
    a.put("x", make_weights(1))
    a.flush()
    b.put("x", make_weights(2))
    b.flush()
    with caplog.at_level(logging.WARNING, logger="hyperprag.core.store"):
        rd = AdapterStore.open(root)
    assert len(rd) == 1 and "keeping the first" in caplog.text
    assert_same(rd.get("x"), make_weights(1))
    assert a.refresh() == 0 and "x" in a


def test_refresh_sees_other_writers(tmp_path):
    root = tmp_path / "s"
    reader = AdapterStore.create(root, "tiny-base", SPEC)
    fill(root, n=3, shard_size=2)
    assert len(reader) == 0
    assert reader.refresh() == 3 and len(reader) == 3


def _writer_process(root: str, start: int, n: int, barrier) -> None:
    barrier.wait(timeout=60)  # both create the manifest and write at the same moment
    st = AdapterStore.create(root, "tiny-base", SPEC, shard_size=8)
    with st:
        for i in range(start, start + n):
            st.put(f"doc{i}", make_weights(i), meta={"i": i})
            if i % 7 == 0:
                st.refresh()  # readers and writers interleave with the other process's shards


def test_two_processes_write_concurrently(tmp_path):
    root = str(tmp_path / "s")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer_process, args=(root, start, 50, barrier)) for start in (0, 50)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    rd = AdapterStore.open(root)
    ids = rd.ids()
    assert len(ids) == len(set(ids)) == 100 and set(ids) == {f"doc{i}" for i in range(100)}
    writers = {p.name.rsplit("-", 1)[0] for p in _shard_files(tmp_path / "s")}
    assert len(writers) == 2 and len(_shard_files(tmp_path / "s")) == 2 * 7  # ceil(50 / 8) shards each
    for i in range(100):
        assert rd.meta(f"doc{i}") == {"i": i}
        assert_same(rd.get(f"doc{i}"), make_weights(i))


def test_export_peft_from_store(tiny_llama, tmp_path):
    from peft import PeftModel

    spec = LoraSpec(rank=2, alpha=32)
    shapes = target_shapes(tiny_llama, spec)
    st = AdapterStore.create(tmp_path / "s", "tiny-llama", spec)
    with st:
        st.put("doc", LoraWeights({m: a * 0.1 for m, a in make_weights(3, shapes).A.items()},
                                  {m: b * 0.1 for m, b in make_weights(3, shapes).B.items()}))
    rd = AdapterStore.open(tmp_path / "s")
    folder = rd.export_peft("doc", tmp_path / "peft", tiny_llama)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"
    ids = torch.randint(4, 260, (2, 9), generator=torch.Generator().manual_seed(0))
    peft_model = PeftModel.from_pretrained(copy.deepcopy(tiny_llama), str(folder)).eval()
    with torch.no_grad():
        got = peft_model(ids).logits
        with apply_lora(tiny_llama, spec, rd.get("doc")):
            want = tiny_llama(ids).logits
        base = tiny_llama(ids).logits
    assert (want - base).abs().max() > 1e-3
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
