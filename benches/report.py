#!/usr/bin/env python3
"""Tables (Markdown) and plots (SVG) from criterion's output. Standard library only.

    python3 benches/report.py [--criterion target/criterion] [--log /tmp/bench.log]
                              [--svg-dir benches/plots] > /tmp/tables.md

Reads target/criterion/<group>/<function>[/<value>]/new/{estimates,benchmark,sample}.json
and the `concurrent:` lines of the bench log if given, and writes BENCHMARKS.md's
tables to stdout and two plots: ns_per_event.svg and scaling.svg.

The figure per benchmark (--estimator): `best` (default), the fastest of criterion's
100 samples (time / iterations): on a shared machine other processes only ever add
time, so the least-disturbed sample is the most reproducible figure; or `slope`,
criterion's own estimate (the slope of time over iterations, else the mean).
"""

import argparse
import html
import json
import os
import re
import sys

SIZES = [8, 16, 64, 256]
OURS = ["shared_overwrite", "shared_discard", "local_overwrite", "local_discard"]
EVENT_ROWS = ["rdtsc_bare", "tsc_only", "floor", "floor_lock_cas"] + OURS + ["ctf_" + o for o in OURS]
PEER_ROWS = ["arrayqueue_force_push", "mpsc_sync_channel", "rtrb_chunk", "bbqueue_grant"]
COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]


def load(root):
    """{(group, function, value or None): (ns, low, high)}"""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                bench = json.load(f)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
        except (OSError, ValueError):
            continue
        e = est.get("slope") or est["mean"]
        best = e["point_estimate"]
        try:
            with open(os.path.join(dirpath, "sample.json")) as f:
                sample = json.load(f)
            best = min(t / i for t, i in zip(sample["times"], sample["iters"]) if i)
        except (OSError, ValueError, KeyError):
            pass
        key = (bench["group_id"], bench["function_id"], bench.get("value_str"))
        out[key] = {"slope": e["point_estimate"], "best": best}
    return out


ESTIMATOR = "best"


def ns(r, group, function, value=None):
    v = r.get((group, function, value))
    return v[ESTIMATOR] if v else None


def fmt_ns(v):
    if v is None:
        return "–"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def cell(v, floor):
    if v is None:
        return "–"
    if not floor:
        return fmt_ns(v)
    return f"{fmt_ns(v)} ({v / floor:.2f}x)"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def per_event(r):
    header = ["system"] + [f"{n} B" for n in SIZES]
    rows = []
    for name in EVENT_ROWS:
        rows.append([f"`{name}`"] + [cell(ns(r, f"event_{n}B", name),
                                          ns(r, f"event_{n}B", "floor")) for n in SIZES])
    return table(header, rows)


def peers(r):
    header = ["system"] + [f"{n} B" for n in SIZES]
    rows = []
    for name in ["floor"] + PEER_ROWS:
        rows.append([f"`{name}`"] + [cell(ns(r, f"peers_{n}B", name),
                                          ns(r, f"peers_{n}B", "floor")) for n in SIZES])
    return table(header, rows)


def ratio(r, group_kind, name, n):
    """ns / the floor of the same group."""
    g = f"{group_kind}_{n}B"
    v, f = ns(r, g, name), ns(r, g, "floor")
    return v / f if v and f else None


def targets(r):
    """(target, mode, per size: (value, goal, lower_is_better))"""
    specs = []
    for mode in ["overwrite", "discard"]:
        specs += [
            (f"local_{mode} / floor", lambda n, m=mode: ratio(r, "event", f"local_{m}", n), 1.5),
            (f"shared_{mode} / floor", lambda n, m=mode: ratio(r, "event", f"shared_{m}", n), 2.5),
        ]
        for peer, ours, goal in [
            ("arrayqueue_force_push", "shared", 1.0),
            ("mpsc_sync_channel", "shared", 1.0),
            ("bbqueue_grant", "local", 1.0),
            ("rtrb_chunk", "local", 1.5),
        ]:
            def f(n, o=f"{ours}_{mode}", p=peer):
                a, b = ratio(r, "event", o, n), ratio(r, "peers", p, n)
                return a / b if a and b else None
            specs.append((f"{ours}_{mode} / {peer}", f, goal))
    for mode in ["overwrite", "discard"]:
        specs += [
            (f"ctf_local_{mode} / floor", lambda n, m=mode: ratio(r, "event", f"ctf_local_{m}", n),
             1.5),
            (f"ctf_shared_{mode} / floor",
             lambda n, m=mode: ratio(r, "event", f"ctf_shared_{m}", n), 2.5),
        ]
    header = ["ratio (goal)"] + [f"{n} B" for n in SIZES]
    rows = []
    for name, f, goal in specs:
        cells = []
        for n in SIZES:
            v = f(n)
            if v is None:
                cells.append("–")
            elif v < goal or (goal != 1.0 and v <= goal):
                cells.append(f"{v:.2f} met")
            else:
                by = 100 * (v / goal - 1)
                cells.append(f"**{v:.2f} missed** (+{by:.1f}%)" if by < 10
                             else f"**{v:.2f} missed** (+{by:.0f}%)")
        op = "<" if goal == 1.0 else "<="
        rows.append([f"{name} ({op} {goal})"] + cells)
    return table(header, rows)


def concurrent(r, log):
    extra = {}
    if log:
        pat = re.compile(r"concurrent: concurrent_discard/(\S+): written (\d+) read (\d+) "
                         r"refused_full (\d+) \(retried\) lost_other (\d+)")
        with open(log, errors="replace") as f:
            for m in pat.finditer(f.read()):
                extra[m.group(1)] = m.groups()[1:]
    header = ["configuration", "ns/event", "M events/s", "written", "read", "full (retried)"]
    rows = []
    names = sorted({k[1] for k in r if k[0] == "concurrent_discard"},
                   key=lambda s: (int(re.sub(r"\D", "", s) or 0), s))
    for name in names:
        v = ns(r, "concurrent_discard", name)
        w = extra.get(name, ("–", "–", "–", "–"))
        rows.append([f"`{name}`", fmt_ns(v), f"{1e3 / v:.1f}", w[0], w[1], w[2]])
    return table(header, rows)


def scaling_data(r):
    """{kind: {threads: aggregate M events/s}}"""
    data = {}
    for (g, f, v), est in r.items():
        if g == "scaling_overwrite_16B" and v:
            data.setdefault(f, {})[int(v)] = int(v) * 1e3 / est[ESTIMATOR]
    return data


def scaling(r):
    data = scaling_data(r)
    header = ["writers", "threads", "ns/iteration (1 event per thread)",
              "aggregate M events/s", "speed-up vs 1 thread"]
    rows = []
    for kind in ["floor", "shared", "local"]:
        for t in sorted(data.get(kind, {})):
            rate = data[kind][t]
            one = data[kind].get(1)
            rows.append([kind, str(t), fmt_ns(ns(r, "scaling_overwrite_16B", kind, str(t))),
                         f"{rate:.1f}", f"{rate / one:.2f}x" if one else "–"])
    return table(header, rows)


def nested(r):
    header = ["flavour", "K", "µs per outer event + signal", "ns per nested event"]
    rows = []
    for flavour in ["shared", "local"]:
        base = ns(r, "nested_signal_16B", f"{flavour}_k0")
        ks = sorted(int(f.split("_k")[1]) for (g, f, _v) in r
                    if g == "nested_signal_16B" and f.startswith(flavour + "_k"))
        for k in ks:
            v = ns(r, "nested_signal_16B", f"{flavour}_k{k}")
            per = "(empty round trip)" if k == 0 else (
                f"{(v - base) / k:.1f}" if base else "–")
            rows.append([flavour, str(k), f"{v / 1e3:.3f}", per])
    return table(header, rows)


def typed_events(r):
    g = "typed_event_u64_u32"
    header = ["path", "shared", "local"]
    rows = []
    for name in ["values", "typed", "by_hand", "context4_typed", "context4_by_hand"]:
        rows.append([f"`{name}`"] + [cell(ns(r, g, f"{flavour}_{name}"),
                                          ns(r, g, f"{flavour}_values"))
                                     for flavour in ["shared", "local"]])
    return table(header, rows)


def tracing_layer(r):
    g = "tracing_event"
    header = ["subscriber", "ns/event (ratio to `ringbuf`)"]
    rows = []
    for name in ["registry_only", "ringbuf", "fmt_file", "fmt_file_buffered", "chrome"]:
        rows.append([f"`{name}`", cell(ns(r, g, name), ns(r, g, "ringbuf"))])
    return table(header, rows)


VS_LTTNG = "vs_lttng_u64_u32"
# The rows of the vs_lttng bench, in its order (a new row: one more name here).
VS_LTTNG_ROWS = ["floor_bare", "floor", "ringbuf_percpu", "ringbuf_percpu_rseq",
                 "ringbuf_perthread", "lttng_ust", "lttng_ust_disabled"]


def vs_lttng(r):
    """ns per thread-event (ratio to floor_bare) at 1 and 2 threads, and the
    aggregate speed-up from 1 to 2 threads (2 * t1 / t2)."""
    g = VS_LTTNG
    header = ["system", "1 thread: ns/event (/ floor_bare)",
              "2 threads: ns/thread-event (/ floor_bare)", "scaling 1→2"]
    rows = []
    for name in VS_LTTNG_ROWS:
        t1, t2 = ns(r, g, name, "1"), ns(r, g, name, "2")
        rows.append([f"`{name}`", cell(t1, ns(r, g, "floor_bare", "1")),
                     cell(t2, ns(r, g, "floor_bare", "2")),
                     f"{2 * t1 / t2:.2f}x" if t1 and t2 else "–"])
    return table(header, rows)


def vs_lttng_targets(r):
    """The issue's targets, met or missed, per thread count."""
    g = VS_LTTNG

    def q(a, b, t):
        x, y = ns(r, g, a, t), ns(r, g, b, t)
        return x / y if x and y else None

    def scale(name):
        t1, t2 = ns(r, g, name, "1"), ns(r, g, name, "2")
        return 2 * t1 / t2 if t1 and t2 else None

    specs = [  # (name, per thread count or None, goal, higher is better)
        ("lttng_ust / ringbuf_percpu", lambda t: q("lttng_ust", "ringbuf_percpu", t), 4.0, True),
        ("lttng_ust / ringbuf_percpu_rseq", lambda t: q("lttng_ust", "ringbuf_percpu_rseq", t),
         4.0, True),
        ("lttng_ust / ringbuf_perthread", lambda t: q("lttng_ust", "ringbuf_perthread", t), 6.0,
         True),
        ("ringbuf_percpu / floor_bare", lambda t: q("ringbuf_percpu", "floor_bare", t), 2.0,
         False),
        ("ringbuf_percpu_rseq / floor_bare",
         lambda t: q("ringbuf_percpu_rseq", "floor_bare", t), 2.0, False),
        ("ringbuf_perthread / floor_bare", lambda t: q("ringbuf_perthread", "floor_bare", t), 2.0,
         False),
    ]
    header = ["ratio (goal)", "1 thread", "2 threads"]
    rows = []

    def verdict(v, goal, higher, digits=2):
        if v is None:
            return "–"
        met = v >= goal if higher else v <= goal
        return f"{v:.{digits}f} met" if met else f"**{v:.{digits}f} missed**"

    for name, f, goal, higher in specs:
        op = ">=" if higher else "<="
        rows.append([f"{name} ({op} {goal:g})"] + [verdict(f(t), goal, higher) for t in "12"])
    for name in ["ringbuf_percpu", "ringbuf_percpu_rseq", "ringbuf_perthread", "floor_bare",
                 "lttng_ust"]:
        rows.append([f"scaling 1→2, {name} (>= 1.9)", verdict(scale(name), 1.9, True, 3), ""])
    return table(header, rows)


# ---------------------------------------------------------------- SVG, by hand

def svg_text(x, y, s, size=12, anchor="start", weight="normal"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" font-family="sans-serif">{html.escape(s)}</text>')


def hbar_svg(title, categories, series, unit):
    """Horizontal grouped bars: categories x series; values[cat][series] (or None)."""
    left, right, top, bar, gap = 190, 70, 50, 9, 10
    width = 900
    n_series = len(series)
    group_h = n_series * bar + gap
    height = top + len(categories) * group_h + 40
    vmax = max((v for _c, vals in categories for v in vals if v), default=1.0)
    scale = (width - left - right) / vmax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           svg_text(width / 2, 22, title, 15, "middle", "bold")]
    for i, (name, _c) in enumerate(series):
        x = left + i * 120
        out.append(f'<rect x="{x}" y="32" width="10" height="10" fill="{COLOURS[i]}"/>')
        out.append(svg_text(x + 14, 41, name, 11))
    step = nice_step(vmax)
    tick = 0.0
    while tick <= vmax * 1.0001:
        x = left + tick * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 35}" '
                   f'stroke="#ddd"/>')
        out.append(svg_text(x, height - 20, f"{tick:g}", 10, "middle"))
        tick += step
    out.append(svg_text(left + (width - left - right) / 2, height - 5, unit, 11, "middle"))
    for ci, (cat, vals) in enumerate(categories):
        y0 = top + ci * group_h
        out.append(svg_text(left - 6, y0 + group_h / 2, cat, 11, "end"))
        for si, v in enumerate(vals):
            if v is None:
                continue
            y = y0 + si * bar
            out.append(f'<rect x="{left}" y="{y}" width="{v * scale:.1f}" height="{bar - 1}" '
                       f'fill="{COLOURS[si]}"/>')
            out.append(svg_text(left + v * scale + 3, y + bar - 2, f"{v:.1f}", 8))
    out.append("</svg>")
    return "\n".join(out)


def nice_step(vmax):
    raw = vmax / 8
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 0.1
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def plots(r, svg_dir):
    os.makedirs(svg_dir, exist_ok=True)
    how = "fastest sample" if ESTIMATOR == "best" else "criterion slope"
    cats = []
    for name in EVENT_ROWS + PEER_ROWS:
        kind = "peers" if name in PEER_ROWS else "event"
        cats.append((name, [ns(r, f"{kind}_{n}B", name) for n in SIZES]))
    series = [(f"{n} B payload", None) for n in SIZES]
    with open(os.path.join(svg_dir, "ns_per_event.svg"), "w") as f:
        f.write(hbar_svg(f"ns per event, one writer, {how} (lower is better)", cats, series,
                         "ns/event"))
    data = scaling_data(r)
    threads = sorted({t for d in data.values() for t in d})
    cats = [(kind, [data.get(kind, {}).get(t) for t in threads])
            for kind in ["floor", "shared", "local"]]
    series = [(f"{t} thread{'s' if t > 1 else ''}", None) for t in threads]
    with open(os.path.join(svg_dir, "scaling.svg"), "w") as f:
        f.write(hbar_svg(f"Scaling, 16 B: aggregate M events/s, {how} (higher is better)",
                         cats, series, "M events/s, one buffer per pinned writer thread"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--criterion", default="target/criterion")
    ap.add_argument("--log", help="the bench log, for the concurrent bench's counts")
    ap.add_argument("--svg-dir", default="benches/plots")
    ap.add_argument("--estimator", choices=["best", "slope"], default="best")
    args = ap.parse_args()
    global ESTIMATOR
    ESTIMATOR = args.estimator
    r = load(args.criterion)
    if not r:
        sys.exit(f"no criterion results under {args.criterion}: run `cargo bench -p benches`")
    sections = [
        ("Per-event cost, one writer: ns/event (ratio to the floor)", per_event(r)),
        ("Peers: ns/event (ratio to the floor measured in the same group)", peers(r)),
        ("Targets (ratios to each group's own floor; peers compared floor-normalised)",
         targets(r)),
        ("Concurrent reader, discard mode, backpressure", concurrent(r, args.log)),
        ("Scaling, overwrite, 16 B", scaling(r)),
        ("Nested writes from a signal handler, 16 B", nested(r)),
        ("Typed events {u64; u32}, CTF: ns/event (ratio to write_event)", typed_events(r)),
        ("A `tracing` event through each subscriber: ns/event (ratio to ringbuf's Layer)",
         tracing_layer(r)),
        ("Against LTTng-UST, {u64; u32}: ns per thread-event (ratio to the bare floor)",
         vs_lttng(r)),
        ("Against LTTng-UST: the targets", vs_lttng_targets(r)),
    ]
    for title, body in sections:
        print(f"#### {title}\n\n{body}\n")
    plots(r, args.svg_dir)


if __name__ == "__main__":
    main()
