"""A trained hypernetwork as a folder: config.json (everything needed to rebuild it) + model.safetensors.

No pickle anywhere: the config is JSON, the weights safetensors. Loading checks the base model and the
LoRA spec against what the caller expects and refuses a mismatch with a message naming the field,
because a hypernetwork's outputs only fit the architecture and adapter layout it was trained for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hypernet.config import EncoderSpec, HyperNetConfig
from hypernet.model import Shapes, build_hypernet
from hyperprag.core.errors import InputError
from hyperprag.core.io import write_dir
from hyperprag.core.lora import LoraSpec, LoraWeights

FORMAT = "hyperprag-hypernet"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class HypernetCheckpointError(InputError, ValueError):
    """A hypernetwork folder that cannot be read (missing or corrupt file)."""


class HypernetMismatchError(HypernetCheckpointError):
    """A hypernetwork trained for another base model, LoRA spec or encoder than the caller expects."""

    def __init__(self, folder: Path, field_name: str, expected, found):
        self.field, self.expected, self.found = field_name, expected, found
        super().__init__(f"hypernetwork {folder}: {field_name} is {found!r} in {folder / CONFIG_FILE}, but "
                         f"{expected!r} was expected; it generates adapters only for the base model and "
                         "LoRA spec it was trained with")


@dataclass
class LoadedHypernet:
    """A hypernetwork and the facts it was trained under."""

    model: nn.Module
    config: HyperNetConfig
    spec: LoraSpec
    base_model: str
    encoder: EncoderSpec
    shapes: Shapes
    meta: dict = field(default_factory=dict)

    @torch.no_grad()
    def generate(self, embeddings: torch.Tensor) -> LoraWeights:
        """Batched adapters [b, ...] for document embeddings [b, d] (no gradients, the model's device)."""
        self.model.eval()
        param = next(self.model.parameters())
        return self.model(embeddings.to(param.device, param.dtype))


def save_hypernet(folder: str | Path, model: nn.Module, config: HyperNetConfig, spec: LoraSpec, base_model: str,
                  encoder: EncoderSpec, shapes: Shapes, meta: dict | None = None) -> Path:
    """Write the folder atomically (a finished folder replaces any previous one whole); returns it."""
    folder = Path(folder)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "base_model": base_model,
           "spec": spec.to_dict(), "hypernet": config.to_dict(), "encoder": encoder.to_dict(),
           "shapes": {m: list(s) for m, s in shapes.items()}, "meta": meta or {}}
    json.dumps(doc)  # fail before writing anything on non-JSON meta
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})

    return write_dir(folder, fill, marker=CONFIG_FILE)


def read_config(folder: str | Path) -> dict:
    """The parsed config.json of a hypernetwork folder (validated format)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.exists():
        raise HypernetCheckpointError(f"{path}: missing ({folder} is not a hypernetwork folder)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise HypernetCheckpointError(f"{path}: cannot read JSON ({err})") from err
    if doc.get("format") != FORMAT:
        raise HypernetCheckpointError(f"{path}: format is {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise HypernetCheckpointError(f"{path}: format_version {doc['format_version']} is newer than this code")
    for key in ("base_model", "spec", "hypernet", "encoder", "shapes"):
        if key not in doc:
            raise HypernetCheckpointError(f"{path}: missing field {key!r}")
    return doc


def load_hypernet(folder: str | Path, expect_base_model: str | None = None, expect_spec: LoraSpec | None = None,
                  expect_shapes: Shapes | None = None, device: str | torch.device = "cpu") -> LoadedHypernet:
    """Rebuild the hypernetwork in `folder`; HypernetMismatchError if it was made for something else."""
    folder = Path(folder)
    doc = read_config(folder)
    try:
        spec = LoraSpec.from_dict(doc["spec"])
        config = HyperNetConfig.from_dict(doc["hypernet"])
        encoder = EncoderSpec.from_dict(doc["encoder"])
        shapes = {m: tuple(int(x) for x in s) for m, s in doc["shapes"].items()}
    except (KeyError, TypeError, ValueError) as err:
        raise HypernetCheckpointError(f"{folder / CONFIG_FILE}: invalid field ({err})") from err
    if expect_base_model is not None and doc["base_model"] != expect_base_model:
        raise HypernetMismatchError(folder, "base_model", expect_base_model, doc["base_model"])
    if expect_spec is not None:
        want, have = expect_spec.to_dict(), spec.to_dict()
        for key in ("rank", "alpha", "target_modules", "layers"):
            if want[key] != have[key]:
                raise HypernetMismatchError(folder, f"spec.{key}", want[key], have[key])
    if expect_shapes is not None:
        want_shapes = {m: tuple(expect_shapes[m]) for m in spec.target_modules if m in expect_shapes}
        have_shapes = {m: shapes[m] for m in spec.target_modules}
        if want_shapes != have_shapes:
            raise HypernetMismatchError(folder, "shapes", want_shapes, have_shapes)
    wpath = folder / WEIGHTS_FILE
    if not wpath.exists():
        raise HypernetCheckpointError(f"{wpath}: missing")
    try:
        state = load_file(str(wpath))
    except Exception as err:  # safetensors raises its own error type on a corrupt file
        raise HypernetCheckpointError(f"{wpath}: cannot read safetensors ({err})") from err
    model = build_hypernet(config, shapes, spec)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise HypernetCheckpointError(f"{wpath}: weights do not fit the config (missing {missing[:3]}, "
                                      f"unexpected {unexpected[:3]})")
    model.to(device).eval()
    return LoadedHypernet(model, config, spec, doc["base_model"], encoder, shapes, doc.get("meta") or {})
