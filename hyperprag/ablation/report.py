"""The ablation report: metrics.json, a markdown table and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from hyperprag.core.io import atomic_write_json, atomic_write_text
from hyperprag.core.plotting import pyplot, save_png

SCORES = ("em", "f1", "acc")


def label(cell: dict, several_k: bool = True) -> str:
    """A cell's short name: method [variant] k=K rule."""
    text = cell["method"]
    if cell.get("variant"):
        text += f" [{cell['variant']}]"
    if several_k and cell.get("top_k") is not None:
        text += f" k={cell['top_k']}"
    if cell.get("composition"):
        text += f" {cell['composition']}"
    return text


def main_score(cell: dict) -> tuple[str, float | None]:
    """F1 where the dataset has it, else accuracy (multiple choice)."""
    for key in ("f1", "acc", "em"):
        if cell.get(key) is not None:
            return key, cell[key]
    return "f1", None


def _fmt(v, pct: bool = False, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if pct:
            return f"{100 * v:.1f}"
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    return str(v)


def _bytes(v) -> str:
    if v is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if v < 1024 or unit == "GB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def format_tables(summary: dict) -> str:
    """The whole report as markdown: per dataset, per question type, specificity, variants."""
    cfg = summary["config"]
    cells = summary["cells"]
    scores = [s for s in SCORES if any(c.get(s) is not None for c in cells)]
    parts = [f"# Ablation ({cfg.get('config_file') or 'config'})", "",
             f"Base model `{cfg['model']}`, retriever `{cfg['retriever']}`, top-k {cfg['top_k']}, "
             f"{len(cells)} cells, {len(summary['specificity'])} specificity checks"
             + (f", {len(summary['missing_cells'])} not finished" if summary.get("missing_cells") else "")
             + ". Scores in %; answer loss = mean NLL per gold-answer token; offline = seconds to parameterize one "
               "document (teacher training, or hypernetwork encode + forward); latency = seconds per question.", ""]
    for name, sizes in cfg.get("dataset_sizes", {}).items():
        rows = [c for c in cells if c["dataset"] == name]
        if not rows:
            continue
        parts += [f"## {name} ({sizes['evaluated']} questions, corpus {sizes['corpus']} documents)", ""]
        header = ["method", "variant", "train on", "k", "rule", *[s.upper() for s in scores], "answer loss",
                  "offline s/doc", "latency s/q", "bytes/doc", "n"]
        body = [[c["method"], c.get("variant") or "-",
                 ("-" if c.get("train_on") is None else ",".join(c["train_on"]) + (" (OOD)" if c["out_of_domain"]
                                                                                  else "")),
                 _fmt(c.get("top_k")), c.get("composition") or "-", *[_fmt(c.get(s), pct=True) for s in scores],
                 _fmt(c.get("answer_nll")), _fmt(c.get("offline_s_per_doc")), _fmt(c.get("latency_s_per_question")),
                 _bytes(c.get("bytes_per_doc")), _fmt(c.get("n"))] for c in rows]
        parts += [_table(header, body), ""]
        typed = [(c, g, m) for c in rows for g, m in c["metrics"].items() if "/" in g]
        if typed:
            type_scores = [s for s in scores if any(s in m for _, _, m in typed)]
            header = ["method", "variant", "k", "rule", "type", *[s.upper() for s in type_scores], "answer loss", "n"]
            body = [[c["method"], c.get("variant") or "-", _fmt(c.get("top_k")), c.get("composition") or "-",
                     g.split("/", 1)[1], *[_fmt(m.get(s), pct=True) for s in type_scores], _fmt(m.get("answer_nll")),
                     _fmt(m.get("n"))] for c, g, m in typed]
            parts += [f"### {name} by question type", "", _table(header, body), ""]
    if summary["specificity"]:
        body = []
        for r in summary["specificity"]:
            source = "teacher" if r["method"] == "teacher" else \
                f"hyper [{r['variant']}]" + (" (OOD)" if r.get("out_of_domain") else "")
            if not r.get("rows"):
                body.append([r["dataset"], source, "-", "-", "-", "-", r.get("skipped", "-")])
                continue
            for adapter, row in r["rows"].items():
                body.append([r["dataset"], source, adapter, _fmt(row["answer_nll"]), _fmt(row["em"], pct=True),
                             _fmt(row["contains"], pct=True), _fmt(r["n"])])
        parts += ["## Document specificity (closed-book, no passages)", "",
                  "Each question answered with its own gold document's adapter, another evaluated document's "
                  "adapter, or none. Own < other in answer loss means the adapters carry the document.", "",
                  _table(["dataset", "source", "adapter", "answer loss", "EM", "contains", "n"], body), ""]
    if summary["variants"]:
        body = [[v["variant"], ",".join(v["train_on"]) if v.get("train_on") else "all", _fmt(v.get("documents")),
                 _fmt(v.get("teacher_documents", v.get("documents"))), _fmt(v.get("steps")),
                 _fmt(v.get("seconds"), digits=1), _fmt(v.get("teacher_seconds_per_doc"), digits=1),
                 v["folder"]] for v in summary["variants"]]
        header = ["variant", "train on", "documents", "with a teacher", "steps", "train s", "teacher s/doc", "folder"]
        parts += ["## Hypernetwork variants", "", _table(header, body), ""]
    return "\n".join(parts) + "\n"


# ---- plots ---------------------------------------------------------------------------------------------------

def plot_by_method(cells: list[dict], path: Path) -> Path:
    """Grouped bars: the main score of every method/variant cell, grouped by dataset."""
    plt = pyplot()
    several_k = len({c.get("top_k") for c in cells if c.get("top_k") is not None}) > 1
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    labels = list(dict.fromkeys(label(c, several_k) for c in cells))
    value = {(c["dataset"], label(c, several_k)): main_score(c)[1] for c in cells}
    metric = main_score(cells[0])[0] if cells else "f1"
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + len(datasets) * (0.3 + 0.22 * len(labels))), 4.5))
    for j, lab in enumerate(labels):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(datasets))]
        ys = [100 * (value.get((d, lab)) or 0.0) for d in datasets]
        ax.bar(xs, ys, width, label=lab)
    ax.set_xticks(range(len(datasets)), datasets)
    top = max([100 * (v or 0.0) for v in value.values()] + [1.0])
    ax.set_ylim(0, top * 1.1)
    ax.set_ylabel(f"{metric.upper()} (%)")
    ax.set_title(f"{metric.upper()} by method and dataset")
    ax.legend(fontsize=7, ncol=2 if len(labels) > 8 else 1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    save_png(fig, path)
    return path


def plot_score_vs_cost(cells: list[dict], path: Path) -> Path:
    """Main score (mean over datasets) against parameterization seconds per document (log x), per method/variant.

    Methods that parameterize nothing (vanilla, rag) sit at the left edge, marked "0 s".
    """
    plt = pyplot()
    groups: dict[str, list[dict]] = defaultdict(list)
    for c in cells:
        groups[c["method"] + (f" [{c['variant']}]" if c.get("variant") else "")].append(c)
    points = []
    for name, cs in groups.items():
        scores = [main_score(c)[1] for c in cs if main_score(c)[1] is not None]
        costs = [c["offline_s_per_doc"] for c in cs if c.get("offline_s_per_doc") is not None]
        if scores:
            points.append((name, sum(costs) / len(costs) if costs else 0.0, 100 * sum(scores) / len(scores)))
    positive = [x for _, x, _ in points if x > 0]
    floor = (min(positive) / 10) if positive else 1e-3
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, x, y in points:
        xx = x if x > 0 else floor
        ax.scatter([xx], [y], s=40)
        ax.annotate(name + ("  (0 s)" if x <= 0 else ""), (xx, y), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameterization seconds per document (log)")
    metric = main_score(cells[0])[0] if cells else "f1"
    ax.set_ylabel(f"{metric.upper()} (%), mean over datasets")
    ax.set_title(f"{metric.upper()} against offline cost")
    fig.tight_layout()
    save_png(fig, path)
    return path


def learning_curve_groups(cells: list[dict]) -> dict[str, list[int]]:
    """Variant groups with several training sizes -> their sizes."""
    sizes: dict[str, set[int]] = defaultdict(set)
    for c in cells:
        if c.get("variant_group") is not None:
            sizes[c["variant_group"]].add(c["variant_size"])
    return {g: sorted(s) for g, s in sizes.items() if len(s) > 1}


def plot_learning_curve(cells: list[dict], path: Path) -> Path | None:
    """Score and answer loss against the number of teacher documents, one line per group/method/dataset."""
    groups = learning_curve_groups(cells)
    if not groups:
        return None
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    lines: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)
    for c in cells:
        if c.get("variant_group") in groups:
            lines[(c["variant_group"], c["method"], c["dataset"], c.get("top_k"), c.get("composition"))].append(
                (c["variant_size"], c))
    for (group, method, dataset, k, rule), pts in lines.items():
        pts.sort(key=lambda p: p[0])
        name = f"{group} {method} {dataset}" + (f" k={k}" if k and k > 1 else "") + (f" {rule}" if rule else "")
        xs = [n for n, _ in pts]
        ax1.plot(xs, [100 * (main_score(c)[1] or 0.0) for _, c in pts], marker="o", label=name)
        nll = [(n, c["answer_nll"]) for n, c in pts if c.get("answer_nll") is not None]
        if nll:
            ax2.plot([n for n, _ in nll], [v for _, v in nll], marker="o", label=name)
    metric = main_score(cells[0])[0]
    ticks = sorted({n for sizes in groups.values() for n in sizes})
    for ax in (ax1, ax2):
        ax.set_xticks(ticks)
    ax1.set_xlabel("teacher documents per training dataset")
    ax1.set_ylabel(f"{metric.upper()} (%)")
    ax2.set_xlabel("teacher documents per training dataset")
    ax2.set_ylabel("gold-answer loss")
    ax1.set_title("learning curve")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    return path


def write_report(out: str | Path, summary: dict) -> dict[str, Path]:
    """metrics.json, table.md and plots/*.png under `out`; returns what was written."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", summary)
    atomic_write_text(out / "table.md", format_tables(summary))
    written = {"metrics": out / "metrics.json", "table": out / "table.md"}
    cells = summary["cells"]
    if cells:
        written["by_method"] = plot_by_method(cells, out / "plots" / "f1_by_method.png")
        written["vs_cost"] = plot_score_vs_cost(cells, out / "plots" / "f1_vs_cost.png")
        curve = plot_learning_curve(cells, out / "plots" / "learning_curve.png")
        if curve is not None:
            written["learning_curve"] = curve
    return written
