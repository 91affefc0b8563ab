"""The monitoring page: one self-contained HTML file (inline SVG from jobs/html.py, no network)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np

from jobs import html
from jobs.monitoring.calibration import HeadCalibration
from jobs.monitoring.drift import DriftReport
from jobs.monitoring.skew import SkewReport
from model.drift import shares

TOP_FEATURES = 6


def _day_x(days: Sequence[str]) -> dict[str, float]:
    return {day: float(i) for i, day in enumerate(days)}


def drift_section(report: DriftReport | None, note: str) -> str:
    if report is None or not report.days:
        return f"<p>{escape(note or 'no served rows in the period')}</p>"
    days = [d.day for d in report.days]
    x = _day_x(days)
    worst: dict[str, float] = {}
    for d in report.days:
        for name, value in d.features.items():
            worst[name] = max(worst.get(name, 0.0), value)
    top = [name for name, _ in sorted(worst.items(), key=lambda item: (-item[1], item[0]))[:TOP_FEATURES]]
    threshold = [(x[days[0]], report.threshold), (x[days[-1]], report.threshold)]
    features = {name: [(x[d.day], d.features.get(name, 0.0)) for d in report.days] for name in top}
    heads = {
        head: [(x[d.day], d.heads[head]) for d in report.days if head in d.heads]
        for head in report.days[0].heads
    }
    axis = f"day ({days[0]} = 0 .. {days[-1]} = {len(days) - 1})"
    rows = [
        [
            d.day,
            d.rows,
            d.max_psi,
            d.max_feature,
            d.max_head,
            ", ".join(f"{n} {v:.3f}" for n, v in d.top_features(3)),
        ]
        for d in report.days
    ]
    return (
        f"<p>Population stability index of each day's served sample against the bundle's training "
        f"distribution; the line named threshold is the alarm threshold ({report.threshold:g}). Days under "
        f"{report.min_rows} rows are not published.</p>"
        + html.table(["day", "rows", "max PSI", "max feature", "max head", "largest features"], rows)
        + "<h3>Features with the largest PSI, per day</h3>"
        + html.line_chart({**features, "threshold": threshold}, axis, "PSI", markers=True)
        + "<h3>Score distribution drift per head, per day</h3>"
        + html.line_chart({**heads, "threshold": threshold}, axis, "PSI", markers=True)
    )


def scores_section(
    report: DriftReport | None, distribution: dict[str, Any] | None, served: dict[str, list[float]]
) -> str:
    """Per head, the share of served scores in each training decile bin next to training's."""
    if not distribution or not served:
        return "<p>no training distribution or no served rows</p>"
    parts = []
    for head, values in served.items():
        ref = distribution.get("heads", {}).get(head)
        if ref is None or not values:
            continue
        live = shares(np.asarray(values), ref["edges"]).tolist()
        groups = [f"bin {i + 1}" for i in range(len(ref["shares"]))]
        parts.append(f"<h3>{escape(head)}</h3>")
        parts.append(html.bar_chart(groups, {"training": ref["shares"], "served": live}, "share of rows"))
    return "<p>Share of rows per training-decile bin (equal shares = the training population).</p>" + "".join(
        parts
    )


def calibration_section(heads: Sequence[HeadCalibration] | None, note: str) -> str:
    if not heads:
        return f"<p>{escape(note or 'no calibration: no archive given')}</p>"
    parts = [
        "<p>Predicted against observed churn per probability bin, over the sampled rows whose horizon "
        "has passed (a churn in the archive within it: 1; none: 0). The diagonal is perfect calibration.</p>"
    ]
    for h in heads:
        points = [(b["predicted"], b["observed"]) for b in h.bins if b["rows"]]
        ece = "n/a" if h.ece is None else f"{h.ece:.3f}"
        parts.append(
            f"<h3>{escape(h.head)}: {h.settled} settled rows, {h.unsettled} unsettled, ECE {ece}</h3>"
        )
        if not h.settled:
            parts.append("<p>No row's horizon has passed yet: nothing to compare.</p>")
            continue
        parts.append(
            html.table(
                ["bin", "rows", "mean predicted", "observed churn"],
                [
                    [f"{b['low']:.1f}-{b['high']:.1f}", b["rows"], b["predicted"], b["observed"]]
                    for b in h.bins
                ],
            )
        )
        if points:
            parts.append(
                html.line_chart(
                    {"served sample": points},
                    "mean predicted",
                    "observed",
                    x_range=(0, 1),
                    y_range=(0, 1),
                    diagonal=True,
                    markers=True,
                )
            )
    return "".join(parts)


def skew_section(report: SkewReport | None, note: str) -> str:
    if report is None:
        return f"<p>{escape(note or 'no skew check: no archive given')}</p>"
    verdict = "FAIL" if report.failed else "OK"
    head = (
        f"<p>{report.rows} served rows recomputed offline from the archive; {verdict} "
        f"(a feature fails above a share of {report.max_share:g}).</p>"
    )
    skewed = report.skewed()
    if not skewed:
        return head + "<p>No feature differs beyond float tolerance.</p>"
    rows = [
        [
            f.name,
            f.differing,
            report.share(f),
            f.max_diff,
            "; ".join(f"{e['customer_id']} {e['served']:g} vs {e['offline']:g}" for e in f.examples[:2]),
        ]
        for f in skewed[:25]
    ]
    return head + html.table(
        ["feature", "rows differing", "share", "max diff", "examples (served vs offline)"], rows
    )


def monitor_page(
    title: str,
    drift: DriftReport | None,
    distribution: dict[str, Any] | None,
    served_scores: dict[str, list[float]],
    calibration: Sequence[HeadCalibration] | None,
    skew: SkewReport | None,
    notes: dict[str, str],
) -> str:
    return html.page(
        title,
        [
            ("", f"<p>{escape(notes.get('summary', ''))}</p>"),
            ("Drift per feature and head", drift_section(drift, notes.get("drift", ""))),
            ("Score distributions", scores_section(drift, distribution, served_scores)),
            ("Calibration", calibration_section(calibration, notes.get("calibration", ""))),
            ("Training/serving skew", skew_section(skew, notes.get("skew", ""))),
        ],
    )
