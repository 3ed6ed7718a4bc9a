"""Reliability, end to end on a tiny saved Llama: killed jobs resume to the uninterrupted result, bad inputs
follow `--on_error`, mismatched or corrupt artifacts are refused before any answer, loading is pickle free,
non-finite losses stop (or skip) training, and sharded teachers cover a corpus exactly once.

Concurrent writers of one adapter store: tests/core/test_store.py::test_two_processes_write_concurrently
(two processes, 100 adapters, every one exactly once); here two sharded `teach` processes share a store.

Killed runs are real `python -m hyperprag.cli`-style subprocesses (a small driver, so that a slow-down can
be switched on), killed with SIGKILL once they have written part of their output.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from hyperprag.core.data import DataError
from hyperprag.core.lora import LoraSpec, LoraWeights, init_lora, target_shapes
from hyperprag.core.store import AdapterStore, StoreCorruptError, StoreError, StoreMismatchError

ROOT = Path(__file__).resolve().parents[1]
DEMO_CORPUS = ROOT / "hyperprag" / "demo" / "train" / "corpus.jsonl"
DEMO_QUESTIONS = ROOT / "hyperprag" / "demo" / "train" / "questions.jsonl"
N_DOCS = 12
TEACH_YAML = "epochs: 1\nlr: 1e-2\nkinds: [qa_closed]\nmax_qa: 2\nbatch_size: 2\ndocs_per_step: 2\nmax_length: 256\n"
ATOL = 1e-6  # sharded runs group documents differently (float32 batching); resumed runs must be bitwise equal

# The subprocess entry point: `hyperprag.cli.main(argv)` with one thread, and with HP_SLOW=s a pause of s
# seconds (a) inside every adapter-shard write after the first, when the temporary shard exists but is not
# yet renamed into place and has no index, and (b) after every batch of predictions is appended (to the file
# named HP_SLOW_FILE only, when that is set). A kill
# then lands mid-job at a known point; without HP_SLOW the driver is plain `hyperprag`.
DRIVER = '''
import os, sys, time
import torch
torch.set_num_threads(1)
slow = float(os.environ.get("HP_SLOW", "0"))
if slow:
    import hyperprag.core.store as store
    import inference.evaluate as evaluate
    real_save, real_append, writes = store.save_file, evaluate.append_jsonl, [0]

    def save_file(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        writes[0] += 1
        if writes[0] >= 2:
            time.sleep(slow)

    def append_jsonl(path, records):
        real_append(path, records)
        if os.path.basename(path) == os.environ.get("HP_SLOW_FILE", os.path.basename(path)):
            time.sleep(slow)

    store.save_file, evaluate.append_jsonl = save_file, append_jsonl
from hyperprag.cli import main
main(sys.argv[1:])
'''

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "JSONARGPARSE_DEPRECATION_WARNINGS": "off",
       "WANDB_MODE": "offline"}


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------------
# Shared artifacts (module scope): tiny model folder, corpus, questions, teacher settings, hypernetwork
# ---------------------------------------------------------------------------------------------------------

def _cli(*argv: str):
    """Run a verb in this process through the parser `hyperprag.cli.main` uses; returns the verb's result."""
    from jsonargparse import auto_cli

    from hyperprag.cli import VERBS, _setup

    _setup()
    return auto_cli(VERBS, args=[str(a) for a in argv])


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    from conftest import make_tiny_llama, make_tiny_tokenizer

    from hypernet.checkpoint import save_hypernet
    from hypernet.config import EncoderSpec, HyperNetConfig
    from hypernet.model import build_hypernet

    root = tmp_path_factory.mktemp("reliability")
    model = make_tiny_llama()
    model.save_pretrained(root / "model")
    make_tiny_tokenizer().save_pretrained(root / "model")
    lines = DEMO_CORPUS.read_text(encoding="utf-8").splitlines()[:N_DOCS]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    doc_ids = [json.loads(line)["id"] for line in lines]
    qs = [json.loads(line) for line in DEMO_QUESTIONS.read_text(encoding="utf-8").splitlines()]
    qs = [q for q in qs if q["id"].rsplit("-q", 1)[0] in doc_ids][:8]
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs), encoding="utf-8")
    (root / "teach.yaml").write_text(TEACH_YAML, encoding="utf-8")
    (root / "driver.py").write_text(DRIVER, encoding="utf-8")
    torch.manual_seed(0)
    spec = LoraSpec()
    shapes = target_shapes(model, spec)
    cfg = HyperNetConfig(emb_dim=model.config.hidden_size, hidden=32, basis=16)
    save_hypernet(root / "hypernet", build_hypernet(cfg, shapes, spec), cfg, spec, str(root / "model"),
                  EncoderSpec(kind="llm"), shapes)
    return SimpleNamespace(root=root, model=str(root / "model"), corpus=root / "corpus.jsonl",
                           questions=root / "questions.jsonl", settings=root / "teach.yaml", doc_ids=doc_ids,
                           question_ids=[q["id"] for q in qs], hypernet=root / "hypernet", spec=spec,
                           shapes=shapes, driver=root / "driver.py", aug=root / "augment")


def _teach_args(art, store, *extra):
    return ["teach", art.corpus, store, "--model", art.model, "--settings", art.settings,
            "--augment_cache", art.aug, *extra]


def _param_args(art, store, *extra):
    return ["parameterize", art.corpus, art.hypernet, store, "--model", art.model, "--batch_size", "2", *extra]


def _eval_args(art, store, out, *extra):
    return ["eval", art.questions, "--corpus", art.corpus, "--modes", "[vanilla,prag]", "--store", store,
            "--model", art.model, "--out", out, "--batch_size", "2", "--max_new_tokens", "4", "--top_k", "2",
            *extra]


@pytest.fixture(scope="module")
def teacher_store(art):
    """The uninterrupted teacher run: the reference for resumed and sharded runs."""
    store = art.root / "teacher"
    summary = _cli(*_teach_args(art, store))
    assert summary["trained"] == N_DOCS
    return store


# ---------------------------------------------------------------------------------------------------------
# Subprocess helpers
# ---------------------------------------------------------------------------------------------------------

def _start(art, argv, slow: float = 0.0, log_name: str = "log", **env) -> tuple[subprocess.Popen, Path]:
    log = art.root / f"{log_name}-{time.monotonic_ns()}.txt"
    env = {**ENV, "HP_SLOW": str(slow), **env}
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, str(art.driver), *map(str, argv)], env=env, cwd=art.root,
                                stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def _run(art, argv, timeout: float = 300) -> str:
    """Run to completion; return its output (stdout and stderr)."""
    proc, log = _start(art, argv)
    rc = proc.wait(timeout=timeout)
    out = log.read_text(errors="replace")
    assert rc == 0, out[-3000:]
    return out


def _kill_when(art, argv, ready, timeout: float = 240, **env) -> None:
    """Start a slowed-down run, wait until `ready()` holds (part of the output exists), SIGKILL it."""
    proc, log = _start(art, argv, slow=60.0, **env)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed:\n"
                            + log.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                pytest.fail("the run wrote nothing to kill it after:\n" + log.read_text(errors="replace")[-3000:])
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _summary(output: str) -> dict:
    """The JSON a verb prints (its last top-level {...} block on stdout)."""
    output = "\n" + output
    start = output.rindex("\n{\n") + 1
    return json.loads(output[start:output.index("\n}", start) + 2])


def _shard_files(store: Path) -> tuple[list[Path], list[Path]]:
    names = sorted(os.listdir(store / "shards"))
    return ([store / "shards" / n for n in names if n.endswith(".json") and not n.startswith(".")],
            [store / "shards" / n for n in names if n.endswith(".tmp")])


def _partial_store(store: Path) -> bool:
    """At least one shard + index complete, and the next shard's temporary file written (not renamed)."""
    if not (store / "shards").is_dir():
        return False
    indexes, temps = _shard_files(store)
    return bool(indexes and temps)


def _check_every_index_is_whole(store: Path) -> list[str]:
    """Each index's shard exists, has the recorded size and holds every tensor the index lists; returns the
    indexed document ids (with repeats, if any)."""
    ids = []
    for index_path in _shard_files(store)[0]:
        index = json.loads(index_path.read_text())
        shard = index_path.with_suffix(".safetensors")
        assert shard.stat().st_size == index["shard_bytes"], shard
        tensors = load_file(str(shard))  # the whole file parses
        for doc_id in index["docs"]:
            for m in ("gate_proj", "up_proj", "down_proj"):
                assert torch.isfinite(tensors[f"{doc_id}/{m}/A"]).all() and f"{doc_id}/{m}/B" in tensors
        ids.extend(index["docs"])
    return ids


def _assert_stores_equal(store: Path, reference: Path, doc_ids: list[str], atol: float = ATOL) -> None:
    got, want = AdapterStore.open(store), AdapterStore.open(reference)
    indexed = _check_every_index_is_whole(store)
    assert sorted(indexed) == sorted(doc_ids), "every document exactly once"
    assert sorted(got.ids()) == sorted(doc_ids)
    for doc_id in doc_ids:
        a, b = got.get(doc_id), want.get(doc_id)
        for m in got.spec.target_modules:
            torch.testing.assert_close(a.A[m], b.A[m], atol=atol, rtol=0)
            torch.testing.assert_close(a.B[m], b.B[m], atol=atol, rtol=0)
        assert a.B["up_proj"].abs().max() > 0  # trained or generated, not the zero init


# ---------------------------------------------------------------------------------------------------------
# 1 and 6. Kill and resume; sharded writers
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_teach_killed_resumes_to_the_uninterrupted_adapters(art, teacher_store):
    store = art.root / "teach-killed"
    _kill_when(art, _teach_args(art, store), lambda: _partial_store(store))
    # after the kill, before the rerun: every index points at a whole shard; the half-written one is unlisted
    indexes, temps = _shard_files(store)
    assert temps and not any(t.name.removeprefix(".").split(".safetensors")[0] + ".json"
                             in {i.name for i in indexes} for t in temps)
    done = _check_every_index_is_whole(store)
    assert 0 < len(done) < N_DOCS
    assert sorted(AdapterStore.open(store).ids()) == sorted(done)  # a strict open reads it fine

    summary = _summary(_run(art, _teach_args(art, store)))
    assert summary["skipped_existing"] == len(done) and summary["trained"] == N_DOCS - len(done)
    _assert_stores_equal(store, teacher_store, art.doc_ids, atol=0.0)  # same groups as the uninterrupted run


@pytest.mark.slow
def test_two_sharded_teach_processes_cover_the_corpus_once(art, teacher_store):
    """`--shard 0/2` and `--shard 1/2` at the same time into one store: each document once, and (other
    groupings than the single run's) the same adapters."""
    store = art.root / "teach-sharded"
    procs = [_start(art, _teach_args(art, store, "--shard", f"{i}/2"), log_name=f"shard{i}") for i in range(2)]
    summaries = []
    for proc, log in procs:
        assert proc.wait(timeout=300) == 0, log.read_text(errors="replace")[-3000:]
        summaries.append(_summary(log.read_text(errors="replace")))
    assert sum(s["in_shard"] for s in summaries) == N_DOCS and all(s["in_shard"] > 0 for s in summaries)
    assert sum(s["trained"] for s in summaries) == N_DOCS
    _assert_stores_equal(store, teacher_store, art.doc_ids)


@pytest.mark.slow
def test_parameterize_killed_resumes_to_the_uninterrupted_adapters(art):
    reference = art.root / "generated"
    stats = _cli(*_param_args(art, reference))
    assert stats["generated"] == N_DOCS
    store = art.root / "generated-killed"
    _kill_when(art, _param_args(art, store), lambda: _partial_store(store))
    done = _check_every_index_is_whole(store)
    assert 0 < len(done) < N_DOCS
    stats = _summary(_run(art, _param_args(art, store)))
    assert stats["skipped_existing"] == len(done) and stats["generated"] == N_DOCS - len(done)
    _assert_stores_equal(store, reference, art.doc_ids, atol=0.0)


def _predictions(out: Path, mode: str) -> list[dict]:
    lines = (out / "predictions" / f"{mode}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]  # every line whole JSON (a torn one was dropped)


def _without_timing(metrics: dict) -> dict:
    return {mode: {g: {k: v for k, v in row.items() if k != "seconds_per_question"} for g, row in m.items()}
            for mode, m in metrics.items()}


@pytest.mark.slow
def test_eval_killed_resumes_to_the_uninterrupted_predictions_and_metrics(art, teacher_store):
    reference = art.root / "eval-ref"
    _cli(*_eval_args(art, teacher_store, reference))
    out = art.root / "eval-killed"
    prag = out / "predictions" / "prag.jsonl"
    _kill_when(art, _eval_args(art, teacher_store, out), lambda: prag.exists() and prag.stat().st_size > 0,
               HP_SLOW_FILE="prag.jsonl")
    assert not (out / "metrics.json").exists()
    answered = len(_predictions(out, "prag"))
    assert 0 < answered < len(art.question_ids)
    with open(prag, "ab") as f:  # what a kill in the middle of a write leaves
        f.write(b'{"id": "torn-rec')
    _run(art, _eval_args(art, teacher_store, out))
    for mode in ("vanilla", "prag"):
        got, want = _predictions(out, mode), _predictions(reference, mode)
        assert [r["id"] for r in got] == art.question_ids, "every question exactly once, in order"
        strip = [{k: v for k, v in r.items() if k != "seconds"} for r in got]
        assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in want]
    assert _predictions(out, "prag")[0]["doc_ids"]  # prag used retrieved documents' adapters
    got = json.loads((out / "metrics.json").read_text())
    want = json.loads((reference / "metrics.json").read_text())
    assert _without_timing(got) == _without_timing(want)
    assert got["prag"]["all"]["n"] == len(art.question_ids)


# ---------------------------------------------------------------------------------------------------------
# 2. Bad corpora and question files through the CLI path, with --on_error fail and skip
# ---------------------------------------------------------------------------------------------------------

BIG = "Sentence number one is here. " * (5_000_000 // 29 + 1)  # a 5 MB document, > max_chars
# name -> (bad corpus record for a given id, field the error names, words of the problem)
BAD_DOCS = {
    "invalid_json": (lambda i: f'{{"id": "{i}", "text": "unterminated', None, "invalid JSON"),
    "missing_field": (lambda i: json.dumps({"id": i, "title": "t"}), "text", "missing"),
    "mistyped_field": (lambda i: json.dumps({"id": i, "text": ["not", "a", "string"]}), "text",
                       "expected a string, got list"),
    "empty_text": (lambda i: json.dumps({"id": i, "text": ""}), "text", "empty"),
    "whitespace_text": (lambda i: json.dumps({"id": i, "text": " \t\u00a0 "}), "text", "whitespace-only"),
    "five_mb_text": (lambda i: json.dumps({"id": i, "text": BIG}), "text",
                     f"is {len(BIG)} characters, over max_chars"),
    "non_utf8": (lambda i: f'{{"id": "{i}", "text": "caf'.encode() + b'\xe9 au lait"}', None, "not valid UTF-8"),
    "duplicate_id": (lambda i: None, "id", "duplicate id"),  # repeats the id of the line before it
}
BAD_QUESTIONS = {
    "invalid_json": (lambda i: f'{{"id": "{i}", "question": ', None, "invalid JSON"),
    "missing_field": (lambda i: json.dumps({"id": i, "question": "Who?"}), "answers", "missing"),
    "mistyped_field": (lambda i: json.dumps({"id": i, "question": "Who?", "answers": "Ann"}), "answers",
                       "expected a non-empty list"),
    "empty_text": (lambda i: json.dumps({"id": i, "question": "", "answers": ["a"]}), "question", "empty"),
    "whitespace_text": (lambda i: json.dumps({"id": i, "question": "  \n ", "answers": ["a"]}), "question",
                        "whitespace-only"),
    "five_mb_text": (lambda i: json.dumps({"id": i, "question": "Who?", "answers": ["a"],
                                           "passages": [{"title": "Big", "text": BIG}]}), "passages[0].text",
                     f"is {len(BIG)} characters, over max_chars"),
    "non_utf8": (lambda i: f'{{"id": "{i}", "question": "Qu'.encode() + b'\xff?", "answers": ["a"]}', None,
                 "not valid UTF-8"),
    "duplicate_id": (lambda i: None, "id", "duplicate id"),
}


def _bad_file(path: Path, good: list[str], make, bad_lines=(2, 4)) -> Path:
    """`good` records with bad ones inserted so that they sit on `bad_lines` (1-based)."""
    rows: list[bytes] = []
    good_iter = iter(good)
    for lineno in range(1, len(good) + len(bad_lines) + 1):
        if lineno in bad_lines:
            rec = make(f"bad{lineno}")
            if rec is None:  # duplicate: the previous line again
                rec = rows[-1]
            rows.append(rec if isinstance(rec, bytes) else rec.encode())
        else:
            rows.append(next(good_iter).encode())
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def _good_docs(art, n: int = 3) -> list[str]:
    return art.corpus.read_text(encoding="utf-8").splitlines()[:n]


def _good_questions(art, n: int = 3) -> list[str]:
    return art.questions.read_text(encoding="utf-8").splitlines()[:n]


def _skipped_lines(caplog, path: Path) -> set[int]:
    """Line numbers of `path` that the run reported as skipped (one log record each)."""
    found = set()
    for rec in caplog.records:
        found |= {int(n) for n in re.findall(re.escape(str(path)) + r", line (\d+)", rec.getMessage())}
    return found


def _verb_args(art, verb: str, path: Path, out: Path) -> list:
    """`verb` reading the (bad) corpus `path`."""
    if verb == "index":
        return ["index", path, out]
    if verb == "teach":
        return _teach_args(art, out)[:1] + [path] + _teach_args(art, out)[2:]
    if verb == "parameterize":
        return ["parameterize", path, art.hypernet, out, "--model", art.model]
    return ["eval", art.questions, "--corpus", path, "--modes", "[vanilla]", "--model", art.model, "--out", out,
            "--limit", "1", "--max_new_tokens", "2"]


@pytest.mark.parametrize("verb", ["index", "teach", "parameterize", "eval"])
@pytest.mark.parametrize("case", sorted(BAD_DOCS))
def test_bad_corpus_records_fail_or_skip_through_the_cli(art, tmp_path, caplog, case, verb):
    make, field, problem = BAD_DOCS[case]
    path = _bad_file(tmp_path / "corpus.jsonl", _good_docs(art), make)
    with pytest.raises(DataError) as err:
        _cli(*_verb_args(art, verb, path, tmp_path / "out-fail"), "--on_error", "fail")
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, field)
    assert f"{path}, line 2: " in str(err.value) and problem in str(err.value)
    assert not (tmp_path / "out-fail").exists()  # refused before writing anything

    caplog.clear()
    with caplog.at_level("WARNING"):
        result = _cli(*_verb_args(art, verb, path, tmp_path / "out-skip"), "--on_error", "skip")
    assert _skipped_lines(caplog, path) == {2, 4}, "every skipped record reported, with its line"
    good_ids = [json.loads(line)["id"] for line in _good_docs(art)]
    if verb == "index":
        from inference.retrieval import load_retriever

        assert sorted(load_retriever(tmp_path / "out-skip").ids) == sorted(good_ids)
    elif verb == "teach":
        assert result["trained"] == len(good_ids)
        assert [s["line"] for s in result["skipped_records"]] == [2, 4]
        assert sorted(AdapterStore.open(tmp_path / "out-skip").ids()) == sorted(good_ids)
    elif verb == "parameterize":
        assert result["generated"] == len(good_ids)
        assert sorted(AdapterStore.open(tmp_path / "out-skip").ids()) == sorted(good_ids)
    else:
        assert result["vanilla"]["all"]["n"] == 1


@pytest.mark.parametrize("case", sorted(BAD_QUESTIONS))
def test_bad_question_records_fail_or_skip_through_the_cli(art, tmp_path, caplog, case):
    make, field, problem = BAD_QUESTIONS[case]
    path = _bad_file(tmp_path / "questions.jsonl", _good_questions(art), make)
    args = ["eval", path, "--modes", "[vanilla]", "--model", art.model, "--max_new_tokens", "2"]
    with pytest.raises(DataError) as err:
        _cli(*args, "--out", tmp_path / "out-fail", "--on_error", "fail")
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, field)
    assert f"{path}, line 2: " in str(err.value) and problem in str(err.value)
    assert not (tmp_path / "out-fail").exists()
    caplog.clear()
    with caplog.at_level("WARNING"):
        metrics = _cli(*args, "--out", tmp_path / "out-skip", "--on_error", "skip")
    assert _skipped_lines(caplog, path) == {2, 4}
    assert metrics["vanilla"]["all"]["n"] == 3
    ids = [r["id"] for r in _predictions(tmp_path / "out-skip", "vanilla")]
    assert ids == [json.loads(line)["id"] for line in _good_questions(art)]


@pytest.mark.parametrize("verb", ["index", "teach", "parameterize", "eval"])
def test_an_empty_file_is_refused_whatever_the_policy(art, tmp_path, verb):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    for policy in ("fail", "skip"):
        with pytest.raises(DataError, match=re.escape(f"{path}: file is empty")):
            _cli(*_verb_args(art, verb, path, tmp_path / "out"), "--on_error", policy)
    with pytest.raises(DataError, match="file is empty"):
        _cli("eval", path, "--model", art.model, "--out", tmp_path / "out")


@pytest.mark.parametrize("argv, key, bad", [
    (["eval", "q.jsonl", "--on_error", "skp"], "on_error", "skp"),
    (["eval", "q.jsonl", "--modes", "[vanilla,pragg]"], "modes", "pragg"),
    (["eval", "q.jsonl", "--retriever", "bm52"], "retriever", "bm52"),
    (["eval", "q.jsonl", "--dtype", "float8"], "dtype", "float8"),
    (["eval", "q.jsonl", "--composition", "product"], "composition", "product"),
    (["ask", "why?", "--mode", "hyperr"], "mode", "hyperr"),
    (["teach", "c.jsonl", "s", "--on_error", "ignore"], "on_error", "ignore"),
    (["teach", "c.jsonl", "s", "--store_dtype", "int8"], "store_dtype", "int8"),
    (["index", "c.jsonl", "out", "--kind", "tfidf"], "kind", "tfidf"),
    (["parameterize", "c.jsonl", "h", "s", "--on_error", "no"], "on_error", "no"),
])
def test_option_values_are_checked_by_the_parser(argv, key, bad, capsys):
    """A mistyped choice stops at parsing (exit 2) with a message naming the option and the value."""
    from hyperprag.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert key in err and bad in err, err


@pytest.mark.parametrize("verb", ["index", "train"])
def test_console_script_exits_zero_after_success(art, tmp_path, monkeypatch, verb):
    """The `hyperprag` script ends with `sys.exit(main())`: main must then return None, or the verb's
    result (a dict, a path) is printed to stderr with exit status 1 after a successful run."""
    import training.hypernet_cli as hypernet_cli
    from hyperprag.cli import main

    monkeypatch.setattr(hypernet_cli, "run_train", lambda args: Path("runs/hypernet/hypernet"))
    argv = ["index", str(art.corpus), str(tmp_path / "idx")] if verb == "index" else ["train", "--config", "x"]
    monkeypatch.setattr(sys, "argv", ["hyperprag", *argv])
    with pytest.raises(SystemExit) as exit_:
        sys.exit(main())
    assert exit_.value.code is None
    assert main(argv) is not None  # called with argv (from Python), it returns the verb's result


# ---------------------------------------------------------------------------------------------------------
# 3. Mismatched or corrupt artifacts: refused with a clear message before any answer
# ---------------------------------------------------------------------------------------------------------

def _copy_store(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _store_for(root: Path, base_model: str, spec: LoraSpec, shapes, n: int = 2) -> Path:
    with AdapterStore.create(root, base_model, spec) as st:
        for i in range(n):
            w = init_lora(shapes, spec, seed=i)
            st.put(f"x{i}", LoraWeights(w.A, {m: b + 0.01 for m, b in w.B.items()}))
    return root


def _mismatched_artifacts(art, teacher_store, tmp: Path) -> dict:
    """name -> (eval options, exception type, regex of its message)."""
    from conftest import make_tiny_llama

    from hypernet.checkpoint import HypernetCheckpointError, HypernetMismatchError, save_hypernet
    from hypernet.config import EncoderSpec, HyperNetConfig
    from hypernet.model import build_hypernet

    cases = {}
    other = _store_for(tmp / "other-model", "smollm2-135m", art.spec, art.shapes)
    cases["store_other_base_model"] = (["--store", other], StoreMismatchError,
                                       r"base_model is 'smollm2-135m' in .*manifest.json, expected '.*model'")
    wider = make_tiny_llama()
    wider.config.intermediate_size = 96  # same name, another architecture
    wide_shapes = {"gate_proj": (2, 64, 96), "up_proj": (2, 64, 96), "down_proj": (2, 96, 64)}
    same_name = _store_for(tmp / "same-name-other-shapes", art.model, art.spec, wide_shapes)
    cases["store_other_shapes"] = (["--store", same_name], StoreError, r"shapes .* needs .*another model")
    rank4 = _store_for(tmp / "rank", art.model, art.spec, art.shapes)
    manifest = json.loads((rank4 / "manifest.json").read_text())
    manifest["spec"]["rank"] = 4
    (rank4 / "manifest.json").write_text(json.dumps(manifest))
    cases["store_manifest_rank"] = (["--store", rank4], StoreError, r"rank \[2\] but its manifest says rank 4")
    attn = LoraSpec(target_modules=("c_fc",))
    gpt = _store_for(tmp / "target-modules", art.model, attn, {"c_fc": (2, 64, 256)})
    cases["store_target_modules"] = (["--store", gpt], StoreError, r"target modules \['c_fc'\] do not fit")
    truncated = _copy_store(teacher_store, tmp / "truncated")
    shard = sorted((truncated / "shards").glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    cases["store_truncated_shard"] = (["--store", truncated], StoreCorruptError,
                                      re.escape(str(shard)) + r": shard is \d+ bytes but its index")
    no_file = _copy_store(teacher_store, tmp / "no-file")
    gone = sorted((no_file / "shards").glob("*.safetensors"))[2]
    gone.unlink()
    cases["store_index_without_shard"] = (["--store", no_file], StoreCorruptError,
                                          re.escape(str(gone)) + ": shard file is missing")
    header = _copy_store(teacher_store, tmp / "bad-header")
    bad = sorted((header / "shards").glob("*.safetensors"))[-1]
    data = bytearray(bad.read_bytes())
    data[8:20] = b"\x00" * 12  # same size, broken JSON header
    bad.write_bytes(bytes(data))
    cases["store_corrupt_header"] = (["--store", header], StoreCorruptError,
                                     re.escape(str(bad)) + ": cannot read safetensors shard")

    cfg = HyperNetConfig(emb_dim=64, hidden=16, basis=4)
    net = build_hypernet(cfg, art.shapes, art.spec)
    hn_other = save_hypernet(tmp / "hn-other", net, cfg, art.spec, "smollm2-135m", EncoderSpec(kind="llm"), art.shapes)
    cases["hypernet_other_base_model"] = (["--hypernet", hn_other], HypernetMismatchError,
                                          r"base_model is 'smollm2-135m'.* was expected")
    net_wide = build_hypernet(cfg, wide_shapes, art.spec)
    hn_wide = save_hypernet(tmp / "hn-wide", net_wide, cfg, art.spec, art.model, EncoderSpec(kind="llm"), wide_shapes)
    cases["hypernet_other_shapes"] = (["--hypernet", hn_wide], HypernetMismatchError, r"shapes is .* was expected")
    hn_corrupt = _copy_store(art.hypernet, tmp / "hn-corrupt")
    weights = hn_corrupt / "model.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" + b"\x00" * 64)
    cases["hypernet_corrupt_weights"] = (["--hypernet", hn_corrupt], HypernetCheckpointError,
                                         re.escape(str(weights)) + ": cannot read safetensors")
    gen_other = _store_for(tmp / "generated-other-shapes", art.model, art.spec, wide_shapes)
    cases["generated_store_other_shapes"] = (["--hypernet", gen_other], StoreError, r"needs .*another model")
    return cases


@pytest.fixture(scope="module")
def mismatched(art, teacher_store, tmp_path_factory):
    return _mismatched_artifacts(art, teacher_store, tmp_path_factory.mktemp("mismatched"))


MISMATCH_CASES = ["store_other_base_model", "store_other_shapes", "store_manifest_rank", "store_target_modules",
                  "store_truncated_shard", "store_index_without_shard", "store_corrupt_header",
                  "hypernet_other_base_model", "hypernet_other_shapes", "hypernet_corrupt_weights",
                  "generated_store_other_shapes"]


@pytest.mark.parametrize("case", MISMATCH_CASES)
def test_mismatched_or_corrupt_artifacts_are_refused_before_answering(art, mismatched, tmp_path, case):
    options, error, message = mismatched[case]
    mode = "prag" if options[0] == "--store" else "hyper"
    out = tmp_path / "out"
    with pytest.raises(error, match=message):  # vanilla comes first: nothing may be answered before refusing
        _cli("eval", art.questions, "--corpus", art.corpus, "--modes", f"[vanilla,{mode}]", "--model", art.model,
             "--out", out, "--max_new_tokens", "2", *options)
    assert not (out / "predictions").exists()


def test_unknown_model_name_lists_the_embedded_ones_without_network():
    from hyperprag.core.models import ModelLoadError, load_base_model

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(ModelLoadError) as err:
        load_base_model("no-such-model")
    assert "'no-such-model'" in str(err.value)
    assert "smollm2-135m" in str(err.value) and "gemma3-270m" in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# 4. Safe loading: no pickle on user paths, no remote code by default
# ---------------------------------------------------------------------------------------------------------

PACKAGES = ("hyperprag", "hypernet", "training", "inference")


def _sources() -> list[tuple[Path, str]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out.append((path, path.read_text(encoding="utf-8")))
    assert len(out) > 20
    return out


def _calls(text: str, name: str) -> list[str]:
    """Source of every call `name(...)` in `text` (balanced parentheses, so multi-line calls are whole)."""
    found = []
    for m in re.finditer(re.escape(name) + r"\s*\(", text):
        depth, i = 0, m.end() - 1
        while True:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        found.append(text[m.start():i + 1])
    return found


def test_no_pickle_on_user_paths_and_no_remote_code_by_default():
    import inspect

    from hyperprag.core.models import load_base_model

    loads = 0
    for path, text in _sources():
        for call in _calls(text, "torch.load"):
            loads += 1
            assert re.search(r"weights_only\s*=\s*True", call), f"{path}: {call}"
        for banned in ("pickle.load", "pickle.loads", "cloudpickle", "dill.load", "joblib.load", "marshal.load"):
            assert not _calls(text, banned), f"{path} calls {banned}"
        assert not re.search(r"allow_pickle\s*=\s*True", text), f"{path} loads numpy pickles"
        assert not re.search(r"trust_remote_code\s*=\s*True", text), f"{path} trusts remote code"
        assert not re.search(r"weights_only\s*=\s*False", text), path
    assert loads >= 1  # the Lightning checkpoint read in training/hypernet_module.py
    default = inspect.signature(load_base_model).parameters["trust_remote_code"].default
    assert default is False


# ---------------------------------------------------------------------------------------------------------
# 5. Non-finite losses: the teacher and the hypernetwork stop (naming step and documents) or skip
# ---------------------------------------------------------------------------------------------------------

def _teacher_docs():
    from hyperprag.core.data import Document

    qa = SimpleNamespace
    docs = [Document("alpha", "Lake Vorn", "Lake Vorn is in Tesmar."),
            Document("beta", "Oro", "Oro is a blue fruit from Pell.")]
    augs = [SimpleNamespace(qa=[qa(question="Where is Lake Vorn?", answer="Tesmar", full_answer=None),
                                qa(question="What is in Tesmar?", answer="Lake Vorn", full_answer=None)],
                            rewrites=[]),
            SimpleNamespace(qa=[qa(question="What colour is oro?", answer="blue", full_answer=None),
                                qa(question="Where is oro from?", answer="Pell", full_answer=None)],
                            rewrites=[])]
    return docs, augs


def _poison_teacher(monkeypatch, at_call: int, value: float = float("nan")):
    """Make `token_losses` return `value` for the first document's tokens on its `at_call`-th call."""
    import training.teacher as teacher

    real, calls = teacher.token_losses, [0]

    def token_losses(model, batch, *args, **kwargs):
        losses, rows = real(model, batch, *args, **kwargs)
        calls[0] += 1
        if calls[0] == at_call:
            losses = losses + torch.where(rows == rows.min(), torch.tensor(value), torch.tensor(0.0))
        return losses, rows

    monkeypatch.setattr(teacher, "token_losses", token_losses)


def test_teacher_stops_on_a_nan_loss_naming_step_and_document(tiny_llama, tiny_tokenizer, monkeypatch):
    from training.teacher import NonFiniteLossError, TeacherConfig, train_documents

    docs, augs = _teacher_docs()
    config = TeacherConfig(epochs=3, lr=1e-2, kinds=("qa_closed",), batch_size=1, docs_per_step=2, shuffle=False)
    _poison_teacher(monkeypatch, at_call=3)
    with pytest.raises(NonFiniteLossError, match=r"teacher step 2: .*\['alpha'\]"):
        train_documents(tiny_llama, tiny_tokenizer, docs, augs, config)


def test_teacher_skip_drops_only_that_update(tiny_llama, tiny_tokenizer, monkeypatch, caplog):
    from training.teacher import TeacherConfig, train_documents

    docs, augs = _teacher_docs()
    config = TeacherConfig(epochs=3, lr=1e-2, kinds=("qa_closed",), batch_size=1, docs_per_step=2, shuffle=False,
                           on_nonfinite="skip")
    clean = train_documents(tiny_llama, tiny_tokenizer, docs, augs, config)
    _poison_teacher(monkeypatch, at_call=3, value=float("inf"))
    with caplog.at_level("WARNING"):
        got = train_documents(tiny_llama, tiny_tokenizer, docs, augs, config)
    assert any("teacher step 2" in r.getMessage() and "alpha" in r.getMessage() for r in caplog.records)
    assert got[0].meta["skipped_steps"] == [2] and got[1].meta["skipped_steps"] == []
    assert got[0].meta["final_loss"] == got[0].meta["final_loss"]  # stats stay finite (not nan)
    for m in config.target_modules:
        assert torch.isfinite(got[0].A[m]).all() and torch.isfinite(got[0].B[m]).all()
        torch.testing.assert_close(got[1].B[m], clean[1].B[m], atol=0, rtol=0)  # the other document is exact
    assert not torch.equal(got[0].B["up_proj"], clean[0].B["up_proj"])  # one update fewer


def test_hypernetwork_nan_stops_and_leaves_the_last_checkpoint_whole(tiny_llama, tiny_tokenizer, tmp_path,
                                                                      monkeypatch, caplog):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    sys.path.insert(0, str(ROOT / "tests" / "hypernet"))
    from hyper_synth import small_module, synthetic_items

    from hypernet.config import LossWeights
    from training.hypernet_data import HyperDataModule
    from training.hypernet_module import HyperLoRAModule
    from training.teacher import NonFiniteLossError

    pl.seed_everything(0)
    spec = LoraSpec()
    items = synthetic_items(tiny_tokenizer, tiny_llama, spec, n_docs=4, qa_per_doc=1)
    dm = HyperDataModule.from_items(items, items[:2], tiny_tokenizer.pad_token_id, batch_size=2)  # 2 steps/epoch
    param_only = LossWeights(kl=0.0, lm=0.0)

    class Moved(pl.Callback):
        """Whether each training batch changed the hypernetwork's weights."""

        def __init__(self):
            self.moved: list[bool] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = [p.detach().clone() for p in pl_module.hypernet.parameters()]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            after = list(pl_module.hypernet.parameters())
            self.moved.append(any(not torch.equal(a, b) for a, b in zip(self.before, after, strict=True)))

    moved = Moved()

    def fit(module, epochs, ckpt_path=None) -> pl.Trainer:
        cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, callbacks=[cb, moved], logger=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                             limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return trainer

    def poison(at_call: int) -> None:
        """The `at_call`-th training loss from now on is NaN."""
        real, calls = HyperLoRAModule.compute_losses, [0]

        def compute_losses(self, batch, full=False):
            total, parts, student = real(self, batch, full)
            calls[0] += 1
            return (total * float("nan") if calls[0] == at_call else total), parts, student

        monkeypatch.setattr(HyperLoRAModule, "compute_losses", compute_losses)

    module = small_module(tiny_llama, tiny_tokenizer, spec, lr=1e-2, warmup_steps=1, loss_weights=param_only)
    fit(module, 1)
    last = tmp_path / "ckpt" / "last.ckpt"
    good = last.read_bytes()
    poison(at_call=2)  # resumed at step 2: the second batch, step 3, goes NaN
    with pytest.raises(NonFiniteLossError, match=r"training step 3 \(epoch 1, batch 1\): non-finite loss nan") as err:
        fit(module, 3, ckpt_path=last)
    assert re.search(r"for documents \['doc\d', 'doc\d'\]", str(err.value)), str(err.value)  # the batch's two
    assert last.read_bytes() == good  # the last good checkpoint is untouched ...
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # ... and loads
    assert ckpt["global_step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())

    # skip: that batch gets no update (logged), the others train; the weights stay finite
    poison(at_call=4)
    skipper = small_module(tiny_llama, tiny_tokenizer, spec, lr=1e-2, warmup_steps=1, loss_weights=param_only,
                           on_nonfinite="skip")
    moved.moved.clear()
    with caplog.at_level("WARNING"):
        fit(skipper, 3)
    assert moved.moved == [True, True, True, False, True, True]  # 6 batches, the 4th made no update
    assert any("non-finite loss" in r.getMessage() and "batch skipped" in r.getMessage() for r in caplog.records)
    assert all(torch.isfinite(p).all() for p in skipper.hypernet.parameters())
