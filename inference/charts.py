"""Charts of usage drawn on the server as inline SVG: no script, no chart library, no CDN.

Each function turns a usage series into bars and lines in a fixed view box that scales
with the page (`Chart.svg`, placed by `templates/inference/_chart.html`); every bar and
point carries its day and value as a tooltip, and the page shows the same numbers in
tables. The markup is built here rather than in a template loop: a year is over two
thousand shapes, which Django's template engine would take most of a second to render.
"""

from dataclasses import dataclass, field

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 480
HEIGHT = 220
LEFT = 52  # room for the value axis labels
BOTTOM = 24  # room for the day labels
TOP = 10
RIGHT = 6


@dataclass
class Chart:
    """What the chart template draws."""

    title: str
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[dict] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)
    ticks: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    legend: list[dict] = field(default_factory=list)
    empty: bool = False

    @property
    def svg(self) -> SafeString:
        """The chart as an inline SVG element (every text escaped)."""
        parts = [
            f'<svg viewBox="0 0 {self.width} {self.height}" role="img" '
            f'aria-label="{escape(self.title)}">'
        ]
        for tick in self.ticks:
            parts.append(
                f'<line class="grid" x1="{LEFT}" x2="{self.width - RIGHT}" y1="{tick["y"]}" '
                f'y2="{tick["y"]}"/><text class="tick" x="{LEFT - 4}" y="{tick["y"]}" '
                f'text-anchor="end" dominant-baseline="middle">{escape(tick["text"])}</text>'
            )
        for bar in self.bars:
            parts.append(
                f'<rect class="{bar["css"]}" x="{bar["x"]}" y="{bar["y"]}" width="{bar["w"]}" '
                f'height="{bar["h"]}"><title>{escape(bar["title"])}</title></rect>'
            )
        for line in self.lines:
            parts.append(f'<polyline class="{line["css"]}" points="{line["points"]}" fill="none"/>')
            for dot in line["dots"]:
                parts.append(
                    f'<circle class="{line["css"]}" cx="{dot["x"]}" cy="{dot["y"]}" r="2.5">'
                    f"<title>{escape(dot['title'])}</title></circle>"
                )
        for label in self.labels:
            parts.append(
                f'<text class="tick" x="{label["x"]}" y="{self.height - 4}" '
                f'text-anchor="{label["anchor"]}">{escape(label["text"])}</text>'
            )
        parts.append("</svg>")
        return mark_safe("".join(parts))  # noqa: S308 -- every text above is escaped.


def _scale(maximum: float) -> float:
    """A round upper bound for the value axis (1, 2 or 5 times a power of ten)."""
    if maximum <= 0:
        return 1
    step = 1.0
    while step * 10 <= maximum:
        step *= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= maximum:
            return step * factor
    return step * 10


def _frame(chart: Chart, series: list[dict], top: float, unit: str) -> tuple[float, float]:
    """Axis ticks and day labels; returns the plot's width per day and its height."""
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    for fraction in (0, 0.5, 1):
        value = top * fraction
        text = f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:,.1f}"
        chart.ticks.append(
            {"y": round(TOP + plot_height * (1 - fraction), 1), "text": f"{text}{unit}"}
        )
    slot = plot_width / max(len(series), 1)
    count = len(series)
    shown = {0, count - 1, count // 2} if count > 2 else set(range(count))
    for index in sorted(shown):
        # The first and last labels line up with the plot's edges, so neither is cut off.
        anchor = "middle"
        if count > 2 and index == 0:
            anchor = "start"
        elif count > 2 and index == count - 1:
            anchor = "end"
        x = {"start": LEFT, "end": LEFT + plot_width}.get(anchor, LEFT + slot * (index + 0.5))
        chart.labels.append(
            {
                "x": round(x, 1),
                "anchor": anchor,
                "text": series[index]["day"][5:] if count > 1 else series[index]["day"],
            }
        )
    return slot, plot_height


def bars(title: str, series: list[dict], layers: list[tuple[str, str, str]]) -> Chart:
    """Bars per day, one layer drawn over the other: [(key, label, css class), ...]; the
    first layer is the tallest (requests, then errors over them)."""
    chart = Chart(title=title, legend=[{"label": label, "css": css} for _, label, css in layers])
    top = _scale(max((row[layers[0][0]] or 0 for row in series), default=0))
    chart.empty = not any(row[layers[0][0]] for row in series)
    slot, plot_height = _frame(chart, series, top, "")
    width = max(slot * 0.8, 1)
    for index, row in enumerate(series):
        for key, label, css in layers:
            value = row[key] or 0
            height = plot_height * value / top
            chart.bars.append(
                {
                    "x": round(LEFT + slot * index + (slot - width) / 2, 1),
                    "y": round(TOP + plot_height - height, 1),
                    "w": round(width, 1),
                    "h": round(height, 1),
                    "css": css,
                    "title": f"{row['day']}: {value:,} {label.lower()}",
                }
            )
    return chart


def stacked(title: str, series: list[dict], layers: list[tuple[str, str, str]]) -> Chart:
    """Bars per day with the layers stacked (prompt tokens below completion tokens)."""
    chart = Chart(title=title, legend=[{"label": label, "css": css} for _, label, css in layers])
    totals = [sum(row[key] or 0 for key, _, _ in layers) for row in series]
    top = _scale(max(totals, default=0))
    chart.empty = not any(totals)
    slot, plot_height = _frame(chart, series, top, "")
    width = max(slot * 0.8, 1)
    for index, row in enumerate(series):
        base = 0.0
        for key, label, css in layers:
            value = row[key] or 0
            height = plot_height * value / top
            chart.bars.append(
                {
                    "x": round(LEFT + slot * index + (slot - width) / 2, 1),
                    "y": round(TOP + plot_height - base - height, 1),
                    "w": round(width, 1),
                    "h": round(height, 1),
                    "css": css,
                    "title": f"{row['day']}: {value:,} {label.lower()}",
                }
            )
            base += height
    return chart


def lines(title: str, series: list[dict], layers: list[tuple[str, str, str]], unit: str) -> Chart:
    """One line per layer over the days; days without a value break no line, they are
    skipped (a day without requests has no latency)."""
    chart = Chart(title=title, legend=[{"label": label, "css": css} for _, label, css in layers])
    values = [row[key] for row in series for key, _, _ in layers if row[key] is not None]
    top = _scale(max(values, default=0))
    chart.empty = not values
    slot, plot_height = _frame(chart, series, top, unit)
    for key, label, css in layers:
        points = []
        dots = []
        for index, row in enumerate(series):
            if row[key] is None:
                continue
            x = round(LEFT + slot * (index + 0.5), 1)
            y = round(TOP + plot_height * (1 - row[key] / top), 1)
            points.append(f"{x},{y}")
            dots.append({"x": x, "y": y, "title": f"{row['day']}: {label} {row[key]:,}{unit}"})
        chart.lines.append({"points": " ".join(points), "dots": dots, "css": css})
    return chart


def usage_charts(series: list[dict]) -> list[Chart]:
    """The usage page's charts over time."""
    return [
        bars(
            "Requests and errors per day",
            series,
            [("requests", "Requests", "c-requests"), ("errors", "Errors", "c-errors")],
        ),
        stacked(
            "Tokens per day",
            series,
            [
                ("prompt_tokens", "Prompt tokens", "c-prompt"),
                ("completion_tokens", "Completion tokens", "c-completion"),
            ],
        ),
        lines(
            "Latency per day",
            series,
            [("p50_latency_ms", "p50", "c-p50"), ("p95_latency_ms", "p95", "c-p95")],
            " ms",
        ),
    ]


def shares(rows: list[dict], key: str = "requests") -> list[dict]:
    """Each row with `share`, its percentage of the largest row, for inline bar cells."""
    top = max((row[key] for row in rows), default=0) or 1
    return [{**row, "share": round(100 * row[key] / top, 1)} for row in rows]
