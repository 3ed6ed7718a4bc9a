"""A folder of per-document LoRA adapters: compact, crash safe, safe with several writer processes.

Layout::

    <root>/manifest.json                       format version, base model, LoraSpec, settings, dtype, created
    <root>/shards/<writer>-<n>.safetensors     many documents; keys "{doc_id}/{m}/A" [L, r, in], "{doc_id}/{m}/B"
    <root>/shards/<writer>-<n>.json            its index {"shard_bytes", "docs": {doc_id: {"meta", "bytes"}}}

Each writer process names its files ``<hostname>-<pid>-<random>-<n>`` so no two processes ever write the
same file. A shard is written (atomically) before its index (atomically): an index never points to a
partial shard, and a crash between the two leaves a shard that no index lists, which readers ignore.
Readers merge every index; a document listed twice keeps its first copy (by index time, then name).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from hyperprag.core.errors import InputError
from hyperprag.core.io import atomic_write_json
from hyperprag.core.lora import LoraSpec, LoraWeights, target_shapes

log = logging.getLogger(__name__)

STORE_FORMAT = "hyperprag-adapter-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


class StoreError(InputError):
    """Any problem with an adapter store; the message names the file involved."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The store folder or its manifest does not exist."""


class StoreMismatchError(StoreError, ValueError):
    """The store was made for another base model or LoRA spec; `field` names what differs."""

    def __init__(self, root: Path, field: str, expected, found):
        self.field, self.expected, self.found = field, expected, found
        super().__init__(f"adapter store {root}: {field} is {found!r} in {root / MANIFEST}, expected {expected!r}")


class StoreCorruptError(StoreError):
    """A store file is missing, truncated or unreadable; `path` is that file."""

    def __init__(self, path: Path, problem: str):
        self.path = path
        super().__init__(f"{path}: {problem}")


class MissingAdapterError(StoreError, KeyError):
    """A document the store has no adapter for (a KeyError too, for `except KeyError` callers)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def canonical_dtype(dtype: str | torch.dtype) -> str:
    """'float32' / 'float16' / 'bfloat16' for any accepted spelling."""
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in STORE_DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"storage dtype {dtype} not supported; use one of {sorted(STORE_DTYPES)}")
        return names[dtype]
    name = _DTYPE_ALIASES.get(dtype, dtype)
    if name not in STORE_DTYPES:
        raise ValueError(f"storage dtype {dtype!r} not supported; use one of {sorted(STORE_DTYPES)}")
    return name


def adapter_nbytes(shapes: dict[str, tuple[int, int, int]], rank: int, dtype: str | torch.dtype = "float32") -> int:
    """Tensor bytes of one adapter with `shapes` ({m: (L, in, out)}, see target_shapes) at `rank`."""
    size = torch.empty((), dtype=STORE_DTYPES[canonical_dtype(dtype)]).element_size()
    return sum(n_layers * rank * (d_in + d_out) for n_layers, d_in, d_out in shapes.values()) * size


def _writer_name() -> str:
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def _atomic_save_file(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors save_file to a temp file beside `path`, fsync, rename (no second in-memory copy)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreCorruptError(path, f"cannot read JSON ({err})") from err
    if not isinstance(data, dict):
        raise StoreCorruptError(path, "expected a JSON object")
    return data


def _compare(root: Path, manifest: dict, base_model: str | None, spec: LoraSpec | None,
             dtype: str | None = None) -> None:
    """Raise StoreMismatchError naming the first field of `manifest` that differs from what is expected."""
    if base_model is not None and manifest.get("base_model") != base_model:
        raise StoreMismatchError(root, "base_model", base_model, manifest.get("base_model"))
    if spec is not None:
        have = manifest["spec"]
        want = spec.to_dict()
        for key, field in [("rank", "rank"), ("alpha", "alpha"), ("target_modules", "target_modules"),
                           ("layers", "layers")]:
            if have.get(key) != want[key]:
                raise StoreMismatchError(root, field, want[key], have.get(key))
    if dtype is not None and manifest.get("dtype") != dtype:
        raise StoreMismatchError(root, "dtype", dtype, manifest.get("dtype"))


@dataclass
class _Entry:
    """Where one stored document lives."""

    shard: Path
    """The shard file holding its tensors."""
    meta: dict
    """The caller's metadata (JSON)."""
    nbytes: int
    """Tensor bytes of the adapter as stored."""


class AdapterStore:
    """Every document's LoRA by document id. Make one with `create` (writers) or `open` (readers)."""

    def __init__(self, root: str | Path, manifest: dict, shard_size: int = 256, strict: bool = True):
        """Use `AdapterStore.create` or `AdapterStore.open`; this takes an already validated manifest."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.root = Path(root)
        self.manifest = manifest
        self.spec = LoraSpec.from_dict(manifest["spec"])
        self.base_model: str = manifest["base_model"]
        self.settings: dict = manifest.get("settings") or {}
        self.dtype: str = manifest["dtype"]
        self.shard_size = shard_size
        self.strict = strict
        self._entries: dict[str, _Entry] = {}
        self._seen_indexes: set[str] = set()
        self._handles: dict[Path, object] = {}
        self._loaded: dict[Path, dict[str, Tensor]] = {}
        self._pending: dict[str, tuple[LoraWeights, dict]] = {}
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._by_content: dict[str, str] = {}  # content hash -> id, for the `_by_content_n` adapters seen
        self._by_content_n = 0
        self._writer: str | None = None
        self._writer_pid: int | None = None
        self._n = 0

    # ---- creating and opening -------------------------------------------------------------------

    @property
    def shards_dir(self) -> Path:
        return self.root / SHARDS

    @property
    def torch_dtype(self) -> torch.dtype:
        return STORE_DTYPES[self.dtype]

    @classmethod
    def create(cls, root: str | Path, base_model: str, spec: LoraSpec, settings: dict | None = None,
               dtype: str = "float32", exist_ok: bool = True, shard_size: int = 256) -> AdapterStore:
        """Make a store (or join an existing one whose manifest matches: StoreMismatchError otherwise)."""
        root = Path(root)
        dtype = canonical_dtype(dtype)
        settings = dict(settings or {})
        json.dumps(settings)  # fail here, not half-way, on settings that are not JSON
        (root / SHARDS).mkdir(parents=True, exist_ok=True)
        path = root / MANIFEST
        with FileLock(str(root / ".manifest.lock")):
            if path.exists():
                if not exist_ok:
                    raise FileExistsError(f"{path} exists (pass exist_ok=True to add to this store)")
                manifest = cls._load_manifest(root)
                _compare(root, manifest, base_model, spec, dtype)
                if (manifest.get("settings") or {}) != settings:
                    log.warning("adapter store %s was created with settings %s; now adding with %s",
                                root, manifest.get("settings"), settings)
            else:
                manifest = {"format": STORE_FORMAT, "format_version": FORMAT_VERSION, "base_model": base_model,
                            "spec": spec.to_dict(), "settings": settings, "dtype": dtype,
                            "created": datetime.now(UTC).isoformat(timespec="seconds")}
                atomic_write_json(path, manifest)
        store = cls(root, manifest, shard_size=shard_size)
        store.refresh()
        return store

    @classmethod
    def open(cls, root: str | Path, expect_base_model: str | None = None, expect_spec: LoraSpec | None = None,
             strict: bool = True, shard_size: int = 256) -> AdapterStore:
        """Open an existing store; `strict=False` skips (with a warning) shards that are missing or broken."""
        root = Path(root)
        if not root.is_dir():
            raise StoreNotFoundError(f"adapter store folder {root} does not exist")
        manifest = cls._load_manifest(root)
        _compare(root, manifest, expect_base_model, expect_spec)
        store = cls(root, manifest, shard_size=shard_size, strict=strict)
        store.refresh()
        return store

    @staticmethod
    def _load_manifest(root: Path) -> dict:
        path = root / MANIFEST
        if not path.exists():
            raise StoreNotFoundError(f"{path} does not exist: {root} is not an adapter store "
                                     "(make one with AdapterStore.create)")
        manifest = _read_json(path)
        if manifest.get("format") != STORE_FORMAT:
            raise StoreCorruptError(path, f"format is {manifest.get('format')!r}, expected {STORE_FORMAT!r}")
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise StoreCorruptError(path, f"format_version {manifest['format_version']} is newer than this "
                                          f"code reads ({FORMAT_VERSION}); upgrade hyperprag")
        for key in ("base_model", "spec", "dtype"):
            if key not in manifest:
                raise StoreCorruptError(path, f"missing field {key!r}")
        try:
            LoraSpec.from_dict(manifest["spec"])
            canonical_dtype(manifest["dtype"])
        except (KeyError, TypeError, ValueError) as err:
            raise StoreCorruptError(path, f"invalid spec/dtype ({err})") from err
        return manifest

    def refresh(self) -> int:
        """Read indexes written since the last call (by any process); returns how many documents were added."""
        if not self.shards_dir.is_dir():
            raise StoreCorruptError(self.shards_dir, "shards folder is missing")
        new = [p for p in self.shards_dir.glob("*.json") if p.name not in self._seen_indexes]
        new.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        added = 0
        for index_path in new:
            try:
                docs, shard = self._read_index(index_path)
            except StoreCorruptError as err:
                if self.strict:
                    raise
                log.warning("skipping %s", err)
                self._seen_indexes.add(index_path.name)
                continue
            self._seen_indexes.add(index_path.name)
            for doc_id, entry in docs.items():
                if doc_id in self._entries:
                    log.warning("adapter store %s: document %r is in %s and again in %s; keeping the first",
                                self.root, doc_id, self._entries[doc_id].shard.name, shard.name)
                    continue
                self._entries[doc_id] = _Entry(shard, entry.get("meta") or {}, int(entry.get("bytes", 0)))
                added += 1
        return added

    def _read_index(self, index_path: Path) -> tuple[dict, Path]:
        index = _read_json(index_path)
        docs = index.get("docs")
        if not isinstance(docs, dict):
            raise StoreCorruptError(index_path, "missing 'docs' mapping")
        shard = index_path.with_suffix(".safetensors")
        if not shard.exists():
            raise StoreCorruptError(shard, f"shard file is missing, but its index {index_path.name} lists "
                                           f"{len(docs)} adapters")
        size, expected = shard.stat().st_size, index.get("shard_bytes")
        if expected is not None and size != expected:
            raise StoreCorruptError(shard, f"shard is {size} bytes but its index {index_path.name} records "
                                           f"{expected} (truncated or overwritten)")
        return docs, shard

    # ---- writing -----------------------------------------------------------------------------------

    def _check_weights(self, doc_id: str, weights: LoraWeights) -> None:
        if weights.batched:
            raise ValueError(f"put({doc_id!r}): takes one unbatched adapter; use weights.select(i)")
        if set(weights.A) != set(self.spec.target_modules) or set(weights.B) != set(self.spec.target_modules):
            raise ValueError(f"put({doc_id!r}): adapter modules {sorted(weights.A)} != store targets "
                             f"{list(self.spec.target_modules)}")
        shapes = {}
        for m in self.spec.target_modules:
            a, b = weights.A[m], weights.B[m]  # [L, r, in], [L, out, r]
            if a.shape[1] != self.spec.rank or b.shape[2] != self.spec.rank or a.shape[0] != b.shape[0]:
                raise ValueError(f"put({doc_id!r}): {m} has A{tuple(a.shape)} B{tuple(b.shape)}; the store "
                                 f"holds rank {self.spec.rank} adapters")
            if self.spec.layers is not None and a.shape[0] != len(self.spec.layers):
                raise ValueError(f"put({doc_id!r}): {m} has {a.shape[0]} layers, spec has {len(self.spec.layers)}")
            shapes[m] = (a.shape[0], a.shape[2], b.shape[1])
        if self._shapes is None:
            self._shapes = shapes
        elif shapes != self._shapes:
            raise ValueError(f"put({doc_id!r}): shapes {shapes} differ from earlier adapters {self._shapes}")

    def put(self, doc_id: str, weights: LoraWeights, meta: dict | None = None) -> None:
        """Buffer one document's adapter (copied, cast to the store dtype); written by `flush`."""
        if not isinstance(doc_id, str) or not doc_id:
            raise ValueError(f"doc_id must be a non-empty string, got {doc_id!r}")
        if doc_id in self._entries or doc_id in self._pending:
            raise ValueError(f"document {doc_id!r} is already in adapter store {self.root}")
        self._check_weights(doc_id, weights)
        meta = dict(meta or {})
        try:
            json.dumps(meta)
        except TypeError as err:
            raise ValueError(f"put({doc_id!r}): meta is not JSON serializable ({err})") from err
        dt = self.torch_dtype
        copy = LoraWeights({m: weights.A[m].detach().to("cpu", dt, copy=True).contiguous() for m in weights.A},
                           {m: weights.B[m].detach().to("cpu", dt, copy=True).contiguous() for m in weights.B})
        self._pending[doc_id] = (copy, meta)
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> Path | None:
        """Write buffered adapters as one shard, then its index; returns the shard path (None if nothing)."""
        if not self._pending:
            return None
        if self._writer is None or self._writer_pid != os.getpid():  # a forked copy must not reuse names
            self._writer, self._writer_pid, self._n = _writer_name(), os.getpid(), 0
        name = f"{self._writer}-{self._n:05d}"
        self._n += 1  # never reuse a name, even after a failed flush
        shard = self.shards_dir / f"{name}.safetensors"
        index_path = self.shards_dir / f"{name}.json"
        tensors: dict[str, Tensor] = {}
        docs: dict[str, dict] = {}
        for doc_id, (w, meta) in self._pending.items():
            for m in self.spec.target_modules:
                tensors[f"{doc_id}/{m}/A"] = w.A[m]
                tensors[f"{doc_id}/{m}/B"] = w.B[m]
            docs[doc_id] = {"meta": meta, "bytes": w.num_bytes()}
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        _atomic_save_file(tensors, shard, {"format": "pt", "store": STORE_FORMAT, "dtype": self.dtype})
        # The index goes second: a crash before this line leaves an unlisted shard that readers ignore.
        atomic_write_json(index_path, {"format": STORE_FORMAT, "format_version": FORMAT_VERSION,
                                       "shard": shard.name, "shard_bytes": shard.stat().st_size, "docs": docs})
        self._seen_indexes.add(index_path.name)
        for doc_id, entry in docs.items():
            self._entries[doc_id] = _Entry(shard, entry["meta"], entry["bytes"])
        self._pending.clear()
        return shard

    def __enter__(self) -> AdapterStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.flush()  # buffered adapters are complete ones: keep them even if the block failed
        except Exception:
            if exc_type is None:
                raise
            log.exception("adapter store %s: flush on exit failed", self.root)
        finally:
            self.close()

    def close(self) -> None:
        """Drop cached shard handles and preloaded tensors (buffered adapters are kept)."""
        self._handles.clear()
        self._loaded.clear()

    # ---- reading ---------------------------------------------------------------------------------------

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._entries or doc_id in self._pending

    def __len__(self) -> int:
        return len(self._entries) + len(self._pending)

    def ids(self) -> list[str]:
        """Stored document ids (written ones in index order, then buffered ones)."""
        return [*self._entries, *self._pending]

    @property
    def pending(self) -> int:
        """Adapters buffered by `put` and not yet written."""
        return len(self._pending)

    def meta(self, doc_id: str) -> dict:
        if doc_id in self._pending:
            return dict(self._pending[doc_id][1])
        return dict(self._entry(doc_id).meta)

    def _entry(self, doc_id: str) -> _Entry:
        try:
            return self._entries[doc_id]
        except KeyError:
            raise MissingAdapterError(f"document {doc_id!r} is not in adapter store {self.root} ({len(self)} "
                                      "adapters; call refresh() to see adapters other processes wrote since "
                                      "open)") from None

    def id_for_content(self, content_hash: str) -> str | None:
        """The id under which the store holds an adapter of a document with this content (the
        "content_hash" its meta records; `teach` and `parameterize` write it), or None: how a passage whose
        corpus gave it another id finds its adapter."""
        if self._by_content_n != len(self):  # built on first use, rebuilt when adapters were added
            self._by_content = {}
            for doc_id in self.ids():
                self._by_content.setdefault(self.meta(doc_id).get("content_hash"), doc_id)
            self._by_content_n = len(self)
        return self._by_content.get(content_hash)

    def _handle(self, shard: Path):
        handle = self._handles.get(shard)
        if handle is None:
            try:
                handle = safe_open(str(shard), framework="pt", device="cpu")
            except Exception as err:  # safetensors raises its own error type
                raise StoreCorruptError(shard, f"cannot read safetensors shard ({err})") from err
            self._handles[shard] = handle
        return handle

    def _tensor(self, shard: Path, key: str) -> Tensor:
        loaded = self._loaded.get(shard)
        if loaded is not None:
            if key not in loaded:
                raise StoreCorruptError(shard, f"tensor {key!r} listed by its index is missing")
            return loaded[key]
        handle = self._handle(shard)
        try:
            return handle.get_tensor(key)
        except Exception as err:
            if key not in set(handle.keys()):  # a safe_open handle has no __contains__
                raise StoreCorruptError(shard, f"tensor {key!r} listed by its index is missing") from err
            raise StoreCorruptError(shard, f"cannot read tensor {key!r} ({err})") from err

    def get(self, doc_id: str, dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu"
            ) -> LoraWeights:
        """One document's adapter (A [L, r, in], B [L, out, r]) in the store dtype or `dtype` (e.g. float32)."""
        dt = None if dtype is None else STORE_DTYPES[canonical_dtype(dtype)]
        if doc_id in self._pending:
            w, meta = self._pending[doc_id]
            A, B = dict(w.A), dict(w.B)
        else:
            entry = self._entry(doc_id)
            meta = entry.meta
            A = {m: self._tensor(entry.shard, f"{doc_id}/{m}/A") for m in self.spec.target_modules}
            B = {m: self._tensor(entry.shard, f"{doc_id}/{m}/B") for m in self.spec.target_modules}
        A = {m: t.to(device=device, dtype=dt or t.dtype, copy=True) for m, t in A.items()}
        B = {m: t.to(device=device, dtype=dt or t.dtype, copy=True) for m, t in B.items()}
        return LoraWeights(A, B, {**meta, "doc_id": doc_id})

    def get_many(self, doc_ids: list[str], dtype: torch.dtype | str | None = None,
                 device: str | torch.device = "cpu") -> list[LoraWeights]:
        return [self.get(d, dtype=dtype, device=device) for d in doc_ids]

    def preload(self) -> AdapterStore:
        """Load every shard into memory, so `get` never touches the disk (fast answering)."""
        for shard in {e.shard for e in self._entries.values()}:
            if shard not in self._loaded:
                try:
                    self._loaded[shard] = load_file(str(shard))
                except Exception as err:
                    raise StoreCorruptError(shard, f"cannot read safetensors shard ({err})") from err
        self._handles.clear()
        return self

    def verify(self) -> AdapterStore:
        """Read every written shard's header (no tensor data) and check it lists each tensor its index
        promises: a damaged shard is found when the store is opened for a job, not half-way through it."""
        by_shard: dict[Path, list[str]] = {}
        for doc_id, entry in self._entries.items():
            by_shard.setdefault(entry.shard, []).append(doc_id)
        for shard, doc_ids in by_shard.items():
            if shard in self._loaded:
                keys = set(self._loaded[shard])
            else:
                try:
                    with safe_open(str(shard), framework="pt", device="cpu") as handle:
                        keys = set(handle.keys())
                except Exception as err:  # safetensors raises its own error type
                    raise StoreCorruptError(shard, f"cannot read safetensors shard ({err})") from err
            for doc_id in doc_ids:
                for m in self.spec.target_modules:
                    for part in ("A", "B"):
                        if f"{doc_id}/{m}/{part}" not in keys:
                            raise StoreCorruptError(shard, f"tensor '{doc_id}/{m}/{part}' listed by its index "
                                                           "is missing")
        return self

    def check_fits(self, base) -> AdapterStore:
        """Refuse, before anything is answered, adapters that cannot apply to the model `base`: target
        modules it lacks, other layer counts or sizes, tensors of another rank than the manifest's,
        unreadable shards (`verify`). Returns the store."""
        from hyperprag.core.models import model_id

        name = model_id(base)
        try:
            want = target_shapes(base, self.spec)  # {m: (layers, in, out)}
        except ValueError as err:
            raise StoreError(f"adapter store {self.root}: its target modules {list(self.spec.target_modules)} do "
                             f"not fit base model {name!r} ({err})") from None
        self.verify()
        if not len(self):
            return self
        first = self.ids()[0]
        w = self.get(first)
        have = {m: (w.A[m].shape[0], w.A[m].shape[2], w.B[m].shape[1]) for m in self.spec.target_modules}
        if have != want:
            raise StoreError(f"adapter store {self.root}: adapter {first!r} has shapes {have} (module: (layers, "
                             f"in, out)) but base model {name!r} needs {want}; the store was made for another "
                             "model")
        ranks = {w.A[m].shape[1] for m in have} | {w.B[m].shape[2] for m in have}
        if ranks != {self.spec.rank}:
            raise StoreError(f"adapter store {self.root}: adapter {first!r} has rank {sorted(ranks)} but its "
                             f"manifest says rank {self.spec.rank} ({self.root / MANIFEST})")
        return self

    def export_peft(self, doc_id: str, out_dir: str | Path, model_or_config) -> Path:
        """Write one document's adapter as a standard PEFT folder (see hyperprag.core.peft_io)."""
        from hyperprag.core.peft_io import export_peft

        return export_peft(self.get(doc_id, dtype=torch.float32), self.spec, out_dir, model_or_config,
                           self.base_model)

    def bytes_per_adapter(self) -> float:
        """Disk bytes per written adapter: shard files (tensors + header) and indexes, over document count."""
        if not self._entries:
            raise ValueError(f"adapter store {self.root} has no written adapters yet")
        shards = {e.shard for e in self._entries.values()}
        total = sum(s.stat().st_size + s.with_suffix(".json").stat().st_size for s in shards)
        return total / len(self._entries)

    def __repr__(self) -> str:
        return (f"AdapterStore({str(self.root)!r}, base_model={self.base_model!r}, rank={self.spec.rank}, "
                f"dtype={self.dtype}, adapters={len(self)})")
