"""The documentation's results page (docs/results.md) and its plots, generated from benchmarks/results/.

    python benchmarks/results_page.py              # writes docs/results.md and docs/results/*.png
    python benchmarks/results_page.py --check      # exit 1 when docs/results.md is not what the results give

Current figures only: the quality of every method per set from the same runs (benchmarks/strongest_baseline.sh
and benchmarks/anomalib_peer.py), quality against a training budget, and time per stage on 2 CPU cores. How
each figure came about, and the older ones, are in docs/studies.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
QUALITY = RESULTS / "strongest_baseline"
PAGE = REPO / "docs" / "results.md"
PLOTS = REPO / "docs" / "results"
SETS = ("tire", "grid", "hazelnut_toy")
METHODS = {
    "patchcore": "PatchCore, 10% coreset",
    "d3ad": "D3AD `s`",
    "d3ad-imagenet": "D3AD `s` with ImageNet features (`--set d3ad.adapt=false` at export)",
    "d3ad-scratch": "D3AD `s`, from-scratch autoencoder",
    "diad": "DiAD `s`, 30-minute budget",
}
VARIANTS = {"": "fused", "w0": "reconstruction only", "w1": "kNN only"}
ANOMALIB = {"patchcore": "anomalib PatchCore, 10% coreset", "padim": "anomalib PaDiM"}
NORMALISATION = {"lite0": "the weights' normalisation", "imagenet": "anomalib's default normalisation"}


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def quality_rows(name: str) -> list[dict]:
    """One row per configuration evaluated on the set: edgead's reports, then anomalib's."""
    rows = []
    for path in sorted(QUALITY.glob(f"{name}-*.json")):
        stem = path.stem[len(name) + 1 :]
        if stem.startswith("export"):
            continue
        match = re.fullmatch(r"(.+?)(?:-(w0|w1))?", stem)
        method, variant = match.group(1), match.group(2) or ""
        if method not in METHODS:
            continue
        r = _load(path)
        export = QUALITY / f"export-{name}-{method}.json"
        weight = _load(export).get("fusion", {}).get("knn_weight") if export.is_file() and not variant else None
        label = METHODS[method] + (f", {VARIANTS[variant]}" if method != "patchcore" else "")
        if weight is not None:
            label += f" (kNN weight {weight:g})"
        op = r["at_calibrated_threshold"]
        rows.append(
            {
                "label": label,
                "method": method,
                "variant": variant,
                "image_auroc": r["image"]["auroc"],
                "pixel_auroc": r["pixel"]["auroc"],
                "pixel_ap": r["pixel"]["ap"],
                "aupro": r["pixel"]["aupro_0.3"],
                "frr": op["false_reject_rate"],
                "miss": op["miss_rate"],
                "per_defect": r.get("per_defect_auroc", {}),
            }
        )
    order = list(METHODS)
    rows.sort(key=lambda r: (order.index(r["method"]), list(VARIANTS).index(r["variant"])))
    for path in sorted((QUALITY / "anomalib").glob(f"{name}-*.json")):
        r = _load(path)
        model = r["model"].split()[-1]
        rows.append(
            {
                "label": f"{ANOMALIB[model]} ({NORMALISATION[r['pre_processing']]})",
                "method": "anomalib",
                "variant": "",
                "image_auroc": r["image_auroc"],
                "pixel_auroc": r["pixel_auroc"],
                "pixel_ap": r["pixel_ap"],
                "aupro": r["aupro"],
                "frr": None,
                "miss": None,
                "per_defect": r.get("image_auroc_per_defect", {}),
            }
        )
    return rows


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def quality_table(name: str, rows: list[dict]) -> list[str]:
    defects = sorted({d for r in rows for d in r["per_defect"]})
    best = {k: max(r[k] for r in rows) for k in ("image_auroc", "aupro")}
    lines = [
        f"### {name}",
        "",
        "| configuration | image AUROC | pixel AUROC | pixel AP | AUPRO@0.3 | false rejects / misses | "
        + " | ".join(f"{d} (image AUROC)" for d in defects)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(defects),
    ]
    for r in rows:
        image = _f(r["image_auroc"])
        pro = _f(r["aupro"])
        image = f"**{image}**" if r["image_auroc"] == best["image_auroc"] else image
        pro = f"**{pro}**" if r["aupro"] == best["aupro"] else pro
        op = "–" if r["frr"] is None else f"{r['frr']:.0%} / {r['miss']:.0%}"
        lines.append(
            f"| {r['label']} | {image} | {_f(r['pixel_auroc'])} | {_f(r['pixel_ap'])} | {pro} | {op} | "
            + " | ".join(_f(r["per_defect"].get(d)) for d in defects)
            + " |"
        )
    return lines + [""]


def budget_points() -> list[dict]:
    """(method, machine, minutes, image AUROC, AUPRO) of the tire runs trained to a time budget."""
    points = []
    for folder, machine in (("budget", "CPU"), ("budget_fill", "CPU"), ("budget_gpu", "H100")):
        for path in sorted((RESULTS / folder).glob("tire-*-*min*.report.json")):
            m = re.search(r"tire-(d3ad|diad)-s-(\d+)min(-fill|-gpu(-bank)?)?\.report", path.name)
            if (
                m is None
                or "half" in path.name
                or (m.group(2) and machine == "H100" and m.group(1) == "diad" and not m.group(4))
            ):
                continue  # DiAD on the H100: the rows with the patch bank refitted are the current code's
            r = _load(path)
            points.append(
                {
                    "method": m.group(1),
                    "machine": machine,
                    "minutes": int(m.group(2)),
                    "image_auroc": r["image"]["auroc"],
                    "aupro": r["pixel"]["aupro_0.3"],
                }
            )
    return sorted(points, key=lambda p: (p["method"], p["machine"], p["minutes"]))


SPEED_PARTS = (
    "preprocess",
    "feature_extractor",
    "prior",
    "encoder",
    "hint_encoder",
    "denoiser_step",
    "decoder",
    "segmenter",
    "knn",
    "orchestration",
    "postprocess",
)


def speed_rows() -> list[dict]:
    """Per-stage medians of ``benchmarks/line_speed.py``: the rows of one file were timed side by side."""
    rows = []
    for name in ("tire_cpu", "methods_cpu"):
        path = RESULTS / "line_speed" / f"{name}.json"
        if not path.is_file():
            continue
        for label, b in _load(path)["bundles"].items():
            if name == "methods_cpu" and label.startswith("D3AD"):
                continue  # the D3AD of this run is only its reference
            parts = dict(b["parts_median_ms"])
            if "sampling_loop" in parts:  # DiAD: the denoiser's share of its loop is denoiser_step
                parts["orchestration"] = (
                    parts.get("orchestration", 0.0) + parts.pop("sampling_loop") - parts["denoiser_step"]
                )
            rows.append({"label": label, "parts": {**parts, "total": b["median_ms"]}})
    return rows


def page(plots: bool) -> str:
    lines = [
        "# Results",
        "",
        "Current figures, generated by `benchmarks/results_page.py` from `benchmarks/results/`; how each came",
        "about, and older figures, are in the [studies](studies.md). Every quality row is one bundle evaluated",
        "on the set's test images through the CPU runtime (`edgead evaluate`); thresholds, normalisation and",
        "fusion weights come from anomaly-free images only, never test images. Bold: the best of the set.",
        "",
        "## Quality per set",
        "",
        "Trained on 2 CPU cores one after another, exported and evaluated by `benchmarks/strongest_baseline.sh",
        "../shared/data RUNS OUT`; anomalib by `benchmarks/anomalib_peer.py` with the same ImageNet weights,",
        "scored by edgead's metric code. \"False rejects / misses\" are at the bundle's default threshold (from",
        "its held-out good images and, for PatchCore, D3AD and DiAD, its training images scored as unseen by the",
        "kNN term; before any `edgead calibrate`). DiAD: one run, on hazelnut_toy.",
        "",
        "![image AUROC and AUPRO per set](results/quality.png)" if plots else "",
        "",
    ]
    for name in SETS:
        rows = quality_rows(name)
        if rows:
            lines += quality_table(name, rows)
    points = budget_points()
    if points:
        lines += [
            "## Quality against a training budget (tire)",
            "",
            "`edgead train --preset s --max-minutes M` (with `--fill-budget` from 16 minutes on the CPU and on",
            "the H100), edgead 0.4–0.8; the kNN term of these runs is the 1% pool-first one of before 0.9.",
            "",
            "![quality against budget](results/budget.png)" if plots else "",
            "",
            "| method | machine | minutes | image AUROC | AUPRO@0.3 |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['method']} | {p['machine']} | {p['minutes']} | {_f(p['image_auroc'])} | {_f(p['aupro'])} |"
            for p in points
        ]
        lines.append("")
    speeds = speed_rows()
    if speeds:
        parts = [k for k in SPEED_PARTS if any(k in r["parts"] for r in speeds)]
        lines += [
            "## Time per stage (2 CPU cores, batch 1, one tire frame)",
            "",
            "Median milliseconds per part, 2026-12-08: `python benchmarks/line_speed.py LABEL=BUNDLE[:int8] ...",
            "--images ../shared/data/tire/test/good` loads the bundles in one process and times them alternately on",
            "the same frames. The first six rows are one such run (PatchCore and D3AD with the 10% bank searched",
            "exactly and through cells; D3AD with 5 sampler steps and INT8 of the stages export accepts); DiAD",
            "(trained on hazelnut_toy, 10 and 5 steps) and DiffusionAD `s` (2 training steps: the time of its graphs,",
            "not its quality) are a second run: 1.50x, 1.37x and 3.4x the time of D3AD timed beside them. This",
            "machine's speed drifts by up to 20% between runs minutes apart; the ratios within a run hold (D3AD",
            "5 steps INT8 against D3AD: 1.60x to 1.62x in four runs). Quality beside each in",
            "[studies §17](studies.md).",
            "",
            "![time per stage](results/speed.png)" if plots else "",
            "",
            "| configuration | " + " | ".join(parts) + " | total |",
            "|---|" + "---|" * (len(parts) + 1),
        ]
        lines += [
            f"| {s['label']} | "
            + " | ".join(_f(s["parts"].get(k), 1) for k in parts)
            + f" | {_f(s['parts'].get('total'), 1)} |"
            for s in speeds
        ]
        lines.append("")
    return "\n".join(line for line in lines) + "\n"


def draw(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(SETS), figsize=(4.2 * len(SETS), 4.2), sharey=True)
    for ax, name in zip(axes, SETS):
        rows = [r for r in quality_rows(name) if r["variant"] in ("", "w1")]
        labels = [r["label"].replace("anomalib ", "anomalib\n").split(" (")[0] for r in rows]
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [r["image_auroc"] for r in rows], 0.4, label="image AUROC")
        ax.bar([i + 0.2 for i in x], [r["aupro"] for r in rows], 0.4, label="AUPRO@0.3")
        ax.set_xticks(list(x), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(name)
        ax.set_ylim(0.4, 1.0)
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path / "quality.png", dpi=90)
    plt.close(fig)
    points = budget_points()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for metric, ax in zip(("image_auroc", "aupro"), axes):
        for key in sorted({(p["method"], p["machine"]) for p in points}):
            series = [p for p in points if (p["method"], p["machine"]) == key]
            ax.plot([p["minutes"] for p in series], [p[metric] for p in series], marker="o", label=" ".join(key))
        ax.set_xscale("log")
        ax.set_xlabel("training budget (minutes)")
        ax.set_title(metric.replace("_", " "))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path / "budget.png", dpi=90)
    plt.close(fig)
    speeds = speed_rows()
    fig, ax = plt.subplots(figsize=(9.5, 3.4))
    parts = [k for k in SPEED_PARTS if any(k in r["parts"] for r in speeds)]
    colours = dict(zip(parts, plt.get_cmap("tab20").colors))
    for i, s in enumerate(speeds):
        left = 0.0
        for k in parts:
            v = s["parts"].get(k, 0.0)
            ax.barh(i, v, left=left, color=colours[k], label=k if i == 0 else None)
            left += v
    ax.set_yticks(range(len(speeds)), [s["label"] for s in speeds], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per frame")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path / "speed.png", dpi=90)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="Compare docs/results.md with what the results give.")
    a = p.parse_args()
    text = page(plots=True)
    if a.check:
        if PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python benchmarks/results_page.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    draw(PLOTS)
    print(f"wrote {PAGE} and {PLOTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
