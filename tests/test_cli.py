"""The `pool` and `plot` verbs through the console script's parser (hyperprag/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyperprag.cli import main
from hyperprag.core.data import Document, load_corpus, load_questions

FIXTURES = Path(__file__).parent / "fixtures"


def _questions(tmp_path: Path, n: int) -> Path:
    """n questions, question i with one supporting passage "doc i" and one shared unsupported passage."""
    rows = [{"id": f"q{i}", "question": f"what is {i}?", "answers": [str(i)],
             "passages": [{"title": f"doc {i}", "text": f"Doc {i} says {i}.", "supporting": True},
                          {"title": "shared", "text": "Shared text.", "supporting": False}]} for i in range(n)]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pool_takes_slices_per_file_limits_and_excludes(tmp_path):
    q = _questions(tmp_path, 10)
    out = tmp_path / "pool.jsonl"
    result = main(["pool", f"[{q}@0:6, {FIXTURES / 'questions.jsonl'}]", str(out), "--docs", "[4, 9]",
                   "--exclude", f"[{q}@2:3]"])
    docs = list(load_corpus(out))
    # questions 0-5 of q.jsonl minus question 2's passages, first 4; then the fixture's 3 supporting passages
    assert [d.title for d in docs] == ["doc 0", "doc 1", "doc 3", "doc 4", "Mount Fennick", "Pellham Bridge",
                                       "SS Marigold"]
    assert all(d.id == Document("", d.title, d.text).content_hash for d in docs)
    assert result["per_file"] == {f"{q}@0:6": 4, str(FIXTURES / "questions.jsonl"): 3}
    assert result["excluded_passages"] == 2  # question 2's own passage and the shared one


def test_pool_all_passages_and_one_limit_for_every_file(tmp_path):
    q = _questions(tmp_path, 3)
    out = tmp_path / "pool.jsonl"
    main(["pool", f"[{q}]", str(out), "--gold", "all"])
    assert [d.title for d in load_corpus(out)] == ["doc 0", "shared", "doc 1", "doc 2"]
    main(["pool", f"[{q}, {q}@1:3]", str(out), "--docs", "2"])  # the second file adds only what is new
    assert [d.title for d in load_corpus(out)] == ["doc 0", "doc 1", "doc 2"]
    assert len(list(load_questions(q))) == 3


def test_pool_docs_count_must_match_the_files(tmp_path):
    q = _questions(tmp_path, 3)
    with pytest.raises(ValueError, match="2 numbers for 1 question files"):
        main(["pool", f"[{q}]", str(tmp_path / "p.jsonl"), "--docs", "[1, 2]"])


def test_plot_writes_a_png_beside_the_csv(tmp_path, capsys):
    run = tmp_path / "csv" / "version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,train/param,val/param,val/lm,val/lm_other\n"
                                     "0,4,2.0,,,\n0,9,,1.5,3.0,3.5\n1,14,1.0,,,\n1,19,,0.9,2.5,3.4\n")
    result = main(["plot", str(tmp_path)])
    png = run / "curves.png"
    assert result["png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["summary"]["val/lm"] == {"first": 3.0, "last": 2.5, "last_step": 19}
    assert "val/lm_other" in capsys.readouterr().out


# ---- user errors: one line on stderr, non-zero exit; --debug shows the traceback -------------------------

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.conftest import make_tiny_llama, make_tiny_tokenizer

    folder = tmp_path_factory.mktemp("cli") / "tiny-model"
    make_tiny_llama().save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return folder


def _script(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run `hyperprag ARGS` as the console script does (argv from sys.argv); (exit status, stderr)."""
    monkeypatch.setattr("sys.argv", ["hyperprag", *args])
    capsys.readouterr()  # what earlier commands printed
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def test_a_malformed_jsonl_line_is_one_line_with_file_and_line(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "title": "A", "text": "Some text."}\n{"id": "b", "title": "B", "text": \n')
    code, err = _script(monkeypatch, capsys, "index", str(corpus), str(tmp_path / "index"))
    assert code == 1 and err.startswith(f"hyperprag: error: {corpus}, line 2: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_debug_flag_and_variable_show_the_traceback(tmp_path, monkeypatch, capsys):
    from hyperprag.core.data import DataError

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("not json\n")
    with pytest.raises(DataError, match="line 1"):
        _script(monkeypatch, capsys, "index", str(corpus), str(tmp_path / "index"), "--debug")
    monkeypatch.setenv("HYPERPRAG_DEBUG", "1")
    with pytest.raises(DataError, match="line 1"):
        _script(monkeypatch, capsys, "index", str(corpus), str(tmp_path / "index"))


def test_an_unknown_model_name_is_one_line(monkeypatch, capsys):
    code, err = _script(monkeypatch, capsys, "ask", "Who?", "--model", "no-such-model-xyz")
    assert code == 1 and err.startswith("hyperprag: error: ") and "no-such-model-xyz" in err
    assert err.count("\n") == 1


def test_a_folder_that_is_not_a_hypernetwork_is_one_line(tmp_path, tiny_model_dir, monkeypatch, capsys):
    not_a_hypernet = tmp_path / "empty"
    not_a_hypernet.mkdir()
    code, err = _script(monkeypatch, capsys, "eval", str(FIXTURES / "questions.jsonl"), "--modes", "[hyper]",
                        "--retriever", "gold", "--model", str(tiny_model_dir), "--hypernet", str(not_a_hypernet),
                        "--out", str(tmp_path / "eval"))
    assert code == 1 and err.startswith("hyperprag: error: ") and str(not_a_hypernet) in err
    assert err.count("\n") == 1


def test_a_folder_that_is_not_a_store_is_one_line(tmp_path, tiny_model_dir, monkeypatch, capsys):
    code, err = _script(monkeypatch, capsys, "eval", str(FIXTURES / "questions.jsonl"), "--modes", "[prag]",
                        "--retriever", "gold", "--model", str(tiny_model_dir), "--store", str(tmp_path),
                        "--out", str(tmp_path / "eval"))
    assert code == 1 and err == f"hyperprag: error: {tmp_path / 'manifest.json'} does not exist: {tmp_path} is " \
        "not an adapter store (make one with AdapterStore.create)\n"


def test_a_mode_without_its_adapters_is_one_line_before_any_answer(tmp_path, tiny_model_dir, monkeypatch, capsys):
    code, err = _script(monkeypatch, capsys, "eval", str(FIXTURES / "questions.jsonl"), "--modes", "[rag,hyper]",
                        "--retriever", "gold", "--model", str(tiny_model_dir), "--out", str(tmp_path / "eval"))
    assert code == 1 and err == ("hyperprag: error: mode 'hyper' needs a hypernetwork (--hypernet) or a generated "
                                 "store\n")
    assert not (tmp_path / "eval" / "predictions").exists()  # rag was not answered first


def test_gold_passages_find_the_adapters_teach_made_from_the_corpus(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """`teach corpus.jsonl store`, then `eval questions.jsonl --retriever gold --store store` without --corpus:
    the pooled passages get other ids (p0, p1, ...), and find their adapters by content; the numbers equal
    an evaluation with --corpus. A store without content hashes gives a one-line error naming --corpus."""
    import json

    from hyperprag.core.store import AdapterStore

    questions = FIXTURES / "questions.jsonl"
    docs = {d.content_hash: d for q in load_questions(questions) for p in q.passages
            for d in [Document("", p.title, p.text)]}
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"doc-{i}", "title": d.title, "text": d.text}) + "\n"
                              for i, d in enumerate(docs.values())))
    settings = tmp_path / "teacher.yaml"
    settings.write_text("epochs: 1\nkinds: [qa_closed]\nmax_qa: 2\nbatch_size: 2\n")
    model = ["--model", str(tiny_model_dir)]
    main(["teach", str(corpus), str(tmp_path / "store"), *model, "--settings", str(settings),
          "--augment_cache", str(tmp_path / "augment")])
    common = ["--modes", "[prag]", "--retriever", "gold", "--store", str(tmp_path / "store"), *model,
              "--max_new_tokens", "4", "--answer_loss", "true"]
    pooled = main(["eval", str(questions), *common, "--out", str(tmp_path / "pooled")])["prag"]["all"]
    given = main(["eval", str(questions), *common, "--corpus", str(corpus), "--out", str(tmp_path / "given")])
    assert pooled == {**given["prag"]["all"], "seconds_per_question": pooled["seconds_per_question"]}
    assert pooled["answer_nll"] > 0

    bare = AdapterStore.create(tmp_path / "bare", str(tiny_model_dir), AdapterStore.open(tmp_path / "store").spec)
    teacher = AdapterStore.open(tmp_path / "store")
    for doc_id in teacher.ids():
        bare.put(doc_id, teacher.get(doc_id))  # no content hash in its meta
    bare.flush()
    code, err = _script(monkeypatch, capsys, "eval", str(questions), *common[:4], "--store", str(tmp_path / "bare"),
                        *model, "--out", str(tmp_path / "bare-eval"))
    last = err.split("\n")[-2]  # the progress bar ended its own line first
    assert code == 1 and last.startswith("hyperprag: error: document 'p0'") and last.endswith("(--corpus)")


def test_eval_scores_multiple_choice_by_likelihood(tmp_path, tiny_model_dir):
    """`eval --mcq_scoring likelihood`: every prediction is the letter of the option with the lowest
    per-token NLL it records, and accuracy counts those letters against the gold ones."""
    rows = [{"id": f"m{i}", "question": f"Which word is {i}?", "answers": [gold, opts[gold]], "options": opts}
            for i, (gold, opts) in enumerate([("A", {"A": "red", "B": "green"}), ("B", {"A": "one", "B": "two",
                                                                                        "C": "three"})])]
    questions = tmp_path / "mc.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    metrics = main(["eval", str(questions), "--modes", "[vanilla]", "--model", str(tiny_model_dir),
                    "--mcq_scoring", "likelihood", "--out", str(out)])
    preds = [json.loads(line) for line in (out / "predictions" / "vanilla.jsonl").read_text().splitlines()]
    for p, r in zip(preds, rows, strict=True):
        nll = p["extra"]["option_nll"]
        assert list(nll) == list(r["options"]) and p["prediction"] == min(nll, key=nll.get)
    assert metrics["vanilla"]["all"]["acc"] == pytest.approx(
        sum(p["prediction"] == r["answers"][0] for p, r in zip(preds, rows, strict=True)) / 2)
