"""A :class:`~worldssl.report.build.Report` as ``report.md`` (figures beside it as PNG files) and ``report.html``
(one self-contained page: figures embedded as base64 data, styles inline, no outside resource, so it opens
offline; a Content-Security-Policy forbids scripts and network access).

Both are written from one list of blocks, so they say the same thing. Every string that comes from the runs
(directory names, group labels, config values, log lines) is plain text: escaped for markdown in ``report.md``
and for HTML in ``report.html``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re
from pathlib import Path
from typing import Any

from worldssl.report.build import Report, Row, Table
from worldssl.report.stats import AGGREGATES, Interval
from worldssl.runtime.io import atomic_open


@dataclasses.dataclass(frozen=True)
class Code:
    """Inline code in a block's text (``backticks`` in markdown, <code> in HTML)."""

    text: str


Text = tuple  # parts: str (plain text) or Code


@dataclasses.dataclass
class Block:
    kind: str                          # h1 h2 h3 p list table img
    text: Text = ()
    items: list[Text] = dataclasses.field(default_factory=list)
    header: list[str] = dataclasses.field(default_factory=list)
    rows: list[list[str]] = dataclasses.field(default_factory=list)
    image: Path | None = None


def _t(*parts: Any) -> Text:
    return tuple(parts)


def _digits(unit: str) -> int:
    return 3 if unit in ("R²", "normalised") else 1


def _interval(s: Interval, digits: int) -> str:
    if s.n < 2:
        return f"{s.value:.{digits}f} (one seed, no interval)"
    return f"{s.value:.{digits}f} [{s.low:.{digits}f}, {s.high:.{digits}f}]"


def _stats_cells(row: Row, digits: int, gap: bool) -> list[str]:
    return [_interval(row.stats[a], digits) if (a != "optimality gap" or gap) else "-" for a in AGGREGATES]


def _per_seed(row: Row, digits: int) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in row.values)


def _table_blocks(table: Table, n_tasks: int) -> list[Block]:
    m = table.metric
    digits = _digits(m.unit)
    gap = m.scale is not None
    published = any(r.published for r in table.rows)
    header = ["task", "budget", "group", "seeds", *[f"{a} [95% CI]" for a in AGGREGATES], "per seed"]
    if published:
        header.append("published (not rerun)")
    rows, shown = [], {}
    for r in table.rows:
        cells = [r.task, r.budget, r.group, str(len(r.values)), *_stats_cells(r, digits, gap), _per_seed(r, digits)]
        if published:  # a task's published numbers once, where several rows of it would repeat them
            text = "; ".join(p.text() for p in r.published)
            cells.append("(as above)" if text and shown.get((r.task, r.budget)) == text else text or "-")
            shown[(r.task, r.budget)] = text
        rows.append(cells)
    if m.scale:
        units = (f"Units: {m.unit}; normalised score = value ÷ {m.scale:g}. Optimality gap: the mean shortfall "
                 f"below the maximum ({m.scale:g}), in the same units; lower is better.")
    else:
        units = f"Units: {m.unit}; not normalised (no known maximum), so no optimality gap."
    blocks = [Block("h3", _t(m.label)), Block("p", _t(units + " Seeds: the runs each interval is over.")),
              Block("table", header=header, rows=rows)]
    if table.aggregate:
        blocks.append(Block("p", _t(f"Across all {n_tasks} tasks, on normalised scores (each seed's tasks "
                                    "together; intervals resample seeds within each task):")))
        blocks.append(Block("table", header=["group", "seeds", *[f"{a} [95% CI]" for a in AGGREGATES],
                                             "per seed (mean over tasks)"],
                            rows=[[r.group, str(len(r.seeds)), *_stats_cells(r, 3, True), _per_seed(r, 3)]
                                  for r in table.aggregate]))
    if table.aggregate_note:
        blocks.append(Block("p", _t(f"Aggregate: {table.aggregate_note}.")))
    return blocks


def blocks_of(report: Report, images: dict[Path, str] | None = None) -> list[Block]:
    """The report as blocks (``images`` unused here; figures are referenced by path)."""
    s = report.settings
    counts: dict[str, int] = {}
    for _, _, status, _ in report.not_scored:
        counts[status] = counts.get(status, 0) + 1
    scored = sum(sec.scored for sec in report.sections)  # not the rows of one table: tasks can differ in metric
    out = [Block("h1", _t(report.title)),
           Block("p", _t("Runs read from: ", *_join_code(report.dirs), ".")),
           Block("p", _t(f"{scored} run(s) scored; not scored: "
                         + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none")
                         + f"; {len(report.missing)} sweep job(s) missing; {len(report.skipped)} "
                         "director(y/ies) skipped. Every one is listed below.")),
           Block("p", _t("Statistics from rliable: mean, median, interquartile mean (IQM) and optimality gap, each "
                         "with a 95% stratified-bootstrap interval (percentile method, "
                         f"{s['reps']} resamples, random state {s['seed']}: the same runs give the same report). "
                         "Normalised scores: DMC returns ÷ 1000; Hits@1, MRR and planning success (%) ÷ 100. "
                         "A group is one configuration: the config keys that differ between runs, except the seed "
                         "and the task."))]
    for sec in report.sections:
        out.append(Block("h2", _title(sec.title)))
        if sec.group_keys:
            out.append(Block("p", _t("Groups differ in: ", *_join_code(sec.group_keys), ".")))
        n_tasks = max((len({r.task for r in t.rows}) for t in sec.tables), default=1)
        for table in sec.tables:
            out += _table_blocks(table, n_tasks)
        if sec.improvements:
            out.append(Block("h3", _t("Probability of improvement")))
            out.append(Block("p", _t("P(X > Y): the chance that a run of X scores above a run of Y on the same "
                                     "task (ties count a half), averaged over tasks; 95% interval from resampling "
                                     "the runs of X and Y independently.")))
            out.append(Block("table", header=["metric", "X", "Y", "P(X > Y) [95% CI]", "seeds (X vs Y)", "tasks"],
                             rows=[[i.metric.label, i.x, i.y, _interval(dataclasses.replace(i.p, n=2), 3),
                                    f"{i.n_x} vs {i.n_y}", ", ".join(i.tasks)] for i in sec.improvements]))
        for caption, path in sec.figures:
            out.append(Block("h3", _t(caption)))
            out.append(Block("img", _t(caption), image=path))
    out.append(Block("h2", _t("Runs not scored")))
    if report.not_scored:
        out.append(Block("p", _t("Stopped runs did not reach their budget; running ones have no summary.json "
                                 "yet; incomplete ones stopped without writing one. None enters a table above.")))
        out.append(Block("table", header=["run", "group", "status", "why"],
                         rows=[list(x) for x in report.not_scored]))
    else:
        out.append(Block("p", _t("None: every run found finished its budget and was scored.")))
    if report.missing:
        out.append(Block("h2", _t("Sweep jobs missing")))
        out.append(Block("p", _t("Jobs that a hydra sweep's multirun.yaml lists but no run directory carries:")))
        out.append(Block("table", header=["sweep", "job overrides"], rows=[list(x) for x in report.missing]))
    if report.skipped:
        out.append(Block("h2", _t("Directories skipped")))
        out.append(Block("table", header=["directory", "why"], rows=[list(x) for x in report.skipped]))
    if report.published_sources:
        out.append(Block("h2", _t("Published numbers (not rerun)")))
        out.append(Block("p", _t("Taken from the papers for the same task and budget, not reproduced here; "
                                 "\"±\" is their standard deviation over seeds, not a 95% interval; their "
                                 "settings (image size, batch, network width, seed count) may differ from these "
                                 "runs'. Sources:")))
        out.append(Block("list", items=[_t(src) for src in report.published_sources]))
    return out


def _join_code(items: list[str]) -> list[Any]:
    parts: list[Any] = []
    for i, item in enumerate(items):
        if i:
            parts.append(", ")
        parts.append(Code(str(item)))
    return parts


def _title(text: str) -> Text:
    parts: list[Any] = []
    for i, piece in enumerate(re.split(r"`", text)):
        if piece:
            parts.append(Code(piece) if i % 2 else piece)
    return tuple(parts)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&])")


def md_escape(text: str) -> str:
    """Plain text that markdown shows as is (no emphasis, links, HTML or table cells from it)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def _md_text(parts: Text) -> str:
    out = []
    for p in parts:
        if isinstance(p, Code):
            ticks = "``" if "`" in p.text else "`"
            out.append(f"{ticks}{p.text.replace(chr(10), ' ')}{ticks}")
        else:
            out.append(md_escape(p))
    return "".join(out)


def to_markdown(blocks: list[Block], base: Path) -> str:
    lines: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            lines += [f"{'#' * int(b.kind[1])} {_md_text(b.text)}", ""]
        elif b.kind == "p":
            lines += [_md_text(b.text), ""]
        elif b.kind == "list":
            lines += [f"- {_md_text(item)}" for item in b.items] + [""]
        elif b.kind == "table":
            lines.append("| " + " | ".join(md_escape(h) for h in b.header) + " |")
            lines.append("|" + "|".join("---" for _ in b.header) + "|")
            lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in b.rows]
            lines.append("")
        elif b.kind == "img" and b.image is not None:
            rel = Path(b.image).resolve().relative_to(base.resolve()) if Path(b.image).resolve().is_relative_to(
                base.resolve()) else Path(b.image).resolve()
            lines += [f"![{_md_text(b.text)}](<{rel.as_posix()}>)", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#1a1a1a;background:#fff;line-height:1.45}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f2f2f2}
tr:nth-child(even) td{background:#fafafa}code{background:#f2f2f2;padding:0 .2em;border-radius:3px}
img{max-width:100%;height:auto;border:1px solid #ddd}figure{margin:0 0 1.5em}h2{border-bottom:1px solid #ddd}"""


def _html_text(parts: Text) -> str:
    return "".join(f"<code>{html.escape(p.text)}</code>" if isinstance(p, Code) else html.escape(str(p))
                   for p in parts)


def to_html(blocks: list[Block], title: str) -> str:
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{_html_text(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_html_text(b.text)}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_html_text(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.kind == "img" and b.image is not None:
            data = base64.b64encode(Path(b.image).read_bytes()).decode("ascii")
            alt = html.escape("".join(p.text if isinstance(p, Code) else str(p) for p in b.text), quote=True)
            body.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"></figure>')
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write(report: Report, out: Path) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html``; returns their paths."""
    out = Path(out)
    blocks = blocks_of(report)
    md, page = out / "report.md", out / "report.html"
    with atomic_open(md, "w") as f:
        f.write(to_markdown(blocks, out))
    with atomic_open(page, "w") as f:
        f.write(to_html(blocks, report.title))
    return md, page
