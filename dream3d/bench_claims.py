"""Published claims about score-distillation objectives, checked against a bench's results, and
the "Which guidance should I use?" advice drawn from the same table (results.md, README).

Each claim compares claimed-better methods with a baseline on one measured quantity. Outcomes:
"reproduced" (better by more than the margin), "refuted" (worse by more than the margin),
"no difference" (within the margin), "not measured" (a method or the quantity is missing).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Claim:
    text: str
    source: str
    methods: tuple[str, ...]
    baseline: str
    quantity: str  # diversity | janus | sharpness | saturation
    margin: float


# quantity -> (what is compared, higher is better)
QUANTITIES = {
    "diversity": ("Vendi score of the mean colours over seeds (\"a cube\")", True),
    "janus": ("Janus rate (\"a blue cube with a yellow front\", no view conditioning)", False),
    "sharpness": ("sharpness (RMS image gradient over the truth's; above 1 is noise), mean over fidelity runs", True),
    "saturation": ("saturation error (distance from the truth's), mean over fidelity runs", False),
}

CLAIMS = [
    Claim("VSD is more diverse than SDS", "ProlificDreamer (Wang et al. 2023)", ("vsd",), "sds", "diversity", 0.05),
    Claim("ESD has fewer Janus faces than VSD", "Wang et al. 2024, Taming Mode Collapse", ("esd",), "vsd", "janus",
          0.19),  # 0.2 = one of the five back views
    Claim("ESD has fewer Janus faces than SDS", "Wang et al. 2024, Taming Mode Collapse", ("esd",), "sds", "janus",
          0.19),
    Claim("ESD is more diverse than VSD", "Wang et al. 2024, Taming Mode Collapse", ("esd",), "vsd", "diversity", 0.05),
    Claim("Jensen-Shannon and forward-KL distribution matching cover modes better than reverse KL (VSD)",
          "Xu et al. 2025, one-step diffusion by f-divergence", ("fdiv", "fdiv-fkl"), "vsd", "diversity", 0.05),
    Claim("ISM is sharper than SDS", "LucidDreamer (Liang et al. 2024)", ("ism",), "sds", "sharpness", 0.05),
    Claim("TSM is sharper than SDS", "DreamerXL (Miao et al. 2024)", ("tsm",), "sds", "sharpness", 0.05),
    Claim("BSD is less over-saturated than SDS", "PlacidDreamer (Huang et al. 2024)", ("bsd",), "sds", "saturation",
          0.01),
]


def quantity(summary: list[dict], method: str, name: str) -> float | None:
    """One method's value of a quantity from a results summary (averaged over its scenes)."""
    rows = [r for r in summary if r["method"] == method]
    if name == "diversity":
        values = [r["diversity"]["vendi"] for r in rows if r.get("diversity")]
    elif name == "janus":
        values = [r["janus_rate"] for r in rows if r.get("janus_rate") is not None]
    else:
        key = {"sharpness": "sharpness", "saturation": "saturation_error"}[name]
        values = [r[vc][key] for r in rows for vc in ("none", "camera") if vc in r and r[vc].get(key) is not None]
    return float(np.mean(values)) if values else None


def check(claim: Claim, summary: list[dict]) -> dict:
    """The claim's outcome with the numbers it rests on."""
    _, higher_better = QUANTITIES[claim.quantity]
    base = quantity(summary, claim.baseline, claim.quantity)
    values = {m: quantity(summary, m, claim.quantity) for m in claim.methods}
    if base is None or any(v is None for v in values.values()):
        outcome = "not measured"
    else:
        gains = [(v - base) if higher_better else (base - v) for v in values.values()]
        if all(g > claim.margin for g in gains):
            outcome = "reproduced"
        elif all(g < -claim.margin for g in gains):
            outcome = "refuted"
        elif all(abs(g) <= claim.margin for g in gains):
            outcome = "no difference"
        else:
            outcome = "mixed"
    return {"claim": claim.text, "source": claim.source, "quantity": claim.quantity, "outcome": outcome,
            "baseline": {claim.baseline: base}, "methods": values, "margin": claim.margin}


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def claims_markdown(summary: list[dict]) -> str:
    lines = ["| published claim | source | compared | numbers | ToyWorld says |", "|---|---|---|---|---|"]
    for claim in CLAIMS:
        c = check(claim, summary)
        numbers = ", ".join(f"{m} {_num(v)}" for m, v in {**c["methods"], **c["baseline"]}.items())
        lines.append(f"| {claim.text} | {claim.source} | {QUANTITIES[claim.quantity][0]} | {numbers} | "
                     f"**{c['outcome']}** (margin {claim.margin:g}) |")
    return "\n".join(lines) + "\n"


def advice_markdown(summary: list[dict]) -> str:
    """Best methods per scene on the fidelity prompt, from the table."""
    lines = []
    for scene in dict.fromkeys(r["scene"] for r in summary):
        rows = [r for r in summary if r["scene"] == scene]
        for vc, label in (("camera", "with view conditioning (`prior.view_conditioning=camera`)"),
                          ("none", "without view conditioning (the hard setting)")):
            scored = [(r[vc]["silhouette_iou"], r[vc]["colour_error"], r["method"]) for r in rows if vc in r]
            if not scored:
                continue
            top = sorted(scored, key=lambda s: (-s[0], s[1]))[:3]
            best_colour = min(scored, key=lambda s: s[1])
            lines.append(f"- {scene}, {label}: best silhouettes "
                         + ", ".join(f"{m} (IoU {iou:.3f}, colour error {err:.3f})" for iou, err, m in top)
                         + f"; best colour {best_colour[2]} ({best_colour[1]:.3f}).")
        fast = [(r["camera"]["to_iou_0.9"]["seconds"], r["camera"]["to_iou_0.9"]["step"], r["method"]) for r in rows
                if "camera" in r and r["camera"].get("to_iou_0.9")]
        if fast:
            s, step, m = min(fast)
            lines.append(f"- {scene}: fastest to IoU 0.9 (camera conditioning): {m} ({s:.1f} s of training, step {step}); "
                         f"{len(fast)} of {len([r for r in rows if 'camera' in r])} methods reach it.")
    return "\n".join(lines) + "\n"
