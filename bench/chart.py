"""The Submit-alone phase as a PNG: throughput and latency by calls in flight, per front end."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server, and no GUI toolkit needed

import matplotlib.pyplot as plt

from bench.stats import Percentiles, Tally


def write_chart(submit: dict[str, dict[int, Tally]], path: Path) -> None:
    """Two panels, tasks/s and latency (median solid, p99 dashed), on a log scale of in flight."""
    figure, (rate, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, (name, by_callers) in enumerate(submit.items()):
        color = f"C{index}"
        callers = sorted(by_callers)
        rates = [by_callers[c].tasks_per_second or 0.0 for c in callers]
        found = [Percentiles.of(by_callers[c].round_trips) for c in callers]
        rate.plot(callers, rates, marker="o", color=color, label=name)
        latency.plot(
            callers,
            [p.median_ms if p else 0 for p in found],
            marker="o",
            color=color,
            label=f"{name}, median",
        )
        latency.plot(
            callers,
            [p.p99_ms if p else 0 for p in found],
            linestyle="--",
            color=color,
            label=f"{name}, p99",
        )
    ticks = sorted({c for by_callers in submit.values() for c in by_callers})
    for axes, title, unit in ((rate, "Throughput", "tasks/s"), (latency, "Latency", "ms")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(ticks, [str(c) for c in ticks])
        axes.minorticks_off()
        axes.set_xlabel("calls in flight (the send_task loop: always one)")
        axes.set_ylabel(unit)
        axes.set_title(f"Submit alone, no worker: {title}")
        axes.grid(True, alpha=0.3)
    latency.set_yscale("log")
    rate.legend(fontsize="small")
    latency.legend(fontsize="x-small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
