"""Server-rendered SVG charts (issue 16 item 6): plain strings, no JavaScript, no external file,
so a page works offline and under the status page's ``default-src 'none'`` policy.

Input is ``ChartService.view()``'s dict (also in ``status.json`` and the admin dashboard's JSON).
Every drawn datum carries its values as ``data-*`` attributes (and a ``<title>`` tooltip), so a
test or a reader can check the picture against the records it was drawn from.
"""

from __future__ import annotations

import datetime as dt
import html
import zlib
from typing import Any, Sequence

WIDTH = 1000
LEFT = 70  # device label column
RIGHT = 130  # the per-device figures (held, mean utilization)
ROW = 30
GAP = 6
AXIS = 22
PALETTE = ("#60a5fa", "#f59e0b", "#34d399", "#f472b6", "#a78bfa", "#f87171", "#2dd4bf", "#facc15",
           "#fb923c", "#818cf8")
HIDDEN_COLOR = "#f59e0b"
UTIL_COLOR = "#1e3a8a"

CSS = """
.chart{display:block;max-width:100%;height:auto;background:#fff;border:1px solid #ddd;margin:.3em 0}
.legend{font-size:.9em;margin:.2em 0 .8em} .legend span.sw{display:inline-block;width:.9em;height:.9em;
vertical-align:middle;margin:0 .3em 0 .8em;border-radius:2px}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _n(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def color_of(user: str, hidden: bool = False) -> str:
    """A stable colour per user name (the same on every page and refresh)."""
    if hidden:
        return HIDDEN_COLOR
    return PALETTE[zlib.crc32(user.encode()) % len(PALETTE)]


def x_of(t: float, since: float, until: float, width: float = WIDTH) -> float:
    """The x coordinate of time ``t`` on a [since, until) axis."""
    inner = width - LEFT - RIGHT
    return LEFT + (t - since) / (until - since) * inner


def _clock(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M")


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def _util_path(values: Sequence[float | None], since: float, step: float, until: float, top: float,
               h: float) -> list[str]:
    """Polyline point lists, one per run of known values (a gap where nothing was sampled)."""
    runs: list[str] = []
    pts: list[str] = []
    for i, v in enumerate(values):
        if v is None:
            if pts:
                runs.append(" ".join(pts))
            pts = []
            continue
        # a step per bucket (its start to its end), so a lone sampled bucket still shows
        x0, x1 = x_of(since + i * step, since, until), x_of(since + (i + 1) * step, since, until)
        y = top + h - max(0.0, min(100.0, v)) / 100.0 * h
        pts += [f"{_n(x0)},{_n(y)}", f"{_n(x1)},{_n(y)}"]
    if pts:
        runs.append(" ".join(pts))
    return runs


def device_timeline(charts: dict[str, Any]) -> str:
    """One row per device over the window: allocation bars coloured by holder, the sampled GPU
    utilization as a line across the row (bottom 0 %, top 100 %), hour ticks below."""
    since, until, step = charts["since"], charts["until"], charts["step"]
    devs = charts["devices"]
    hidden = charts.get("names_hidden", False)
    height = max(1, len(devs)) * (ROW + GAP) + AXIS + GAP
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart-devices" role="img" '
           f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" data-since="{since:.0f}" '
           f'data-until="{until:.0f}" data-step="{step:.0f}" font-family="system-ui,sans-serif" font-size="12">',
           "<title>GPU allocation and utilization, last 24 hours</title>"]
    if not devs:
        out.append(f'<text x="{LEFT}" y="{ROW / 2 + 4}" fill="#777">no GPUs on this host</text>')
    for i, d in enumerate(devs):
        top = GAP + i * (ROW + GAP)
        util = d["utilization"]
        known = [v for v in util if v is not None]
        mean = sum(known) / len(known) if known else None
        held = d["held"]
        held_pct = 100.0 * sum(held) / len(held) if held else 0.0
        out.append(f'<g class="device" data-uuid="{_e(d["uuid"])}" data-label="{_e(d["label"])}" '
                   f'data-held-percent="{held_pct:.2f}" data-util-samples="{len(known)}"'
                   + (f' data-util-mean="{mean:.2f}"' if mean is not None else "") + ">")
        out.append(f'<text x="{LEFT - 8}" y="{top + ROW / 2 + 4}" text-anchor="end" font-weight="600">'
                   f'GPU {_e(d["label"])}</text>')
        out.append(f'<rect x="{LEFT}" y="{top}" width="{WIDTH - LEFT - RIGHT}" height="{ROW}" fill="#f1f5f9"/>')
        for a in d["allocations"]:
            x0, x1 = x_of(a["start"], since, until), x_of(a["end"], since, until)
            who = f'{a["user"]}/{a["project"]}'
            until_txt = "now" if a["open"] else _when(a["end"])
            out.append(f'<rect class="alloc" x="{_n(x0)}" y="{top + 2}" width="{_n(max(1.0, x1 - x0))}" '
                       f'height="{ROW - 4}" rx="2" fill="{color_of(a["user"], hidden)}" fill-opacity="0.75" '
                       f'data-device="{_e(a["device"])}" data-user="{_e(a["user"])}" '
                       f'data-project="{_e(a["project"])}" data-start="{a["start"]:.3f}" '
                       f'data-end="{a["end"]:.3f}" data-open="{str(a["open"]).lower()}">'
                       f'<title>GPU {_e(d["label"])}: {_e(who)}, {_e(_when(a["start"]))} – {_e(until_txt)}'
                       f'</title></rect>')
        for pts in _util_path(util, since, step, until, top + 2, ROW - 4):
            out.append(f'<polyline class="util" points="{pts}" fill="none" stroke="{UTIL_COLOR}" '
                       'stroke-width="1.5" stroke-linejoin="round"/>')
        label = "util n/a" if mean is None else f"util {mean:.0f} %"
        out.append(f'<text x="{WIDTH - RIGHT + 8}" y="{top + ROW / 2 + 4}" fill="#475569" font-size="11">'
                   f'held {held_pct:.0f} % · {label}</text>')
        out.append("</g>")
    base = GAP + max(1, len(devs)) * (ROW + GAP)
    out.append(f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" stroke="#94a3b8"/>')
    tick = 3 * 3600.0
    t = (since // tick + 1) * tick
    while t < until - tick / 4:  # none too close to "now"
        x = x_of(t, since, until)
        out.append(f'<line x1="{_n(x)}" y1="{GAP}" x2="{_n(x)}" y2="{base + 4}" stroke="#cbd5e1" '
                   'stroke-dasharray="2,3"/>')
        out.append(f'<text x="{_n(x)}" y="{base + 16}" text-anchor="middle" fill="#475569">{_clock(t)}</text>')
        t += tick
    out.append(f'<text x="{WIDTH - RIGHT}" y="{base + 16}" text-anchor="middle" fill="#475569">now</text>')
    out.append("</svg>")
    return "".join(out)


def week_bars(charts: dict[str, Any]) -> str:
    """Horizontal bars: GPU-hours per user over the last 7 days, largest first."""
    users = charts["week"]["users"]
    hidden = charts.get("names_hidden", False)
    bar_h, label_w, value_w = 22, 150, 110
    height = max(1, len(users)) * (bar_h + GAP) + GAP
    top_v = max([u["gpu_hours"] for u in users] or [1.0]) or 1.0
    inner = WIDTH - label_w - value_w
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart-week" role="img" '
           f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
           f'data-since="{charts["week"]["since"]:.0f}" data-until="{charts["week"]["until"]:.0f}" '
           'font-family="system-ui,sans-serif" font-size="12">',
           "<title>GPU-hours per user, last 7 days</title>"]
    if not users:
        out.append(f'<text x="{label_w}" y="{bar_h / 2 + GAP + 4}" fill="#777">no GPU use this week</text>')
    for i, u in enumerate(users):
        y = GAP + i * (bar_h + GAP)
        w = max(1.0, u["gpu_hours"] / top_v * inner)
        out.append(f'<text x="{label_w - 8}" y="{y + bar_h / 2 + 4}" text-anchor="end">{_e(u["user"])}</text>')
        out.append(f'<rect class="hours" x="{label_w}" y="{y}" width="{_n(w)}" height="{bar_h}" rx="2" '
                   f'fill="{color_of(u["user"], hidden)}" data-user="{_e(u["user"])}" '
                   f'data-gpu-hours="{u["gpu_hours"]:.6f}"><title>{_e(u["user"])}: '
                   f'{u["gpu_hours"]:.2f} GPU-hours</title></rect>')
        out.append(f'<text x="{_n(label_w + w + 6)}" y="{y + bar_h / 2 + 4}" fill="#334155">'
                   f'{u["gpu_hours"]:.2f} GPU-h</text>')
    out.append("</svg>")
    return "".join(out)


def legend(charts: dict[str, Any]) -> str:
    """The holders' colours (the utilization line last)."""
    hidden = charts.get("names_hidden", False)
    users = sorted({a["user"] for d in charts["devices"] for a in d["allocations"]})
    parts = ['<div class="legend" id="chart-legend">']
    if hidden and users:
        parts.append(f'<span class="sw" style="background:{HIDDEN_COLOR}"></span>held')
    else:
        parts += [f'<span class="sw" style="background:{color_of(u)}"></span>{_e(u)}' for u in users]
    parts.append(f'<span class="sw" style="background:{UTIL_COLOR};height:.2em"></span>GPU utilization '
                 f'({charts["step"] / 60:.0f}-min means; since the daemon started)</div>')
    return "".join(parts)


def charts_html(charts: dict[str, Any] | None) -> str:
    """The page section: 24 h device timeline with its legend, then the week's GPU-hours."""
    if not charts:
        return ""
    return ("<h2>Last 24 hours</h2>" + device_timeline(charts) + legend(charts)
            + "<h2>GPU-hours per user, last 7 days</h2>" + week_bars(charts))
