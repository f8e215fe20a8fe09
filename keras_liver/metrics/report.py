"""Results tables: one row per case, summary rows, CSV/Markdown files, comparison with a paper.

A results frame has one row per case (index ``case``) and one column per score; per-class
scores are prefixed with the class name (``liver_dice``, ``tumour_assd``). Columns named
``tp``/``fp``/``fn``/``tn`` (or ``<class>_tp`` ...) hold voxel counts; they make the pooled
("global") scores possible without keeping the volumes.

:func:`summarize` adds three rows:

- ``mean``, ``std``: over cases, of every score column (not the counts). ``std`` is the
  population standard deviation (``ddof=0``, as ``numpy.std``) unless told otherwise. Cases
  scored 9001 (LiTS, an empty mask) are included, as LiTS does.
- ``global``: scores of the counts summed over all cases — Dice global
  ``2ΣTP / (2ΣTP + ΣFP + ΣFN)`` = ``2Σ|P∩G| / Σ(|P|+|G|)`` (SPEC §7), Jaccard, VOE, accuracy,
  precision, recall, specificity, for every prefix that has the four count columns; the count
  columns hold the sums. Distances have no pooled value (NaN).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from keras_liver.metrics.classification import ConfusionCounts, scores_from_counts

COUNT_KEYS = ("tp", "fp", "fn", "tn")
SUMMARY_ROWS = ("mean", "std", "global")


def flatten_scores(scores: Mapping, sep: str = "_") -> dict[str, float]:
    """``{"liver": {"dice": 0.9}, "n": 3}`` → ``{"liver_dice": 0.9, "n": 3}``."""
    flat: dict[str, float] = {}
    for key, value in scores.items():
        if isinstance(value, Mapping):
            for inner, v in flatten_scores(value, sep).items():
                flat[f"{key}{sep}{inner}"] = v
        elif isinstance(value, ConfusionCounts):
            for inner, v in value._asdict().items():
                flat[f"{key}{sep}{inner}"] = v
        else:
            flat[str(key)] = value
    return flat


def results_frame(per_case: Mapping[str, Mapping] | Sequence[tuple[str, Mapping]]) -> pd.DataFrame:
    """One row per case from ``{case: scores}`` (scores nested per class or flat)."""
    items = list(per_case.items()) if isinstance(per_case, Mapping) else list(per_case)
    if not items:
        raise ValueError("results_frame needs at least one case")
    cases = [str(case) for case, _ in items]
    if len(set(cases)) != len(cases):
        dupes = sorted({c for c in cases if cases.count(c) > 1})
        raise ValueError(f"duplicate case ids: {dupes}")
    frame = pd.DataFrame([flatten_scores(scores) for _, scores in items], index=cases)
    frame.index.name = "case"
    return frame


def _case_indexed(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame with a ``case`` column (e.g. ``pd.DataFrame(rows)``) indexed by it."""
    if "case" in frame.columns and isinstance(frame.index, pd.RangeIndex):
        frame = frame.set_index("case")
        frame.index = frame.index.astype(str)
    return frame


def _count_prefixes(columns) -> list[str]:
    columns = set(columns)
    prefixes = []
    for col in sorted(columns):
        if col == "tp" or col.endswith("_tp"):
            prefix = col[:-2]
            if all(prefix + k in columns for k in COUNT_KEYS):
                prefixes.append(prefix)
    return prefixes


def _count_columns(columns) -> set[str]:
    return {p + k for p in _count_prefixes(columns) for k in COUNT_KEYS}


def pooled_scores(counts: ConfusionCounts) -> dict[str, float]:
    """Dice, Jaccard, VOE and the classification scores of (summed) counts; all empty → Dice 1."""
    denominator = 2 * counts.tp + counts.fp + counts.fn
    dice = 1.0 if denominator == 0 else 2 * counts.tp / denominator
    union = counts.tp + counts.fp + counts.fn
    jaccard = 1.0 if union == 0 else counts.tp / union
    return {"dice": dice, "jaccard": jaccard, "voe": 1.0 - jaccard, **scores_from_counts(counts)}


def summarize(frame: pd.DataFrame, ddof: int = 0) -> pd.DataFrame:
    """Rows ``mean``, ``std`` and ``global`` of a per-case results frame (module docstring).

    The cases are the frame's index, or its ``case`` column when it has one and a plain index.
    """
    frame = _case_indexed(frame)
    cases = frame.drop(index=[r for r in SUMMARY_ROWS if r in frame.index])
    if cases.empty:
        raise ValueError("summarize needs at least one case row")
    numeric = cases.select_dtypes(include="number")
    counts = _count_columns(numeric.columns)
    scores = numeric[[c for c in numeric.columns if c not in counts]]
    summary = pd.DataFrame(np.nan, index=list(SUMMARY_ROWS), columns=numeric.columns,
                           dtype=float)
    summary.loc["mean", scores.columns] = scores.mean(axis=0)
    summary.loc["std", scores.columns] = scores.std(axis=0, ddof=ddof)
    for prefix in _count_prefixes(numeric.columns):
        total = ConfusionCounts(*(int(numeric[prefix + k].sum()) for k in COUNT_KEYS))
        for k, v in zip(COUNT_KEYS, total):
            summary.loc["global", prefix + k] = v
        for metric, value in pooled_scores(total).items():
            if prefix + metric in summary.columns:
                summary.loc["global", prefix + metric] = value
    summary.index.name = frame.index.name
    return summary


def with_summary(frame: pd.DataFrame, ddof: int = 0) -> pd.DataFrame:
    """The per-case rows followed by the :func:`summarize` rows."""
    frame = _case_indexed(frame)
    cases = frame.drop(index=[r for r in SUMMARY_ROWS if r in frame.index])
    return pd.concat([cases, summarize(cases, ddof=ddof)])


def _cell(value, floatfmt: str) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if np.isnan(value) else format(float(value), floatfmt)
    return str(value).replace("|", "\\|")


def to_markdown(frame: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A frame as a GitHub Markdown table; a plain 0..n−1 index is left out.

    Floats are written with ``floatfmt``; numeric columns are right-aligned.
    """
    show_index = not isinstance(frame.index, pd.RangeIndex)
    header = ([str(frame.index.name or "")] if show_index else []) + [str(c) for c in frame.columns]
    align = (["---"] if show_index else []) + [
        "---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for index, row in zip(frame.index, frame.itertuples(index=False, name=None)):
        cells = ([_cell(index, floatfmt)] if show_index else []) + [_cell(v, floatfmt) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(frame: pd.DataFrame, out_dir: str, name: str = "metrics",
                  summary: bool = True, floatfmt: str = ".4f") -> dict[str, str]:
    """Write ``<name>.csv`` and ``<name>.md`` (per case, then the summary rows) into ``out_dir``.

    Returns ``{"csv": path, "markdown": path}``. The CSV keeps full precision; the Markdown
    table is rounded with ``floatfmt``.
    """
    frame = _case_indexed(frame)
    table = with_summary(frame) if summary else frame
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, f"{name}.csv")
    md_path = os.path.join(out_dir, f"{name}.md")
    table.to_csv(csv_path, index_label=table.index.name or "case")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(to_markdown(table, floatfmt=floatfmt) + "\n")
    return {"csv": csv_path, "markdown": md_path}


def compare_with_paper(df_summary, paper: Mapping[str, float], row: str = "mean") -> pd.DataFrame:
    """Our numbers beside a paper's: columns ``metric``, ``ours``, ``paper``, ``difference``.

    ``df_summary`` is a summary frame (its ``row``, default ``"mean"``, is read), a results
    frame with summary rows, a Series, or a dict ``{metric: value}``. ``paper`` maps our metric
    names (``"liver_dice"``, ``"tumour_assd"``) to the published value, in our units
    (fractions for Dice/Jaccard/VOE/RVD/precision/recall, mm for distances: divide a
    percentage by 100). ``difference`` is ours − paper. Rows follow ``paper``'s order.
    """
    if isinstance(df_summary, pd.DataFrame):
        if row not in df_summary.index:
            raise ValueError(f"compare_with_paper: no {row!r} row in the results; rows are "
                             f"{list(df_summary.index)[:10]}")
        ours = df_summary.loc[row]
    else:
        ours = pd.Series(dict(df_summary) if isinstance(df_summary, Mapping) else df_summary)
    missing = [m for m in paper if m not in ours.index]
    if missing:
        raise ValueError(f"compare_with_paper: metrics {missing} are not in our results; "
                         f"available: {sorted(map(str, ours.index))}")
    rows = [{"metric": m, "ours": float(ours[m]), "paper": float(p),
             "difference": float(ours[m]) - float(p)} for m, p in paper.items()]
    return pd.DataFrame(rows, columns=["metric", "ours", "paper", "difference"])


def print_comparison(df_summary, paper: Mapping[str, float], row: str = "mean",
                     title: str | None = None, floatfmt: str = ".4f") -> pd.DataFrame:
    """Print :func:`compare_with_paper` as a Markdown table (under ``title``); return it."""
    table = compare_with_paper(df_summary, paper, row=row)
    if title:
        print(title)
    print(to_markdown(table, floatfmt=floatfmt))
    return table
