#!/usr/bin/env python3
"""Turns benches/compare.sh's raw results into one markdown table.

Input (stdin): one measurement per line, `proxy<TAB>metric<TAB>value`, one line per repetition.
Output: a table with one row per metric and one column per proxy; each cell is the median, the
min–max spread over repetitions in brackets, and the ratio of the median to the baseline's
median (×1.00 = same as the baseline; whether higher is better depends on the row).

Usage: summarize.py BASELINE PROXY... [--NAME=VALUE]...  (NAME fills {NAME} in the row labels)
"""

import statistics
import sys

# metric key, row label, format, which way is better
METRICS = [
    ("rps", "HTTP/1.1 req/s (wrk -t1 -c{conns}, 1 KiB)", "{:,.0f}", "higher"),
    ("cpu_us", "proxy CPU µs/request (HTTP/1.1)", "{:.1f}", "lower"),
    ("cpu_pct", "proxy CPU use in that run (% of its core)", "{:.0f}", "info"),
    ("p50_ms", "p50 latency ms at {rate} req/s open loop", "{:.3f}", "lower"),
    ("p99_ms", "p99 latency ms at {rate} req/s open loop", "{:.3f}", "lower"),
    ("h2c_rps", "h2c req/s (h2load -c{conns} -m10)", "{:,.0f}", "higher"),
    ("h2c_cpu_us", "proxy CPU µs/request (h2c)", "{:.1f}", "lower"),
    ("large_mibs", "1 MiB bodies, MiB/s (wrk -c{large_conns})", "{:,.0f}", "higher"),
    ("peak_rss_mib", "peak RSS MiB (VmHWM after the load cases)", "{:.1f}", "lower"),
    ("idle_rss_mib", "idle RSS MiB (fresh process, no connections open)", "{:.1f}", "lower"),
    ("idle_kib", "KiB per idle keep-alive connection ({idle} open)", "{:.1f}", "lower"),
    ("syscalls", "syscalls/request (HTTP/1.1, -c{conns})", "{:.2f}", "lower"),
]


def main():
    args = sys.argv[1:]
    labels = {}
    names = []
    for arg in args:
        if arg.startswith("--"):
            key, _, value = arg[2:].partition("=")
            labels[key] = value
        else:
            names.append(arg)
    # The baseline's column comes first; the others keep their order.
    baseline = names[0]
    proxies = [baseline] + [p for p in names[1:] if p != baseline]
    data = {}
    for line in sys.stdin:
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 3 or parts[2] in ("", "nan", "None"):
            continue
        data.setdefault((parts[0], parts[1]), []).append(float(parts[2]))
    header = "| figure | " + " | ".join(proxies) + " |"
    print(header)
    print("|---" * (len(proxies) + 1) + "|")
    for key, label, fmt, better in METRICS:
        if not any((p, key) in data for p in proxies):
            continue
        base = data.get((baseline, key))
        base_med = statistics.median(base) if base else None
        cells = []
        for proxy in proxies:
            values = data.get((proxy, key))
            if not values:
                cells.append("—")
                continue
            med = statistics.median(values)
            cell = fmt.format(med)
            if len(values) > 1:
                cell += f" ({fmt.format(min(values))}–{fmt.format(max(values))})"
            if proxy != baseline and base_med and better != "info":
                cell += f" ×{med / base_med:.2f}"
            cells.append(cell)
        arrow = {"higher": " ↑", "lower": " ↓", "info": ""}[better]
        print(f"| {label.format(**labels)}{arrow} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
