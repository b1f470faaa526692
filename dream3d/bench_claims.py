"""Published claims about score-distillation objectives, checked against a bench's results, and
the "Which guidance should I use?" advice drawn from the same table (results.md, README).

Each claim compares claimed-better methods with a baseline on one measured quantity, decided from
the spread over seeds rather than a fixed margin: with gain g (positive = better as claimed) and
its standard error se = sqrt(se_method^2 + se_baseline^2), z = g / se, compared with the two-sided
95% quantile of Student's t with n - 1 degrees of freedom, n the fewer seeds of the two (a
conservative Welch test: 4.30 at 3 seeds, 2.36 at 8). Outcomes: "reproduced" (z above it for every
claimed method), "refuted" (below minus it for every one), "no difference" (within it for every
one), "mixed" (otherwise), "too few seeds" (fewer than MIN_SEEDS on either side), "not measured"
(a method or the quantity is missing). Equal values with no spread (e.g. Janus rates all 0) are "no
difference"; different values with no spread over >= MIN_SEEDS seeds each are decided.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_SEEDS = 3  # per side, before a claim is decided either way


def t_threshold(seeds: int) -> float:
    """The two-sided 95% quantile of Student's t with seeds - 1 degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, seeds - 1))


@dataclass(frozen=True)
class Claim:
    text: str
    source: str
    methods: tuple[str, ...]
    baseline: str
    quantity: str  # diversity | janus | sharpness | saturation


# quantity -> (what is compared, higher is better)
QUANTITIES = {
    "diversity": ("Vendi score of the mean colours over seeds (\"a cube\")", True),
    "janus": ("Janus rate (\"a blue cube with a yellow front\", no view conditioning)", False),
    "sharpness": ("sharpness (RMS image gradient over the truth's; above 1 is noise), mean over fidelity runs", True),
    "saturation": ("saturation error (distance from the truth's), mean over fidelity runs", False),
}

CLAIMS = [
    Claim("VSD is more diverse than SDS", "ProlificDreamer (Wang et al. 2023)", ("vsd",), "sds", "diversity"),
    Claim("ESD has fewer Janus faces than VSD", "Wang et al. 2024, Taming Mode Collapse", ("esd",), "vsd", "janus"),
    Claim("ESD has fewer Janus faces than SDS", "Wang et al. 2024, Taming Mode Collapse", ("esd",), "sds", "janus"),
    Claim("ESD is more diverse than VSD", "Wang et al. 2024, Taming Mode Collapse", ("esd",), "vsd", "diversity"),
    Claim("Jensen-Shannon and forward-KL distribution matching cover modes better than reverse KL (VSD)",
          "Xu et al. 2025, one-step diffusion by f-divergence", ("fdiv", "fdiv-fkl"), "vsd", "diversity"),
    Claim("ISM is sharper than SDS", "LucidDreamer (Liang et al. 2024)", ("ism",), "sds", "sharpness"),
    Claim("TSM is sharper than SDS", "DreamerXL (Miao et al. 2024)", ("tsm",), "sds", "sharpness"),
    Claim("BSD is less over-saturated than SDS", "PlacidDreamer (Huang et al. 2024)", ("bsd",), "sds", "saturation"),
]


@dataclass(frozen=True)
class Estimate:
    """A quantity's mean, its standard error (None when the seeds cannot give one) and its seeds."""

    mean: float
    se: float | None
    seeds: int


def _se(std: float | None, seeds: int) -> float | None:
    """Standard error of a mean over seeds (None below two seeds)."""
    return None if std is None or seeds < 2 else std / math.sqrt(seeds)


def _cells(cells: list[tuple[float | None, float | None, int]]) -> Estimate | None:
    """The mean over cells (mean, standard error, seeds) of their means, with se = sqrt(sum se^2) / cells
    (cells are independent runs)."""
    cells = [c for c in cells if c[0] is not None]
    if not cells:
        return None
    ses = [c[1] for c in cells]
    se = None if any(e is None for e in ses) else math.sqrt(sum(e * e for e in ses)) / len(cells)
    return Estimate(float(np.mean([c[0] for c in cells])), se, min(c[2] for c in cells))


def quantity(summary: list[dict], method: str, name: str) -> Estimate | None:
    """One method's estimate of a quantity from a results summary (averaged over its cells)."""
    rows = [r for r in summary if r["method"] == method]
    if name == "diversity":  # the Vendi score's bootstrap spread over seeds is its standard error
        return _cells([(d["vendi"], d.get("vendi_std"), d.get("seeds", 1)) for r in rows if (d := r.get("diversity"))])
    if name == "janus":
        return _cells([(r["janus_rate"], _se(r.get("janus_std"), r.get("janus_seeds", 1)), r.get("janus_seeds", 1))
                       for r in rows if r.get("janus_rate") is not None])
    key = {"sharpness": "sharpness", "saturation": "saturation_error"}[name]
    return _cells([(r[vc][key], _se(r[vc].get(f"{key}_std"), r[vc].get("seeds", 1)), r[vc].get("seeds", 1))
                   for r in rows for vc in ("none", "camera") if vc in r and r[vc].get(key) is not None])


def compare(v: Estimate, base: Estimate, higher_better: bool) -> tuple[float, float, int] | None:
    """(z, threshold, decision) for v against base: z = gain / combined standard error, threshold the
    95% t quantile for the fewer seeds, decision +1 (better), -1 (worse) or 0 (within the spread);
    None with fewer than MIN_SEEDS seeds or no spread on either side."""
    if v.se is None or base.se is None or min(v.seeds, base.seeds) < MIN_SEEDS:
        return None
    gain = (v.mean - base.mean) if higher_better else (base.mean - v.mean)
    se = math.hypot(v.se, base.se)
    z = gain / se if se > 0 else (0.0 if gain == 0 else math.copysign(math.inf, gain))
    threshold = t_threshold(min(v.seeds, base.seeds))
    return z, threshold, 0 if abs(z) <= threshold else int(math.copysign(1, z))


def check(claim: Claim, summary: list[dict]) -> dict:
    """The claim's outcome with the numbers it rests on: each claimed method's gain over the baseline
    (positive = better as claimed), its standard error and z = gain / se."""
    _, higher_better = QUANTITIES[claim.quantity]
    base = quantity(summary, claim.baseline, claim.quantity)
    values = {m: quantity(summary, m, claim.quantity) for m in claim.methods}
    out = {"claim": claim.text, "source": claim.source, "quantity": claim.quantity,
           "baseline": {claim.baseline: base and base.mean}, "methods": {m: v and v.mean for m, v in values.items()},
           "spread": {m: v and v.se for m, v in {**values, claim.baseline: base}.items()}, "z": {}}
    if base is None or any(v is None for v in values.values()):
        return {**out, "outcome": "not measured"}
    decided = []  # +1 better, -1 worse, 0 within the spread, per claimed method
    for m, v in values.items():
        test = compare(v, base, higher_better)
        if test is None:
            return {**out, "outcome": "too few seeds"}
        z, threshold, decision = test
        out["z"][m] = round(z, 2) if math.isfinite(z) else z
        out.setdefault("threshold", {})[m] = round(threshold, 2)
        decided.append(decision)
    if all(d == 1 for d in decided):
        outcome = "reproduced"
    elif all(d == -1 for d in decided):
        outcome = "refuted"
    elif all(d == 0 for d in decided):
        outcome = "no difference"
    else:
        outcome = "mixed"
    return {**out, "outcome": outcome}


def _num(v: float | None, se: float | None = None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" + ("" if se is None else f" ± {se:.3f}")


def claims_markdown(summary: list[dict]) -> str:
    lines = ["Numbers: mean ± standard error over seeds; z = gain / combined standard error, decided where |z| exceeds "
             "the 95% t quantile for the fewer seeds of the two (in brackets); at least "
             f"{MIN_SEEDS} seeds per side.", "",
             "| published claim | source | compared | numbers | z (threshold) | ToyWorld says |", "|---|---|---|---|---|---|"]
    for claim in CLAIMS:
        c = check(claim, summary)
        numbers = ", ".join(f"{m} {_num(v, c['spread'].get(m))}" for m, v in {**c["methods"], **c["baseline"]}.items())
        zs = ", ".join((f"{m} {z:+.1f}" if math.isfinite(z) else f"{m} {z}") + f" ({c['threshold'][m]:.2f})"
                       for m, z in c["z"].items()) or "-"
        lines.append(f"| {claim.text} | {claim.source} | {QUANTITIES[claim.quantity][0]} | {numbers} | {zs} | "
                     f"**{c['outcome']}** |")
    return "\n".join(lines) + "\n"


def _cell_estimate(cell: dict, key: str) -> Estimate:
    seeds = cell.get("seeds", 1)
    return Estimate(cell[key], _se(cell.get(f"{key}_std"), seeds), seeds)


def _ranked(rows: list[dict], vc: str, key: str, higher_better: bool) -> str:
    """The best method on one fidelity quantity, then the others the seeds cannot tell from it (its
    spread, `compare`), best first; methods with too few seeds to tell are left out of the second list."""
    cells = sorted(((r["method"], _cell_estimate(r[vc], key)) for r in rows if vc in r and r[vc].get(key) is not None),
                   key=lambda c: -c[1].mean if higher_better else c[1].mean)
    if not cells:
        return "not measured"
    (best, b), rest = cells[0], cells[1:]
    se = f" ± {b.se:.3f}" if b.se is not None else ""
    text = f"{best} ({b.mean:.3f}{se}, {b.seeds} seed{'' if b.seeds == 1 else 's'})"
    tied = [(m, e) for m, e in rest if (t := compare(e, b, higher_better)) is not None and t[2] == 0]
    if tied:
        text += "; as good within the spread: " + ", ".join(f"{m} ({e.mean:.3f})" for m, e in tied)
    elif b.se is None or b.seeds < MIN_SEEDS:
        text += "; too few seeds (or no spread) to tell the others from it"
    return text


def advice_markdown(summary: list[dict]) -> str:
    """Best methods per scene on the fidelity prompt, from the table; methods the seeds cannot tell
    from the best (the claims' test, `compare`) are named with it, so the advice does not rest on a
    difference smaller than the spread."""
    lines = []
    for scene in dict.fromkeys(r["scene"] for r in summary):
        rows = [r for r in summary if r["scene"] == scene]
        for vc, label in (("camera", "with view conditioning (`prior.view_conditioning=camera`)"),
                          ("none", "without view conditioning (the hard setting)")):
            if not any(vc in r for r in rows):
                continue
            lines.append(f"- {scene}, {label}: best silhouette IoU {_ranked(rows, vc, 'silhouette_iou', True)}. "
                         f"Best colour error {_ranked(rows, vc, 'colour_error', False)}.")
        fast = [(r["camera"]["to_iou_0.9"]["seconds"], r["camera"]["to_iou_0.9"]["step"], r["method"]) for r in rows
                if "camera" in r and r["camera"].get("to_iou_0.9")]
        if fast:
            s, step, m = min(fast)
            lines.append(f"- {scene}: fastest to IoU 0.9 (camera conditioning): {m} ({s:.1f} s of training, step {step}); "
                         f"{len(fast)} of {len([r for r in rows if 'camera' in r])} methods reach it.")
    return "\n".join(lines) + "\n"
