"""The outputs of compare_simpleitk.py: results.md (the tables and the check of the issue's
target per pair), tre_vs_time.png, results.json, and the merge of earlier runs (``--merge``)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger("compare_simpleitk")


def fmt(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown(results: dict) -> str:
    m = results["machine"]
    load = m.get("load_average_at_start")
    runs = results.get("runs")
    lines = (
        [
            f"Merged from {len(runs)} runs: "
            + "; ".join(
                f"`{r['command']}` ({r['date']}, ctreg {r['machine'].get('ctreg_git') or '?'})"
                for r in runs
            )
            + ".",
            "",
        ]
        if runs
        else []
    )
    lines += [
        f"Machine: {m['cpu']}, {m['cores']} cores; {m['threads']} threads per method"
        + (f"; load average {load:.1f} at start" if load is not None else "")
        + ". "
        f"ctreg {m['versions'].get('ctreg', '?')} ({m.get('ctreg_git') or 'no git'}), "
        f"SimpleITK {m['versions'].get('SimpleITK', '?')}. "
        f"Command: `{results['command']}` ({results['date']}).",
        "",
    ]
    head = (
        "| pair | method | time s | peak RSS MB | TRE mean | median | p95 | max mm | NCC body "
        "| % J≤0 | SD log J |"
    )
    for pair_name, rows in results["pairs"].items():
        info = results["pair_info"].get(pair_name, {})
        extra = f" — {info['n_landmarks']} landmarks" if info.get("n_landmarks") else ""
        lines += [f"**{pair_name}**{extra}", "", head, "|" + "---|" * 11]
        for name, r in rows.items():
            if r.get("status") != "ok":
                lines.append(f"| {pair_name} | {name} | {r.get('status')} |" + " |" * 8)
                continue
            t = r["time_s"]
            lines.append(
                f"| {pair_name} | {name} | {fmt(t, 2 if t < 10 else 1)} | "
                f"{fmt(r['peak_rss_mb'], 0)} | "
                f"{fmt(r['tre_mean_mm'])} | {fmt(r['tre_median_mm'])} | "
                f"{fmt(r['tre_p95_mm'])} | "
                f"{fmt(r['tre_max_mm'])} | {fmt(r['ncc_body'], 4)} | "
                f"{fmt(r['jacobian_nonpositive_pct'], 3)} | {fmt(r['log_jacobian_sd'], 3)} |"
            )
        setups = [
            f"{name} {r['setup_s']:.2f} s"
            for name, r in rows.items()
            if r.get("status") == "ok" and r.get("setup_s") is not None
        ]
        spreads = [
            f"{name} {min(r['time_runs_s']):.2f}-{max(r['time_runs_s']):.2f} s"
            for name, r in rows.items()
            if r.get("status") == "ok" and len(r.get("time_runs_s") or []) > 1
        ]
        lines += [""] + [f"- {v}" for v in verdict(rows)]
        if spreads:
            n = max(len(r.get("time_runs_s") or []) for r in rows.values())
            lines.append(
                f"- time: median of {n} runs, each in a fresh process; range " + ", ".join(spreads)
            )
        if setups:
            lines.append(
                "- untimed start-up, like an import (ctreg: Numba kernels loaded from its cache): "
                + ", ".join(setups)
            )
        lines += [""]
    return "\n".join(lines)


def verdict(rows: dict) -> list[str]:
    """The issue's target, checked honestly: lower TRE than every SimpleITK recipe, >= 10x faster
    than the SimpleITK recipe with the best TRE, no folding."""
    ok = {
        k: r
        for k, r in rows.items()
        if r.get("status") == "ok" and r.get("tre_mean_mm") is not None
    }
    ours = {k: r for k, r in ok.items() if k.startswith("ctreg-")}
    theirs = {k: r for k, r in ok.items() if k.startswith("sitk-")}
    if not ours or not theirs:
        return ["target not checked (needs a ctreg and a SimpleITK row with landmarks)"]
    best_sitk = min(theirs, key=lambda k: theirs[k]["tre_mean_mm"])
    out = [
        f"best SimpleITK recipe: {best_sitk} (TRE {theirs[best_sitk]['tre_mean_mm']:.2f} mm, "
        f"{theirs[best_sitk]['time_s']:.1f} s)"
    ]
    for k, r in ours.items():
        lower = all(r["tre_mean_mm"] < t["tre_mean_mm"] for t in theirs.values())
        speed = theirs[best_sitk]["time_s"] / max(r["time_s"], 1e-9)
        folds = r["jacobian_nonpositive_pct"] > 0
        met = lower and speed >= 10 and not folds
        out.append(
            f"{k}: TRE {r['tre_mean_mm']:.2f} mm ({'lower' if lower else 'NOT lower'} than every "
            f"SimpleITK recipe), {speed:.1f}x the speed of {best_sitk}, "
            f"{'folding' if folds else 'no folding'} -> target {'met' if met else 'NOT met'}"
        )
    return out


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no plot (pip install '.[bench]')")
        return False
    pairs = list(results["pairs"])
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.5), squeeze=False)
    for ax, pair_name in zip(axes[0], pairs):
        for name, r in results["pairs"][pair_name].items():
            if (
                r.get("status") != "ok"
                or r.get("tre_mean_mm") is None
                or name in ("true-field", "identity")
            ):
                continue
            style = "o" if name.startswith("ctreg") else "s" if name.startswith("sitk") else "^"
            ax.scatter(max(r["time_s"], 1e-2), r["tre_mean_mm"], marker=style, s=50)
            ax.annotate(
                name,
                (max(r["time_s"], 1e-2), r["tre_mean_mm"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"wall time, s ({results['machine']['threads']} threads)")
        ax.set_ylabel("mean TRE, mm")
        initial = results["pairs"][pair_name].get("identity", {}).get("tre_mean_mm")
        ax.set_title(
            pair_name + (f" (initial TRE {initial:.1f} mm)" if initial is not None else "")
        )
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def merge_results(paths: list[Path], argv: list[str]) -> dict:
    """One results dict from several runs; each row keeps a ``run`` field naming its run."""
    merged = {
        "command": "python benchmarks/compare_simpleitk.py " + " ".join(argv),
        "runs": [],
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "pairs": {},
        "pair_info": {},
        "skipped": {},
    }
    for path in paths:
        res = json.loads(path.read_text())
        merged["runs"].append(
            {
                "file": str(path),
                "command": res["command"],
                "date": res["date"],
                "machine": res["machine"],
            }
        )
        merged["machine"] = res["machine"]
        merged["pair_info"].update(res["pair_info"])
        merged["skipped"].update(res.get("skipped", {}))
        for pair_name, rows in res["pairs"].items():
            for name, row in rows.items():
                kept = merged["pairs"].setdefault(pair_name, {})
                if str(row.get("status", "")).startswith("skipped") and name in kept:
                    continue  # a method not installed in a later run keeps its earlier row
                kept[name] = {**row, "run": res["date"]}
                if not str(row.get("status", "")).startswith("skipped"):
                    merged["skipped"].pop(name, None)
    return merged


def write_outputs(results: dict, out_root: Path) -> int:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = out_root / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    md = markdown(results)
    if results["skipped"]:
        md += "\nSkipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items()) + "\n"
    (out_dir / "results.md").write_text(md)
    plot(results, out_dir / "tre_vs_time.png")
    latest = out_root / "latest"
    if latest.exists():
        shutil.rmtree(latest)
    shutil.copytree(out_dir, latest)
    print(md)
    print(f"\nwritten: {out_dir}/results.json, results.md, tre_vs_time.png (and {latest}/)")
    return 0
