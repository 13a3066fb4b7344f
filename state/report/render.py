"""The report as text: an aligned table, JSON with stable keys, a self-contained HTML page.

The page draws the same figures as inline SVG (bars with interval whiskers) and carries
its CSS inline: no script, font, image or stylesheet is fetched when it is opened.
"""

from __future__ import annotations

import html
from decimal import Decimal
from typing import Iterable

import orjson

from .aggregate import CampaignReport, Counts, Report, Row
from .stats import ALPHA, CONFIDENCE, Interval

__all__ = ["table", "to_json", "to_html", "skipped_lines"]

_CONF = f"{CONFIDENCE * 100:g}%"


# -- numbers as people read them ----------------------------------------------------------
def _count(n: int) -> str:
    return f"{n:,}"


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x * 100:.{digits}f}%"


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def _rate(iv: Interval | None) -> tuple[str, str]:
    if iv is None:
        return "", ""
    return _pct(iv.value), f"[{_pct(iv.low)}, {_pct(iv.high)}]"


def _lift(iv: Interval | None) -> tuple[str, str]:
    if iv is None:
        return "", ""
    if iv.low is None or iv.high is None:
        return _signed(iv.value), "n/a"
    return _signed(iv.value), f"[{_signed(iv.low)}, {_signed(iv.high)}]"


def _money(revenue: dict[str, Decimal]) -> str:
    return " + ".join(f"{cur} {v:,.2f}" for cur, v in sorted(revenue.items())) if revenue else ""


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "p < 0.0001" if p < 0.0001 else f"p = {p:.4f}"


def _variant(v: str | None) -> str:
    return "(no variant)" if v is None else v


def _show_variants(variants: list[tuple[str | None, Row]]) -> bool:
    return len(variants) > 1 or (len(variants) == 1 and variants[0][0] is not None)


def _rows(c: CampaignReport) -> Iterable[tuple[str, Row, bool]]:
    """(label, row, is_group_row) in display order; group rows carry the holdout columns."""
    yield "all", c.row, True
    if _show_variants(c.variants):
        for v, r in c.variants:
            yield f"variant {_variant(v)}", r, False
    for s in c.steps:
        yield f"step {s.step_id}", s.row, True
        if len(s.variants) > 1:
            for v, r in s.variants:
                yield f"  variant {_variant(v)}", r, False


def ab_sentence(c: CampaignReport) -> str | None:
    ab = c.ab
    if ab is None:
        return None
    head = f"A/B test of {', '.join(ab.variants)}: "
    if ab.chi2 is None:
        return head + f"no winner ({ab.reason})"
    stat = f"chi-square {ab.chi2:.2f} (df {ab.dof}), {_p(ab.p_value)}"
    if ab.winner is None:
        return head + f"{stat}: no winner ({ab.reason})"
    rates = {v: r.rate.value for v, r in c.variants if r.rate is not None}
    others = ", ".join(f"{_variant(v)} {_pct(x)}" for v, x in rates.items() if v != ab.winner)
    return head + f"{stat}: winner {ab.winner} ({_pct(rates.get(ab.winner))} vs {others})"


def lift_sentence(row: Row) -> str:
    if row.holdout is None or row.holdout.sent == 0:
        return "no holdout: no lift to measure (give the campaign a holdout: N%)"
    if row.lift is None:
        return "the holdout has no conversion yet: lift unknown"
    value, interval = _lift(row.lift)
    if row.lift.low is None:
        return f"lift over holdout {value} (interval undefined: no conversion among those sent)"
    verdict = ("the campaign converts more than the holdout" if row.lift.low > 0 else
               "the campaign converts less than the holdout" if row.lift.high is not None and row.lift.high < 0
               else "not distinguishable from the holdout")
    return f"lift over holdout {value}, {_CONF} interval {interval}: {verdict}"


# -- table -------------------------------------------------------------------------------
_HEAD = ("", "sent", "conv.", "rate", f"{_CONF} interval", "revenue", "held out", "h. conv.", "h. rate", "lift",
         f"{_CONF} interval")
_LEFT = {0, 5}


def _cells(label: str, row: Row, group: bool) -> list[str]:
    c = row.counts
    rate, rate_iv = _rate(row.rate)
    lift_v, lift_iv = _lift(row.lift)
    cells = [label, _count(c.sent), _count(c.converted), rate, rate_iv, _money(c.revenue)]
    if group and row.holdout is not None:
        h = row.holdout
        cells += [_count(h.sent), _count(h.converted), _rate(row.holdout_rate)[0]]
    else:
        cells += ["", "", ""]
    return cells + [lift_v, lift_iv]


def table(report: Report) -> str:
    """Aligned text, one block per campaign."""
    if not report.campaigns:
        return "no campaign in the input: no released message, held-out decision or conversion\n"
    blocks: list[tuple[str, list[list[str]], list[str]]] = []
    for c in report.campaigns:
        rows = [_cells(f"  {label}", row, group) for label, row, group in _rows(c)]
        notes = [f"  {lift_sentence(c.row)}"]
        ab = ab_sentence(c)
        if ab:
            notes.append(f"  {ab}")
        blocks.append((f"{c.campaign_id}" + (f"  ({c.channel})" if c.channel else ""), rows, notes))
    every = [list(_HEAD)] + [r for _, rows, _ in blocks for r in rows]
    widths = [max(len(r[i]) for r in every) for i in range(len(_HEAD))]

    def line(cells: list[str]) -> str:
        out = [(cell.ljust if i in _LEFT else cell.rjust)(widths[i]) for i, cell in enumerate(cells)]
        return "  ".join(out).rstrip()

    out = [line(list(_HEAD))]
    for title, rows, notes in blocks:
        out += ["", title, *(line(r) for r in rows), *notes]
    out += ["", f"rate: converted sends / sends ({_CONF} Wilson interval); held out: the holdout's decisions, "
                "its conversions and rate; lift: rate / holdout rate - 1 (Katz log interval)"]
    return "\n".join(out) + "\n"


# -- JSON --------------------------------------------------------------------------------
def to_json(report: Report) -> bytes:
    return orjson.dumps(report.record(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def skipped_lines(report: Report) -> list[str]:
    """The stderr summary of what could not be counted: 'N records skipped: reason (...)'."""
    out = []
    for kind, st in report.inputs.items():
        for reason, (count, first) in sorted(st.skipped.items()):
            where = f"{st.source}: " if st.source else f"{kind}: "
            out.append(f"{count} {'record' if count == 1 else 'records'} skipped: {where}{reason} (first: {first})")
    if report.unmatched.get("message"):
        n = report.unmatched["message"]
        out.append(f"{n} conversion{'s' if n != 1 else ''} name a message not in the messages input: counted in "
                   "conversions and revenue, not in the rates")
    if report.unmatched.get("holdout"):
        n = report.unmatched["holdout"]
        out.append(f"{n} holdout conversion{'s' if n != 1 else ''} without a held_out decision before them in the "
                   "decisions input: counted in conversions and revenue, not in the rates")
    return out


# -- HTML --------------------------------------------------------------------------------
_BLUE, _GREEN, _GREY, _RED = "#2b6cb0", "#2f855a", "#a0aec0", "#c53030"
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1a202c;
margin:0;background:#f7fafc}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:0 0 6px}h2 small{color:#718096;font-weight:normal}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:18px 20px;margin:18px 0}
.verdict{margin:2px 0;font-weight:600}.verdict.good{color:#2f855a}.verdict.bad{color:#c53030}
.muted{color:#718096}.charts{display:flex;flex-wrap:wrap;gap:18px}figure{margin:10px 0}
figcaption{font-weight:600;margin-bottom:4px}
table{border-collapse:collapse;margin-top:12px;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;border-bottom:1px solid #edf2f7;text-align:right;white-space:nowrap}
th{background:#edf2f7}td:first-child,th:first-child{text-align:left}td.sub{padding-left:22px}
.legend span{display:inline-block;width:12px;height:12px;border-radius:2px;margin:0 4px -1px 10px}
footer{font-size:13px;color:#4a5568}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _bar_chart(items: list[tuple[str, Interval | None, str, str]], lift: bool = False) -> str:
    """Horizontal bars with interval whiskers. items: (label, interval, colour, note when empty)."""
    label_w, plot_w, value_w, row_h, top = 170, 330, 250, 28, 8
    width = label_w + plot_w + value_w
    height = top * 2 + row_h * len(items) + (16 if lift else 0)
    vals = [x for _, iv, _, _ in items if iv is not None for x in (iv.value, iv.low, iv.high) if x is not None]
    if lift:
        lo, hi = min([0.0, *vals]), max([0.0, *vals])
        hi = min(hi, max(2.0, 3 * max([abs(iv.value) for _, iv, _, _ in items if iv and iv.value] or [0.0])))
        lo = max(lo, -1.0)
        if hi - lo < 0.2:
            hi = lo + 0.2
    else:
        lo, hi = 0.0, max(vals or [0.0]) * 1.1 or 0.01

    def x(v: float) -> float:
        return label_w + (min(max(v, lo), hi) - lo) / (hi - lo) * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" font-size="13" font-family="inherit">']
    zero = x(0.0)
    parts.append(f'<line x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{top + row_h * len(items) + 2}" '
                 'stroke="#4a5568" stroke-width="1"/>')
    for i, (label, iv, colour, empty) in enumerate(items):
        y = top + i * row_h
        mid = y + row_h / 2
        parts.append(f'<text x="{label_w - 8}" y="{mid + 4:.1f}" text-anchor="end">{_e(label)}</text>')
        if iv is None or iv.value is None:
            parts.append(f'<text x="{label_w + 6}" y="{mid + 4:.1f}" fill="#718096">{_e(empty)}</text>')
            continue
        fmt = _signed if lift else _pct
        v = iv.value
        bar_colour = (_RED if v < 0 else colour) if lift else colour
        x0, x1 = sorted((zero, x(v)))
        tip = f"{label}: {fmt(v)}" + (f", {_CONF} interval {fmt(iv.low)} to {fmt(iv.high)}"
                                      if iv.low is not None and iv.high is not None else "")
        parts.append(f'<g><title>{_e(tip)}</title><rect x="{x0:.1f}" y="{y + 6}" width="{max(x1 - x0, 1):.1f}" '
                     f'height="{row_h - 12}" rx="2" fill="{bar_colour}"/>')
        if iv.low is not None and iv.high is not None:
            wl, wh = x(iv.low), x(iv.high)
            parts.append(f'<line x1="{wl:.1f}" y1="{mid:.1f}" x2="{wh:.1f}" y2="{mid:.1f}" stroke="#1a202c" '
                         'stroke-width="1.5"/>')
            for wx, real in ((wl, iv.low), (wh, iv.high)):
                if lo <= real <= hi:
                    parts.append(f'<line x1="{wx:.1f}" y1="{mid - 6:.1f}" x2="{wx:.1f}" y2="{mid + 6:.1f}" '
                                 'stroke="#1a202c" stroke-width="1.5"/>')
                else:  # beyond the axis: an arrow head says the interval goes on
                    d = 6 if real > hi else -6
                    parts.append(f'<path d="M{wx - d:.1f},{mid - 5:.1f} L{wx:.1f},{mid:.1f} L{wx - d:.1f},'
                                 f'{mid + 5:.1f}" fill="none" stroke="#1a202c" stroke-width="1.5"/>')
        text = fmt(v) + (f"  [{fmt(iv.low)}, {fmt(iv.high)}]" if iv.low is not None and iv.high is not None else "")
        parts.append(f'<text x="{label_w + plot_w + 8}" y="{mid + 4:.1f}">{_e(text)}</text></g>')
    if lift:
        axis_y = top + row_h * len(items) + 14
        anchor = "end" if zero > label_w + plot_w * 0.75 else "middle"
        parts.append(f'<text x="{zero:.1f}" y="{axis_y}" text-anchor="{anchor}" fill="#718096">0 (same as '
                     'holdout)</text>')
    parts.append("</svg>")
    return "".join(parts)


def _figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{_e(caption)}</figcaption>{svg}</figure>"


def _html_table(c: CampaignReport) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in _HEAD)
    body = []
    for label, row, group in _rows(c):
        cells = _cells(label.strip(), row, group)
        sub = ' class="sub"' if not group or label.startswith("  ") else ""
        body.append("<tr>" + f"<td{sub}>{_e(cells[0])}</td>" + "".join(f"<td>{_e(x)}</td>" for x in cells[1:])
                    + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _campaign_html(c: CampaignReport) -> str:
    winner = c.ab.winner if c.ab else None
    out = [f'<section id="{_e(c.campaign_id)}"><h2>{_e(c.campaign_id)}'
           + (f" <small>{_e(c.channel)}</small>" if c.channel else "") + "</h2>"]
    lift_text = lift_sentence(c.row)
    cls = ("good" if c.row.lift and c.row.lift.low is not None and c.row.lift.low > 0 else
           "bad" if c.row.lift and c.row.lift.high is not None and c.row.lift.high < 0 else "")
    out.append(f'<p class="verdict {cls}">{_e(lift_text[0].upper() + lift_text[1:])}</p>')
    ab = ab_sentence(c)
    if ab:
        out.append(f'<p class="verdict {"good" if winner else ""}">{_e(ab)}</p>')
    rate_items = [("all sent", c.row.rate, _BLUE, "no sends")]
    lift_items = [("all sent", c.row.lift, _BLUE, "n/a: no holdout conversion" if c.row.holdout else "no holdout")]
    if _show_variants(c.variants):
        for v, r in c.variants:
            colour = _GREEN if v is not None and v == winner else _BLUE
            rate_items.append((f"variant {_variant(v)}", r.rate, colour, "no sends"))
            lift_items.append((f"variant {_variant(v)}", r.lift, colour, "n/a"))
    if c.row.holdout is not None:
        rate_items.append(("holdout", c.row.holdout_rate, _GREY, "no held-out contact"))
    charts = [_figure("Conversion rate (whiskers: 95% interval)", _bar_chart(rate_items))]
    if c.row.holdout is not None:
        charts.append(_figure("Lift over holdout", _bar_chart(lift_items, lift=True)))
    out.append(f'<div class="charts">{"".join(charts)}</div>')
    if c.steps:
        step_rates, step_lifts = [], []
        for s in c.steps:
            step_rates.append((f"{s.step_id}", s.row.rate, _BLUE, "no sends"))
            if s.row.holdout is not None:
                step_rates.append((f"{s.step_id} holdout", s.row.holdout_rate, _GREY, "no held-out contact"))
            step_lifts.append((s.step_id, s.row.lift, _BLUE, "n/a"))
        steps = [_figure("Conversion rate by step", _bar_chart(step_rates))]
        if any(s.row.holdout is not None for s in c.steps):
            steps.append(_figure("Lift over holdout by step", _bar_chart(step_lifts, lift=True)))
        out.append(f'<div class="charts">{"".join(steps)}</div>')
    out.append(_html_table(c))
    out.append("</section>")
    return "".join(out)


def _total(report: Report) -> tuple[int, int, dict]:
    total = Counts()
    for c in report.campaigns:
        total.add(c.row.counts)
    return total.sent, total.conversions, total.revenue


def to_html(report: Report, title: str = "espresso report: did the retargeting work?") -> str:
    sent, conversions, revenue = _total(report)
    lead = (f"{len(report.campaigns)} campaign{'s' if len(report.campaigns) != 1 else ''}, {_count(sent)} "
            f"messages sent, {_count(conversions)} attributed conversions"
            + (f", revenue {_money(revenue)}" if revenue else "") + ".")
    legend = ('<p class="legend muted">Bars: conversion rate, the share of messages sent that led to an order '
              f'(last touch); whiskers: {_CONF} interval (Wilson). <span style="background:{_BLUE}"></span>sent'
              f'<span style="background:{_GREEN}"></span>A/B winner<span style="background:{_GREY}"></span>holdout '
              '(contacts kept from the campaign on purpose). Lift: how much more the people who got the message '
              'converted than the holdout (rate / holdout rate - 1; interval: Katz log method). A variant wins '
              f'only when the chi-square test gives p &lt; {ALPHA} and every variant has at least '
              f'{report.min_sends} sends.</p>')
    body = [f"<h1>{_e(title.split(': ', 1)[-1].capitalize())}</h1>", f"<p>{_e(lead)}</p>", legend]
    if not report.campaigns:
        body.append("<section><p>No campaign in the input: no released message, held-out decision or "
                    "conversion.</p></section>")
    body += [_campaign_html(c) for c in report.campaigns]
    notes = [f"{k}: {_e(st.source or k)}: {st.records} records, {st.skipped_total} skipped, {st.duplicates} "
             "duplicates" for k, st in report.inputs.items()]
    notes += [_e(line) for line in skipped_lines(report)]
    body.append("<footer><p>" + "<br>".join(notes) + "</p></footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
            + "".join(body) + "</main></body></html>\n")
