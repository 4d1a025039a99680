"""``pttd bench`` with no benchmark named: every benchmark, one table, one JSON file, one plot.

Runs ``server``, ``audio``, ``latency`` and ``hostile`` in turn (``--quick``: the small version of
each, about a minute in all), then prints one table with each figure beside its target and PASS
or FAIL, and writes every report, the targets beside the figures, to one JSON file
(``bench-report.json`` unless ``--out``). When matplotlib is installed
(``pip install -e '.[plot]'``) it also draws the latency distributions (mouth-to-ear, access
time, server delivery) into a PNG beside the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pttd.bench import audio, hostile, latency, server
from pttd.bench.common import add_report_only, finish, mark, nearest_rank, start_logging
from pttd.cliargs import output_file

log = logging.getLogger(__name__)

DEFAULT_OUT: Final = Path("bench-report.json")
PLOT_EXTRA: Final = "pip install -e '.[plot]'"  # as the README says


@dataclass(frozen=True, slots=True)
class Row:
    benchmark: str
    figure: str
    value: float | None
    unit: str
    target: str
    met: bool | None  # None: not measured
    detail: str = ""


def rows(report: dict[str, Any]) -> list[Row]:
    """The figures that have targets, in table order."""
    out: list[Row] = []
    s = report["server"]
    out += [
        Row(
            "server",
            f"delivery p99, 1 -> {s['listeners']}",
            s["pttd"]["p99_ms"],
            "ms",
            f"< {s['targets']['p99_ms']:g} ms",
            s["targets_met"]["p99_ms"],
            f"p50 {s['pttd']['p50_ms']:.2f} ms, lost {s['pttd']['lost']}",
        ),
        Row(
            "server",
            "deliveries/s vs bare relay",
            s["ratio_packets_per_s"],
            "x",
            f">= {s['targets']['ratio']:g}x",
            s["targets_met"]["ratio"],
            f"{s['pttd']['packets_per_s']:,.0f} vs {s['baseline']['packets_per_s']:,.0f}/s",
        ),
    ]
    a = report["audio"]
    q, c, r, am = a["pesq_wb"], a["cpu_us_per_frame"], a["ratios"], a["targets_met"]
    at = a["targets"]
    out += [
        Row(
            "audio",
            "PESQ WB chain / codec",
            r["pesq_no_loss"],
            "x",
            f">= {at['pesq_ratio']:g}x",
            am["pesq_no_loss"],
            f"{q['chain']:.3f} / {q['codec_only']:.3f}",
        ),
        Row(
            "audio",
            "same, 5 % loss",
            r["pesq_loss5"],
            "x",
            f">= {at['pesq_ratio']:g}x",
            am["pesq_loss5"],
            f"{q['chain_loss5']:.3f} / {q['codec_only_loss5']:.3f}",
        ),
        Row(
            "audio",
            "tx path CPU / libopus encode",
            r["tx_path"],
            "x",
            f"<= {at['cpu_ratio']:g}x",
            am["tx_path"],
            f"{c['tx_path']:.1f} / {c['libopus_encode']:.1f} µs per frame",
        ),
        Row(
            "audio",
            "rx path CPU / libopus decode",
            r["rx_path"],
            "x",
            f"<= {at['cpu_ratio']:g}x",
            am["rx_path"],
            f"{c['rx_path']:.1f} / {c['libopus_decode']:.1f} µs per frame",
        ),
        Row(
            "audio",
            "PESQ WB encrypted / clear chain",
            r["pesq_encrypted"],
            "x",
            f">= {at['e2ee_pesq_ratio']:g}x",
            am["pesq_encrypted"],
            f"{q['chain_encrypted']:.3f} / {q['chain']:.3f}",
        ),
        Row(
            "audio",
            "tx path CPU encrypted / clear",
            r["tx_path_encrypted"],
            "x",
            f"<= {at['e2ee_cpu_ratio']:g}x",
            am["tx_path_encrypted"],
            f"{c['tx_path_encrypted']:.1f} / {c['tx_path']:.1f} µs per frame",
        ),
        Row(
            "audio",
            "rx path CPU encrypted / clear",
            r["rx_path_encrypted"],
            "x",
            f"<= {at['e2ee_cpu_ratio']:g}x",
            am["rx_path_encrypted"],
            f"{c['rx_path_encrypted']:.1f} / {c['rx_path']:.1f} µs per frame",
        ),
    ]
    la = report["latency"]
    lt, lm = la["targets"], la["targets_met"]

    def spread(d: dict[str, Any]) -> str:
        return f"p50 {d['p50']:.1f} ms, max {d['max']:.1f} ms, n {d['n']}"

    out += [
        Row(
            "latency",
            "access (press -> permit) p95",
            la["access_time_ms"]["p95"],
            "ms",
            f"<= {lt['access_time_p95_ms']:g} ms",
            lm["access_time_p95_ms"],
            spread(la["access_time_ms"]),
        ),
        Row(
            "latency",
            "mouth-to-ear p95",
            la["mouth_to_ear_ms"]["p95"],
            "ms",
            f"<= {lt['mouth_to_ear_p95_ms']:g} ms",
            lm["mouth_to_ear_p95_ms"],
            spread(la["mouth_to_ear_ms"]),
        ),
        Row(
            "latency",
            "late entry p95",
            la["late_entry_ms"]["p95"],
            "ms",
            f"<= {lt['late_entry_p95_ms']:g} ms",
            lm["late_entry_p95_ms"],
            spread(la["late_entry_ms"]),
        ),
        Row(
            "latency",
            "clipped at the press, worst",
            la["clipped_ms"],
            "ms",
            f"<= {lt['clipped_ms']:g} ms",
            lm["clipped_ms"],
        ),
        Row(
            "latency",
            "pttd RSS above imports",
            la["device_own_rss_mb"],
            "MB",
            f"<= {lt['device_own_rss_mb']:g} MB",
            lm["device_own_rss_mb"],
            f"device {la['device_rss_mb']} MB - import floor {la['import_floor_rss_mb']} MB"
            if la["device_rss_mb"] is not None
            else "not measured",
        ),
    ]
    enc, delta = la["encrypted"], la["e2ee_delta_p95_ms"]
    out += [
        Row(
            "latency",
            f"{label} p95 |e2ee - clear|",
            abs(delta[key]),
            "ms",
            f"<= {lt[f'{key}_e2ee_delta_p95_ms']:g} ms",
            lm[f"{key}_e2ee_delta_p95_ms"],
            f"p95 {enc[f'{key}_ms']['p95']:.1f} ms encrypted, {la[f'{key}_ms']['p95']:.1f} ms "
            f"clear ({delta[key]:+.2f} ms)",
        )
        for key, label in (("access_time", "access"), ("mouth_to_ear", "mouth-to-ear"))
    ]
    ble, ble_delta = la["ble"], la["ble_delta_p95_ms"]
    out.append(
        Row(
            "latency",
            "access p95 |BLE - GPIO|",
            abs(ble_delta),
            "ms",
            f"<= {lt['access_time_ble_delta_p95_ms']:g} ms",
            lm["access_time_ble_delta_p95_ms"],
            f"p95 {ble['access_time_ms']['p95']:.1f} ms BLE, "
            f"{ble['gpio_access_time_ms']['p95']:.1f} ms GPIO ({ble_delta:+.2f} ms)",
        )
    )
    web = la["web_console"]
    out += [
        Row(
            "latency",
            f"web console {label} mouth-to-ear p95",
            None if "skipped" in web else web[f"{key}_ms"]["p95"],
            "ms",
            f"<= {lt[f'{key}_p95_ms']:g} ms",
            lm[f"{key}_p95_ms"],
            f"skipped: {web['skipped']}" if "skipped" in web else spread(web[f"{key}_ms"]),
        )
        for key, label in (
            ("browser_to_radio", "browser→radio"),
            ("radio_to_browser", "radio→browser"),
        )
    ]
    h = report["hostile"]
    hf, ht, hm = h["figures"], h["targets"], h["targets_met"]
    attacks = [x for x in h["phases"] if x["clients"] is not None]
    worst = max(attacks, key=lambda x: x["honest"]["p99_ms"] or 0.0)
    reference = h["phases"][0]["honest"]["p99_ms"]
    out += [
        Row(
            "hostile",
            "honest packets lost, all attacks",
            hf["lost"],
            "packets",
            f"= {ht['lost']}",
            hm["lost"],
            f"p99 {worst['honest']['p99_ms']} ms under {worst['attack']}, {reference} ms alone",
        ),
        Row(
            "hostile",
            "forged packets heard",
            hf["forged_heard"],
            "packets",
            f"= {ht['forged_heard']}",
            hm["forged_heard"],
        ),
        Row(
            "hostile",
            "server RSS growth under attack",
            hf["rss_growth_mb"],
            "MB",
            f"<= {ht['rss_growth_mb']:g} MB",
            hm["rss_growth_mb"],
            f"{hf['rss_baseline_mb']} MB alone, peak {hf['rss_peak_mb']} MB",
        ),
        Row(
            "hostile",
            "server log lines per attack",
            hf["log_lines_worst"],
            "lines",
            f"<= {ht['log_lines']}",
            hm["log_lines"],
            f"worst: {hf['log_lines_worst_attack']}",
        ),
        Row(
            "hostile",
            "server errors logged",
            len(h["server_errors"]),
            "lines",
            f"= {ht['server_errors']}",
            hm["server_errors"],
        ),
    ]
    return out


async def bench_all(
    quick: bool, pin_cpus: bool, deliveries_ns: list[int] | None = None
) -> dict[str, Any]:
    """Every benchmark in turn; the reports side by side."""
    began = time.perf_counter()
    pick = 1 if quick else 0
    log.info("server …")
    server_report = await server.bench(
        server.BenchSettings(
            latency_packets=server.LATENCY_PACKETS[pick],
            throughput_packets=server.THROUGHPUT_PACKETS[pick],
            rounds=server.ROUNDS[pick],
            quick=quick,
            pin_cpus=pin_cpus,
        ),
        deliveries_ns,
    )
    log.info("audio …")
    audio_report = await audio.bench(
        audio.AudioSettings(
            chain_rounds=audio.CHAIN_ROUNDS[pick],
            cpu_rounds=audio.CPU_ROUNDS[pick],
            quick=quick,
            pin_cpu=pin_cpus,
        )
    )
    log.info("latency …")
    latency_report = await latency.bench(
        latency.LatencySettings(
            presses=latency.PRESSES[pick], late_entries=latency.LATE_ENTRIES[pick], quick=quick
        )
    )
    log.info("hostile …")
    hostile_report = await hostile.bench(
        hostile.HostileSettings(seconds=hostile.PHASE_SECONDS[pick], quick=quick)
    )
    report: dict[str, Any] = {
        "quick": quick,
        "server": server_report,
        "audio": audio_report,
        "latency": latency_report,
        "hostile": hostile_report,
    }
    summary = rows(report)
    report["summary"] = [
        {
            "benchmark": r.benchmark,
            "figure": r.figure,
            "value": r.value,
            "unit": r.unit,
            "target": r.target,
            "met": r.met,
            "detail": r.detail,
        }
        for r in summary
    ]
    report["all_targets_met"] = all(r.met is True for r in summary)
    report["targets_missed"] = [f"{r.benchmark}: {r.figure}" for r in summary if r.met is False]
    report["elapsed_s"] = round(time.perf_counter() - began, 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"pttd bench{' --quick' if report['quick'] else ''}: every benchmark, figures beside "
        "their targets",
        "",
        f"{'benchmark':<10}{'figure':<32}{'value':>10}  {'target':<12}{'':<6}detail",
    ]
    for r in report["summary"]:
        if r["value"] is None:
            value = "n/a"
        elif isinstance(r["value"], int):  # a count
            value = str(r["value"])
        else:
            value = f"{r['value']:.{3 if r['unit'] == 'x' else 1}f}"
        unit = "" if r["unit"] == "x" else f" {r['unit']}"
        lines.append(
            f"{r['benchmark']:<10}{r['figure']:<32}{value + unit:>10}  {r['target']:<12}"
            f"{mark(r['met']):<6}{r['detail']}"
        )
    met = sum(r["met"] is True for r in report["summary"])
    lines += [
        "",
        f"{met} of {len(report['summary'])} targets met; took {report['elapsed_s']:.0f} s "
        f"(server {report['server']['elapsed_s']:.0f} s, audio {report['audio']['elapsed_s']:.0f}"
        f" s, latency {report['latency']['elapsed_s']:.0f} s, hostile "
        f"{report['hostile']['elapsed_s']:.0f} s).",
    ]
    if report.get("json"):
        lines.append(f"JSON: {report['json']}")
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def plot(report: dict[str, Any], deliveries_ns: list[int], path: Path) -> bool:
    """Histograms of mouth-to-ear, access time and server delivery into ``path`` (PNG); False
    when matplotlib is not installed."""
    try:  # an optional extra: imported by name, so that type checkers need not have it
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    la = report["latency"]
    panels = [
        (
            "mouth-to-ear (A's microphone → B's speaker)",
            la["mouth_to_ear_ms"]["samples"],
            la["targets"]["mouth_to_ear_p95_ms"],
            95,
        ),
        (
            "access time (press → talk permit)",
            la["access_time_ms"]["samples"],
            la["targets"]["access_time_p95_ms"],
            95,
        ),
        (
            f"server delivery, 1 talker → {report['server']['listeners']} listeners",
            [ns / 1e6 for ns in deliveries_ns],
            report["server"]["targets"]["p99_ms"],
            99,
        ),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 9), constrained_layout=True)
    for ax, (title, values, target, tail) in zip(axes, panels, strict=True):
        upper = 1.05 * max([target, *values])
        ax.hist(values, bins=[upper * i / 80 for i in range(81)], color="tab:blue")
        ordered = sorted(values)
        for q, style in ((50, ":"), (tail, "-.")):
            at = nearest_rank(ordered, q)
            ax.axvline(at, color="black", linestyle=style, label=f"p{q} {at:.1f} ms")
        ax.axvline(target, color="tab:red", linestyle="--", label=f"p{tail} target {target:g} ms")
        ax.set_xlim(0, upper)
        ax.set_title(f"{title} (n = {len(values)})")
        ax.set_xlabel("ms")
        ax.set_ylabel("count")
        ax.legend()
    fig.suptitle("pttd bench" + (" --quick" if report["quick"] else ""))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pttd bench`` itself (a named benchmark has its own)."""
    parser.add_argument(
        "--quick", action="store_true", help="the small version of every benchmark (< 1 min)"
    )
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.add_argument(
        "--out",
        type=output_file,
        default=str(DEFAULT_OUT),  # a string, so that argparse checks it too, before the run
        metavar="FILE",
        help="write the JSON report here (default: %(default)s)",
    )
    parser.add_argument(
        "--plot",
        type=output_file,
        metavar="PNG",
        help=f"latency plot, when matplotlib is installed ({PLOT_EXTRA}; default: the JSON "
        "file's name, .png)",
    )
    parser.add_argument("--no-plot", action="store_true", help="draw no plot")
    parser.add_argument(
        "--no-pin", dest="pin_cpus", action="store_false", help="pin no process to a CPU"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_report_only(parser)


def run(args: argparse.Namespace) -> int:
    start_logging(args.quiet)
    deliveries: list[int] = []
    report = asyncio.run(bench_all(args.quick, args.pin_cpus, deliveries))
    out: Path = args.out if args.out is not None else DEFAULT_OUT
    report["json"] = str(out)
    report["plot"] = None
    if not args.no_plot:
        png = args.plot if args.plot is not None else out.with_suffix(".png")
        if plot(report, deliveries, png):
            report["plot"] = str(png)
        else:
            log.info("no plot: matplotlib is not installed (%s)", PLOT_EXTRA)
    text = json.dumps(report, indent=2)
    out.write_text(text + "\n")
    print(text if args.json else format_report(report))
    return finish("pttd bench", targets_met(report), args.report_only)


def targets_met(report: dict[str, Any]) -> dict[str, bool | None]:
    """Each summary row's figure (``benchmark: figure``) and whether it met its target."""
    return {f"{r['benchmark']}: {r['figure']}": r["met"] for r in report["summary"]}
