"""Self-contained HTML pages with inline SVG charts: no JavaScript, no network, no plotting library.

matplotlib is not a dependency of the worker, and a report that must open anywhere (an e-mail
attachment, a CI artefact) is better off with plain SVG: a few lines and bars are all it needs.
The output depends only on the numbers given, so a deterministic report renders to the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 300, 56, 190, 16, 46

Point = tuple[float, float]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def line_chart(
    series: Mapping[str, Sequence[Point]],
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    diagonal: bool = False,
    markers: bool = False,
) -> str:
    """Lines (one per series) on linear axes; a legend on the right."""
    points = [p for values in series.values() for p in values]
    if not points:
        return "<p><em>no data to plot</em></p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = x_range or (min(xs), max(xs))
    y0, y1 = y_range or (min(0.0, min(ys)), max(ys))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return PAD_T + plot_h - (y - y0) / (y1 - y0) * plot_h

    parts = [_axes(x0, x1, y0, y1, sx, sy, x_label, y_label)]
    if diagonal:
        parts.append(
            f'<line x1="{sx(x0):.1f}" y1="{sy(y0):.1f}" x2="{sx(x1):.1f}" y2="{sy(y1):.1f}" '
            'stroke="#999" stroke-dasharray="4 3"/>'
        )
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        if markers:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>' for x, y in values]
        parts.append(_legend(i, name, colour))
    return _svg(parts)


def bar_chart(groups: Sequence[str], series: dict[str, Sequence[float | None]], y_label: str) -> str:
    """Grouped bars, values in [0, 1] (shares); a missing value leaves a gap."""
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    y0, y1 = 0.0, 1.0

    def sy(y: float) -> float:
        return PAD_T + plot_h - (y - y0) / (y1 - y0) * plot_h

    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    parts = [_axes(0, 1, y0, y1, lambda x: PAD_L + x * plot_w, sy, "", y_label, x_ticks=False)]
    for g, group in enumerate(groups):
        label_x = PAD_L + (g + 0.5) * group_w
        words = group.replace("_", " ").lower().split()
        half = (len(words) + 1) // 2  # two lines, so long type names do not run into each other
        for line, text in enumerate((" ".join(words[:half]), " ".join(words[half:]))):
            parts.append(
                f'<text x="{label_x:.1f}" y="{H - PAD_B + 13 + 11 * line}" font-size="9" '
                f'text-anchor="middle">{escape(text)}</text>'
            )
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        for g, value in enumerate(values):
            if value is None:
                continue
            x = PAD_L + g * group_w + group_w * 0.1 + i * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{sy(value):.1f}" width="{bar_w:.1f}" height="{sy(0) - sy(value):.1f}" '
                f'fill="{colour}"><title>{escape(name)}: {_fmt(value)}</title></rect>'
            )
        parts.append(_legend(i, name, colour))
    return _svg(parts)


def _axes(
    x0: float,
    x1: float,
    y0: float,
    y1: float,
    sx: Any,
    sy: Any,
    x_label: str,
    y_label: str,
    x_ticks: bool = True,
) -> str:
    bottom, left = H - PAD_B, PAD_L
    out = [
        f'<line x1="{left}" y1="{PAD_T}" x2="{left}" y2="{bottom}" stroke="#333"/>',
        f'<line x1="{left}" y1="{bottom}" x2="{W - PAD_R}" y2="{bottom}" stroke="#333"/>',
    ]
    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        out.append(
            f'<text x="{left - 4}" y="{sy(y) + 3:.1f}" font-size="9" text-anchor="end">{_fmt(y)}</text>'
        )
        out.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{W - PAD_R}" y2="{sy(y):.1f}" stroke="#eee"/>')
        if x_ticks:
            x = x0 + (x1 - x0) * k / 4
            if float(x0).is_integer() and float(x1).is_integer() and x1 - x0 >= 4:
                x = round(x)  # days, counts: whole ticks, not 7.75
            out.append(
                f'<text x="{sx(x):.1f}" y="{bottom + 12}" font-size="9" text-anchor="middle">{_fmt(x)}</text>'
            )
    out.append(
        f'<text x="{(left + W - PAD_R) / 2:.0f}" y="{H - 6}" font-size="10" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text x="12" y="{(PAD_T + bottom) / 2:.0f}" font-size="10" text-anchor="middle" '
        f'transform="rotate(-90 12 {(PAD_T + bottom) / 2:.0f})">{escape(y_label)}</text>'
    )
    return "".join(out)


def _legend(i: int, name: str, colour: str) -> str:
    x, y = W - PAD_R + 10, PAD_T + 12 + 14 * i
    return (
        f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{colour}"/>'
        f'<text x="{x + 14}" y="{y + 1}" font-size="10">{escape(name)}</text>'
    )


def _svg(parts: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        f'font-family="sans-serif">{"".join(parts)}</svg>'
    )


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "PASS" if value else "FAIL"
    if isinstance(value, float):
        return _fmt(value)
    return str(value)


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole HTML document: a title, then (heading, html) sections."""
    style = (
        "body{font-family:sans-serif;max-width:980px;margin:24px auto;color:#222}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}"
        "h2{margin-top:28px;font-size:18px}p{font-size:14px}"
    )
    body = "".join(f"<h2>{escape(h)}</h2>{content}" if h else content for h, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{style}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def budget_usage_section(budgets: Mapping[str, Mapping[str, Any]]) -> str:
    """Per budget: the alerts each day against its cap (a backtest measures demand; the live worker
    defers what is over the cap, highest expected value first)."""
    rows = [
        [
            name,
            ", ".join(u["types"]),
            ", ".join(u["tiers"]) if u["tiers"] else "all",
            u["max_per_day"],
            u["mean_per_day"],
            u["p90_per_day"],
            u["busiest_day"],
            u["days_over"],
            u["over_budget"],
        ]
        for name, u in budgets.items()
    ]
    header = [
        "budget",
        "types",
        "tiers",
        "max / day",
        "mean / day",
        "p90 / day",
        "busiest day",
        "days over",
        "over budget",
    ]
    series: dict[str, list[Point]] = {}
    for name, u in budgets.items():
        series[f"{name} (alerts)"] = [(float(d), float(c)) for d, c in enumerate(u["per_day"])]
        series[f"{name} (cap)"] = [
            (0.0, float(u["max_per_day"])),
            (float(len(u["per_day"]) - 1), float(u["max_per_day"])),
        ]
    return table(header, rows) + line_chart(series, "day", "alerts per day", markers=True)


def backtest_page(report: dict[str, Any]) -> str:
    """report.html: the tables of report.json and its plots."""
    by_type = report["alerts"]["by_type"]
    names = list(by_type)
    with_outcomes = "targets" in report
    header = ["alert type", "alerts", "customers", "alerts / 1k customers / week"]
    if with_outcomes:
        header += ["precision", "recall", "false positive rate", "median lead time (days)"]
    rows = []
    for name, s in by_type.items():
        row = [name, s["alerts"], s["customers_alerted"], s["alerts_per_1000_customers_per_week"]]
        if with_outcomes:
            row += [s["precision"], s["recall"], s["false_positive_rate"], s["median_lead_time_days"]]
        rows.append(row)
    period = report["period"]
    sections: list[tuple[str, str]] = [
        (
            "",
            (
                f"<p>Events <code>{escape(report['events_file'])}</code>, {report['events']['read']:,} read, "
                f"{report['customers']:,} customers, {period['start']} to {period['end']}; scoring: "
                f"{escape(report['scoring'])} (model {escape(str(report['model_version']))}); batches of "
                f"{report['batch_window_hours']:g} h of event time.</p>"
            ),
        )
    ]
    if with_outcomes:
        targets = [[t["metric"], t["target"], t["value"], t["pass"]] for t in report["targets"]]
        sections.append(("Seed targets", table(["metric", "target", "measured", "result"], targets)))
    sections.append(("Alerts by type", table(header, rows)))
    if report.get("budgets"):
        sections.append(("Alerts per day against each budget", budget_usage_section(report["budgets"])))
    weekly = report["weekly_alerts"]
    sections.append(
        (
            "Alerts per week of event time",
            line_chart(
                {n: [(float(w), float(c)) for w, c in enumerate(weekly[n])] for n in names if any(weekly[n])},
                "week",
                "alerts",
                markers=True,
            ),
        )
    )
    if not with_outcomes:
        sections.append(("Outcomes", f"<p>{escape(report['outcomes'])}</p>"))
        return page("Backtest report", sections)
    sections.append(
        (
            "Precision, recall and false positive rate",
            bar_chart(
                names,
                {
                    "precision": [by_type[n]["precision"] for n in names],
                    "recall": [by_type[n]["recall"] for n in names],
                    "false positive rate": [by_type[n]["false_positive_rate"] for n in names],
                },
                "share",
            ),
        )
    )
    model = report["model"]
    roc = {
        f"{d} days (AUC {model[f'churn_{d}d']['auc_roc']})": [
            (float(x), float(y)) for x, y in model[f"churn_{d}d"]["roc"]
        ]
        for d in (14, 30)
    }
    sections.append(
        (
            "Churn ROC curves",
            line_chart(roc, "false positive rate", "true positive rate", (0, 1), (0, 1), diagonal=True),
        )
    )
    cal = model["calibration_30d"]
    reliability = {"30-day churn": [(b["predicted"], b["observed"]) for b in cal["bins"]]}
    sections.append(
        (
            f"Calibration, 30 days (Brier {cal['brier']}, ECE {cal['ece']})",
            line_chart(
                reliability,
                "mean predicted probability",
                "observed churn rate",
                (0, 1),
                (0, 1),
                diagonal=True,
                markers=True,
            ),
        )
    )
    health = model.get("health_mae")
    sections.append(
        (
            "Health score",
            f"<p>MAE {health}</p>"
            if health is not None
            else f"<p>{escape(model.get('health_mae_note', 'n/a'))}</p>",
        )
    )
    sections.append(("Definitions", table(["term", "meaning"], sorted(report["definitions"].items()))))
    return page("Backtest report", sections)
