#!/usr/bin/env python
"""The report of ``bptt_variants.py``: ``results.md`` and the PNG plots from its results dict.

``python experiments/bptt_variants_report.py DIR`` re-renders ``DIR/results.md``
and the plots from ``DIR/results.json`` without measuring anything again.
"""

from __future__ import annotations

import json
import math
import os
import sys

__all__ = ["markdown", "plots"]


def _mem(memory) -> int | None:
    """The compiled step's bytes (``total``; ``peak`` in results written before jrnn.compare)."""
    memory = memory or {}
    return memory.get("total", memory.get("peak"))


def _f(x, fmt=".4f", missing="—"):
    return missing if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _pm(r: dict, k: str, fmt: str) -> str:
    """``mean ± half`` (95% CI over seeds) of field ``k``; the bare value for one seed."""
    ci = r.get(k + "_ci")
    if isinstance(ci, list):  # a curve: its last point
        ci = ci[-1]
    v = r[k][-1] if isinstance(r[k], list) else r[k]
    return _f(v, fmt) + (f" ± {_f(ci, fmt)}" if isinstance(ci, float) and math.isfinite(ci) else "")


def _seeds(block: dict) -> str:
    n = len(block.get("seeds") or [0]) if isinstance(block.get("seeds"), list) else block.get("seeds", 1)
    return f"mean ± 95% CI (Student t) over {n} seeds" if n > 1 else "one seed"


def markdown(res: dict) -> str:
    """The report as Markdown (``results.md``)."""
    m, cfg = res["machine"], res["config"]
    L = ["# Gradient estimators: accuracy, cost, learning", "",
         f"Machine: {m['cpu']}, {m['cores']} cores usable, {m['device']}, JAX {m['jax']} (jaxlib "
         f"{m['jaxlib']}), Python {m['python']}; jrnn {m.get('git') or '?'}. Load average at start "
         f"{m.get('loadavg_start')}, at end {m.get('loadavg_end')}"
         + (" -- the CPUs were shared with other jobs, so timings are noisy (compare ratios, not "
            "absolute times)." if (m.get("loadavg_start") or [0])[0] > (m["cores"] or 1) * 0.5 else "."),
         f"Total run time {res['total_seconds']:.0f} s{' (--quick)' if cfg['quick'] else ''}.", ""]
    acc = res.get("accuracy")
    if acc:
        names = [n for n in ("init", "trained") if any(n in r for r in acc["results"].values())]
        L += ["## Gradient accuracy against full BPTT", "",
              f"{acc['model']}, B={acc['B']}, T={acc['T']}, fresh zero carry; 'init' = params at "
              f"initialisation, 'trained' = after {acc['pretrain_updates']} full-BPTT Adam updates. "
              f"{acc['metric_note']}. Stochastic estimators: mean over {acc['keys']} keys; bias = "
              f"|mean - full|/|full| (its Monte-Carlo floor sqrt(var/keys) in brackets), variance = "
              f"sum |g - mean|² / (keys - 1) / |full|² (jrnn.compare.bias_variance). Each figure: "
              f"{_seeds(acc)} (params, batch and keys per seed).", ""]
        hdr = "| estimator | " + " | ".join(f"cos ({n}) | rel. err ({n})" for n in names) + \
              " | bias (trained) | variance (trained) |"
        L += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
        for spec, r in acc["results"].items():
            if "skipped" in r:
                L.append(f"| {spec} | skipped: {r['skipped']} |")
                continue
            last = r.get("trained", r.get("init"))
            cells = " | ".join(f"{_pm(r[n], 'cos', '.4f')} | {_pm(r[n], 'rel_err', '.3g')}" for n in names)
            bias = f"{_f(last.get('bias'), '.3g')} ({_f(last.get('bias_floor'), '.2g')})" if "bias" in last else "—"
            var = _pm(last, "variance", ".3g") if "variance" in last else "—"
            L.append(f"| {spec} | {cells} | {bias} | {var} |")
        L.append("")
    cost = res.get("cost")
    if cost:
        Ts = [str(T) for T in cost["lengths"]]
        L += ["## Cost per update as T grows", "",
              f"{cost['model']}, B={cost['B']}; the whole jit-compiled train step (estimator + Adam). "
              f"Time: median (min) of {cost['repeats']} calls after compilation, in ms. Memory: "
              f"{cost['memory_note']}.", "",
              "| estimator | " + " | ".join(f"ms T={T}" for T in Ts) + " | " +
              " | ".join(f"MiB T={T}" for T in Ts) + " |",
              "|---|" + "---:|" * (2 * len(Ts))]
        notes = []
        for spec, r in cost["results"].items():
            row = []
            for T in Ts:
                x = r.get(T, {})
                row.append(f"{1e3 * x['seconds']:.2f} ({1e3 * x.get('min_seconds', x['seconds']):.2f})"
                           if "seconds" in x else ("skip" if x else "—"))
                if x.get("note") or x.get("skipped"):
                    notes.append(f"{spec} at T={T}: {x.get('note') or x.get('skipped')}")
            for T in Ts:
                mem = _mem((r.get(T) or {}).get("memory"))
                row.append(_f(None if mem is None else mem / 2**20, ".2f"))
            L.append(f"| {spec} | " + " | ".join(row) + " |")
        if notes:
            L += [""] + [f"- {n}" for n in notes]
        seg = cost.get("segments") or {}
        if seg.get("results"):
            L += ["", f"Checkpointed BPTT at T={seg['T']}: segment length S against full BPTT "
                      f"({_f((seg.get('full_total', seg.get('full_peak')) or 0) / 2**20, '.2f')} MiB).", "",
                  "| S | ms/update, median (min) | MiB | MiB / full's |", "|---:|---:|---:|---:|"]
            for S, r in seg["results"].items():
                L.append(f"| {S} | {_f(1e3 * r['seconds'], '.2f')} ({_f(1e3 * r.get('min_seconds', r['seconds']), '.2f')}) | "
                         f"{_f((_mem(r.get('memory')) or 0) / 2**20, '.2f')} | "
                         f"{_f(r.get('ratio_to_full'), '.3f')} |")
        cs = cost.get("checkpoint_summary")
        if cs:
            dflt = ", ".join(f"{v:.3f} of full's for {k}" + (" (default S = round(sqrt(T)))"
                                                               if k == "checkpointed" else "")
                             for k, v in cs["ratio_default"].items())
            L += ["", f"At T={cs['T']} checkpointed BPTT's memory is {dflt or '—'}; the best swept "
                      f"S={cs['best_S']} gives {_f(cs['best_ratio'], '.3f')}; "
                      + (f"S in {cs['S_below_quarter']} is below 1/4." if cs["S_below_quarter"]
                         else "no swept S gets below 1/4.")]
        if cost.get("rss"):
            rs = cost["rss"]
            L += ["", f"Peak RSS (T={rs['T']}; {rs['note']}): " + ", ".join(
                f"{k} +{v['peak_growth'] / 2**20:.1f} MiB" for k, v in rs.items()
                if isinstance(v, dict) and "peak_growth" in v)]
        L.append("")
    lrn = res.get("learning")
    if lrn:
        L += ["## Learning", ""]
        for key, metric, label in (("lm", "val_ppl", "val ppl"), ("copy", "val_acc", "recall acc")):
            t = lrn.get(key)
            if not t:
                continue
            L += [f"**{t['task']}.** {t['model']}, B={t['B']}, T={t['T']}, {t['optimizer']}, up to "
                  f"{t['updates']} updates; online estimators stop after {t['online_budget_s']:g} s of "
                  f"training." + (f" Chance: loss {t['chance_loss']:.3f}, accuracy {t['chance_acc']:.3f}."
                                  if "chance_loss" in t else "")
                  + f" Final figures: {_seeds(next(iter(t['results'].values()), {}))}.", "",
                  f"| estimator | updates | {label} | val loss | train s | ms/update | note |",
                  "|---|---:|---:|---:|---:|---:|---|"]
            for spec, r in t["results"].items():
                if "skipped" in r:
                    L.append(f"| {spec} | — | — | — | — | — | skipped: {r['skipped']} |")
                    continue
                note = []
                if r["stopped_by_budget"]:
                    note.append("stopped by time budget")
                if r["nonfinite"]:
                    note.append(f"{r['nonfinite']} non-finite steps skipped")
                L.append(f"| {spec} | {r['updates_done']} | {_pm(r, metric, '.3f')} | "
                         f"{_pm(r, 'val_loss', '.3f')} | {_f(r['seconds'][-1], '.1f')} | "
                         f"{_f(1e3 * r['sec_per_update'], '.1f')} | {'; '.join(note)} |")
            L.append("")
    if res.get("plots"):
        L += ["Plots: " + ", ".join(f"`{p}`" for p in res["plots"]), ""]
    return "\n".join(L)


def plots(res: dict, out_dir: str, log=print) -> list:
    """Write the PNG plots into ``out_dir``; returns their file names ([] without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plots: matplotlib is not installed; skipping the PNGs (pip install 'jrnn[plots]')")
        return []
    files = []

    def axes_pair():  # 20 distinct colours: the default cycle repeats after 10 estimators
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax in axes:
            ax.set_prop_cycle(color=plt.cm.tab20.colors)
        return fig, axes

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        files.append(name)

    acc = res.get("accuracy")
    if acc:
        specs = [s for s, r in acc["results"].items() if "skipped" not in r]
        names = [n for n in ("init", "trained") if all(n in acc["results"][s] for s in specs)]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        w = 0.8 / max(len(names), 1)
        for j, n in enumerate(names):
            xs = [i + (j - (len(names) - 1) / 2) * w for i in range(len(specs))]
            gap = [max(1.0 - acc["results"][s][n]["cos"], 1e-8) for s in specs]
            axes[0].bar(xs, gap, w, label=n)
            rel = [max(acc["results"][s][n]["rel_err"], 1e-8) for s in specs]
            axes[1].bar(xs, rel, w, label=n)
        for ax, title in zip(axes, ("1 - cosine with full BPTT (cell params; log; exact = 1e-8)",
                                    "relative L2 error (log; exact = 1e-8)")):
            ax.set_xticks(range(len(specs)), specs, rotation=35, ha="right")
            ax.set_title(title, fontsize=10)
            ax.set_yscale("log")
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"gradient accuracy: {acc['model']}, B={acc['B']}, T={acc['T']} "
                     f"(stochastic: mean over {acc['keys']} keys)")
        save(fig, "accuracy.png")

    cost = res.get("cost")
    if cost:
        fig, axes = axes_pair()
        for spec, r in cost["results"].items():
            Ts = [int(T) for T in r if "seconds" in r[T]]
            axes[0].plot(Ts, [1e3 * r[str(T)]["seconds"] for T in Ts], "o-", label=spec)
            Tm = [int(T) for T in r if _mem(r[T].get("memory"))]
            axes[1].plot(Tm, [_mem(r[str(T)]["memory"]) / 2**20 for T in Tm], "o-", label=spec)
        seg = cost.get("segments") or {}
        for S, r in (seg.get("results") or {}).items():
            if _mem(r.get("memory")):
                axes[1].plot([seg["T"]], [_mem(r["memory"]) / 2**20], "k.", ms=4)
                axes[1].annotate(f"S={S}", (seg["T"], _mem(r["memory"]) / 2**20), fontsize=6,
                                 xytext=(3, 0), textcoords="offset points")
        for ax, yl in zip(axes, ("ms per update", "MiB (XLA buffer plan: temp + args + outputs)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T")
            ax.set_ylabel(yl)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"cost per train step: {cost['model']}, B={cost['B']} (dots: checkpointed S sweep)")
        save(fig, "cost.png")

    for key, metric, ylabel, logy in (("lm", "val_ppl", "validation perplexity", True),
                                      ("copy", "val_loss", "recall loss (nats)", False)):
        t = (res.get("learning") or {}).get(key)
        if not t:
            continue
        fig, axes = axes_pair()
        for spec, r in t["results"].items():
            if "skipped" in r:
                continue
            line, = axes[0].plot(r["updates"], r[metric], ".-", label=spec)
            axes[1].plot(r["seconds"][1:], r[metric][1:], ".-", label=spec)  # t=0 has no log position
            ci = r.get(metric + "_ci")
            if ci and any(isinstance(h, float) and math.isfinite(h) for h in ci):  # 95% CI band
                lo = [m - h for m, h in zip(r[metric], ci)]
                hi = [m + h for m, h in zip(r[metric], ci)]
                axes[0].fill_between(r["updates"], lo, hi, color=line.get_color(), alpha=0.15, lw=0)
                axes[1].fill_between(r["seconds"][1:], lo[1:], hi[1:], color=line.get_color(),
                                     alpha=0.15, lw=0)
        if "chance_loss" in t:
            for ax in axes:
                ax.axhline(t["chance_loss"], color="gray", ls=":", lw=1, label="chance")
        axes[0].set_xlabel("updates")
        axes[1].set_xlabel("training wall-clock seconds (log)")
        axes[1].set_xscale("log")
        for ax in axes:
            ax.set_ylabel(ylabel)
            if logy:
                ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{t['title']}: {t['model']}, B={t['B']}, T={t['T']}, {t['optimizer']}", fontsize=10)
        save(fig, f"learning_{key}.png")
    return files


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not os.path.isfile(os.path.join(argv[0], "results.json")):
        print("usage: bptt_variants_report.py DIR   (DIR holds results.json)", file=sys.stderr)
        return 2
    out = argv[0]
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    res["plots"] = plots(res, out, lambda msg: print(msg, file=sys.stderr))
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(res) + "\n")
    print(f"wrote {out}/results.md" + "".join(f", {p}" for p in res["plots"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
