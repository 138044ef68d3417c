"""Writing a run: CSV of every load level, the markdown summary, and the throughput-vs-latency plot."""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _fmt(v, nd=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def plot(path: Path, levels: list[dict], baselines: dict | None) -> None:
    """Left: the ensemble (and the encoder alone) with the baselines as vertical lines; right: the two
    light stages, whose rates are two orders of magnitude higher and would flatten the left panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    series: dict[tuple, list[dict]] = {}
    for lv in levels:
        if lv.get("throughput") is None or lv.get("p50_ms") is None:
            continue
        series.setdefault((lv["model"], lv["protocol"], lv["mode"]), []).append(lv)
    for (model, proto, mode), pts in sorted(series.items()):
        ax = axes[0] if model in ("spin_ocr", "spin_encoder") else axes[1]
        pts = sorted(pts, key=lambda p: p["value"])  # in load order, so the curve reads left to right as load grows
        label = f"{model} {proto} {'concurrency' if mode == 'concurrency' else 'Poisson rate'}"
        style = "-o" if mode == "concurrency" else "--s"
        line = ax.plot([p["throughput"] for p in pts], [p["p50_ms"] for p in pts], style, label=label + " (p50)")[0]
        ax.plot([p["throughput"] for p in pts], [p["p99_ms"] for p in pts], ":", color=line.get_color(), alpha=0.7)
        for p in pts:
            ax.annotate(f"{p['value']:g}", (p["throughput"], p["p50_ms"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if baselines:
        b32 = baselines["batch32"]
        axes[0].axvline(b32["inprocess"]["items_per_s"], color="k", ls="--", lw=1, label="(a) in-process pipeline, batch 32")
        axes[0].axvline(b32["eager"]["items_per_s"], color="gray", ls="-.", lw=1, label="(b) PyTorch eager, batch 32")
        axes[0].axvline(baselines["flop_limit_images_per_s"], color="r", ls="--", lw=1, label="(c) FLOP-count limit (encoder)")
        if "paddle_inference" in b32:
            axes[0].axvline(b32["paddle_inference"]["items_per_s"], color="b", ls=":", lw=1, label="(d) Paddle Inference (oneDNN), batch 32")
    for ax, title in zip(axes, ("spin_ocr ensemble and spin_encoder", "spin_preprocess and spin_decoder alone")):
        ax.set_xlabel("throughput (requests/s, 1 image each)")
        ax.set_ylabel("latency ms: p50 solid, p99 dotted")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title(title + " (point labels: concurrency / req/s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def inprocess_over_paddle(baselines: dict) -> tuple[float, float]:
    """Images/s of the in-process pipeline over Paddle Inference's, at batch 32 and batch 1."""
    b32, b1 = (baselines[k]["inprocess"]["items_per_s"] / baselines[k]["paddle_inference"]["items_per_s"] for k in ("batch32", "batch1"))
    return b32, b1


def summary_markdown(run: dict) -> str:
    m = run["machine"]
    cpu = m["cpu"]
    v = m["versions"]
    out = [f"# SPIN serving performance — {run['started_utc']}", ""]
    out.append(f"Machine: **{cpu['model_name']}** (family {cpu['cpu_family']} model {cpu['cpu_model']}), "
               f"{cpu['usable_cpus']} usable CPUs, {m['memory_gib']} GiB, flags {', '.join(cpu['flags'])}"
               f"{', VM' if cpu['hypervisor'] else ''}. Load average at start {m['load_average_1_5_15']}, at end {run.get('load_average_end')} "
               "(the machine is shared: compare ratios within this run, not absolute numbers across runs).")
    out.append(f"Versions: Python {v['python']}, torch {v['torch']}, onnxruntime {v['onnxruntime']}, openvino {v.get('openvino')}, paddlepaddle {v.get('paddlepaddle')}, "
               f"numpy {v['numpy']}, Triton (nvidia-pytriton {v['nvidia-pytriton']}), tritonclient/perf_analyzer {v['tritonclient']}.")
    out.append(f"Weights: {run.get('weights', '?')}. Request data: {run['data']['count']} rendered words "
               f"({run['data']['formats']}), encoded {run['data']['encoded_bytes']} bytes, {run['data']['height_px']} px high, {run['data']['width_px']} px wide.")
    out.append(f"Command: `{run['command']}`")
    out.append("")

    targets = run.get("targets")
    if targets:
        out += ["## Targets (issue 6)", "", "| target | measured | goal | status |", "|---|---:|---:|---|"]
        for t in targets:
            out.append(f"| {t['name']} | {t['measured']} | {t['goal']} | {t['status']} |")
        out.append("")

    b = run.get("baselines")
    if b:
        out += ["## Baselines (same weights, same request bytes, same thread budget: "
                f"{b['threads']} threads, encoder runtime {b['encoder_runtime']})", ""]
        out += ["| path | batch 1 p50 ms | batch 1 req/s | batch 32 img/s | batch 32 % of FLOP limit |", "|---|---:|---:|---:|---:|"]
        for k, name in (("inprocess", "(a) in-process pipeline"), ("eager", "(b) PyTorch eager pipeline"), ("encoder_only", "encoder alone (runtime)"),
                        ("paddle_inference", "(d) Paddle Inference, oneDNN (PaddleOCR proxy)")):
            b1, b32 = b["batch1"].get(k), b["batch32"].get(k)
            if b1 is None:
                continue
            out.append(f"| {name} | {_fmt(b1['latency_ms_p50'])} | {_fmt(b1['items_per_s'], 2)} | {_fmt(b32['items_per_s'], 2)} | "
                       f"{100 * b32['items_per_s'] / b['flop_limit_images_per_s']:.0f} % |")
        out.append(f"| (c) FLOP-count limit | | | {b['flop_limit_images_per_s']:.2f} | 100 % |")
        out.append("")
        pd = b.get("paddle_inference")
        if pd and "skipped" in pd:
            out += [f"(d) Paddle Inference skipped: {pd['skipped']}.", ""]
        elif pd:
            r32, r1 = inprocess_over_paddle(b)
            out.append(f"(d) = the same weights in Paddle Inference with oneDNN, bytes -> texts as PaddleOCR's TextRecognizer reads SPIN "
                       f"(all 26 steps), a proxy for PaddleOCR's own recognizer (perf/paddle_inference.py). "
                       f"(a) / (d): batch 32 **{r32:.2f}x**, batch 1 **{r1:.2f}x**. "
                       f"Probabilities vs PyTorch: max abs difference {pd['max_abs_diff_probs']:.1e}, texts equal {pd['texts_equal']}/{pd['texts_total']}.")
            out.append("")
        out.append(f"FLOP limit = 3x3-conv rate measured in this run, interleaved with the batch-32 rounds ({b['conv_gflops']:.1f} GFLOP/s; "
                   f"{b['conv_shape']}, oneDNN via PyTorch) / encoder {b['flop_per_image_encoder'] / 1e9:.2f} GFLOP per image "
                   f"(model total {b['macs']['total_mac'] / 1e9:.3f} GMAC incl. head; spin-model.md §9: 5.21).")
        out.append("")
        out += ["Stages of the in-process pipeline (ms per call):", "", "| stage | batch 1 | batch 32 |", "|---|---:|---:|"]
        for k in ("preprocess_only", "encoder_only", "decoder_numpy"):
            out.append(f"| {k} | {_fmt(b['batch1'].get(k, {}).get('latency_ms_p50'))} | {_fmt(b['batch32'].get(k, {}).get('latency_ms_p50'))} |")
        out.append("")

    levels = run.get("levels", [])
    if levels:
        out += ["## perf_analyzer sweep", "",
                "Latencies in ms (client side). Composing-model columns: server time per request (queue + compute infer, ms) "
                "and mean batch size, from the ensemble breakdown.", ""]
        comp = ["spin_preprocess", "spin_encoder", "spin_decoder"]
        out.append("| model | proto | load | req/s | p50 | p90 | p99 | failed | stable | " + " | ".join(f"{c[5:]} q+infer (batch)" for c in comp) + " | RSS MiB |")
        out.append("|---|---|---|---:|---:|---:|---:|---:|---|" + "---:|" * len(comp) + "---:|")
        for lv in levels:
            cells = []
            for c in comp:
                x = lv.get("composing", {}).get(c)
                cells.append(f"{x['queue_ms']:.0f}+{x['compute_infer_ms']:.0f} ({x['mean_batch_size']:.1f})" if x else "")
            load = f"c={lv['value']:g}" if lv["mode"] == "concurrency" else f"{lv['value']:g}/s"
            mem = lv.get("memory") or {}
            out.append(f"| {lv['model']} | {lv['protocol']} | {load} | {_fmt(lv.get('throughput'), 2)} | {_fmt(lv.get('p50_ms'))} | "
                       f"{_fmt(lv.get('p90_ms'))} | {_fmt(lv.get('p99_ms'))} | {_fmt(lv.get('requests_failed'))} | "
                       f"{'yes' if lv.get('stable') else 'no'}{' ERR: ' + lv['error'] if lv.get('error') else ''} | "
                       + " | ".join(cells) + f" | {_fmt(mem.get('total_rss_mib'), 0)} |")
        out.append("")

    mem = run.get("memory")
    if mem:
        out += ["## Server memory", ""]
        for when in ("idle", "after_sweep"):
            s = mem.get(when)
            if s:
                procs = ", ".join(f"{p['name']} {p['rss_mib']:.0f}" for p in s["processes"])
                out.append(f"- {when}: total RSS **{s['total_rss_mib']:.0f} MiB** (PSS {s['total_pss_mib']:.0f} MiB); per process RSS MiB: {procs}")
        soak = mem.get("soak")
        if soak:
            out.append(f"- soak ({soak['seconds']:.0f} s at concurrency {soak['concurrency']}): RSS first {soak['rss_first']:.0f}, "
                       f"last {soak['rss_last']:.0f}, max {soak['rss_max']:.0f} MiB; {soak['requests_ok']} requests ok, {soak['requests_failed']} failed")
        out.append("")

    cfg = run.get("server_config")
    if cfg:
        out += ["## Server model configuration in effect", "", "| model | backend | max batch | instances | dynamic batching | parameters |", "|---|---|---:|---|---|---|"]
        for name, c in cfg.items():
            inst = ", ".join(f"{g.get('count')}x{g.get('kind')}" for g in c.get("instance_group", []))
            db = c.get("dynamic_batching")
            dbs = f"delay {db.get('max_queue_delay_microseconds', 0)} us" + (f", preferred {db.get('preferred_batch_size')}" if db.get("preferred_batch_size") else "") if db is not None else "-"
            params = ", ".join(f"{k}={p.get('string_value')}" for k, p in (c.get("parameters") or {}).items())
            out.append(f"| {name} | {c.get('backend') or c.get('platform')} | {c.get('max_batch_size')} | {inst} | {dbs} | {params} |")
        out.append("")
    out.append(f"Environment of the measuring process (baselines): {run.get('env', {})}. Server: {run.get('server_launch')}.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # re-render a run's summary and plot from its run.json
    import json
    import sys

    d = Path(sys.argv[1])
    run = json.loads((d / "run.json").read_text())
    plot(d / "throughput_latency.png", run.get("levels", []), run.get("baselines"))
    (d / "summary.md").write_text(summary_markdown(run))
