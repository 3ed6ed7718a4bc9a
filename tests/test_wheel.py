"""The package works outside the checkout: a wheel built from this tree, installed into a fresh venv, runs
`hyperprag demo --help` and the demo's training path (which reads configs/) from another folder.

The fresh venv reuses the dependencies already installed in this one (a path line in a .pth file, so no
download and no second torch) but not its editable hyperprag: only the wheel provides the project.
Marked `wheel` (about half a minute to two); skip it with `-m "not wheel"`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*cache")

pytestmark = pytest.mark.wheel


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd[:3]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel of this working tree installed; returns its python."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # built from a copy: the build writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, source, symlinks=True, ignore=SKIP)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
          str(source)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("hyperprag-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # this venv's packages
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], cwd=tmp)
    return python


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYPERPRAG_DEBUG")} | \
        {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def test_the_installed_script_answers_from_another_folder(installed, tmp_path):
    script = installed.parent / "hyperprag"
    out = _run([str(script), "demo", "--help"], cwd=tmp_path, env=_clean_env())
    assert "--train" in out and "Train teacher LoRAs and the hypernetwork" in out


def test_the_training_path_finds_its_configs_in_the_installed_package(installed, tmp_path):
    """train_demo_hypernet (what `demo --train` runs) on a tiny model and 2 documents, from another folder:
    the configs it reads are the wheel's copies, and the project is imported from the wheel only."""
    from tests.conftest import make_tiny_llama, make_tiny_tokenizer

    model = tmp_path / "tiny-model"
    make_tiny_llama().save_pretrained(model)
    make_tiny_tokenizer().save_pretrained(model)
    code = f"""
import hyperprag, hyperprag.core.paths as paths, hyperprag.pipeline as pipeline
from hypernet.checkpoint import load_hypernet
assert "{installed.parent.parent}" in hyperprag.__file__, hyperprag.__file__
assert not paths.CONFIGS.is_symlink() and paths.config_path(pipeline.HYPERNET_CONFIG).is_file()
exported = pipeline.train_demo_hypernet({str(model)!r}, __import__("pathlib").Path("out"), limit=2)
print("exported", load_hypernet(exported).base_model)
"""
    out = _run([str(installed), "-c", code], cwd=tmp_path, env=_clean_env())
    assert f"exported {model}" in out and (tmp_path / "out" / "teacher" / "manifest.json").exists()
