"""`dream3d bench`: a tiny suite end to end, the results schema, and the metrics on known inputs."""
import json
from pathlib import Path

import pytest
import torch

from dream3d.bench import diversity, janus_rate, run_suite, validate_results
from dream3d.cli import main

TINY = ["train.steps=4", "train.batch_size=2", "train.resolution=16", "prior.num_views=64",
        "prior.dataset_resolution=32", "prior.resolution=16", "eval.resolution=16", "eval.num_cameras=2",
        "eval.volume_resolution=16", "output.export.resolution=32",
        "output.export.texture_size=64", "output.val_resolution=16", "output.val_every=4",
        "output.checkpoint_every=4"]


@pytest.mark.slow  # about a minute on 2 cores (default suite time, README)
def test_tiny_suite_writes_valid_results(tmp_path):
    folder = run_suite("quick", ["sds"], ["nerf", "gaussians"], 2, tmp_path, TINY, progress=False)
    results = json.loads((folder / "results.json").read_text())
    validate_results(results)
    kinds = sorted(r["kind"] for r in results["runs"])
    assert kinds == ["diversity"] * 2 + ["fidelity"] * 4 + ["janus"]  # Janus and diversity on the probe scene
    assert all(r["config"]["train"]["steps"] == 4 for r in results["runs"])  # every run's config is recorded
    md = (folder / "results.md").read_text()
    assert "| sds | nerf | none |" in md and "| sds | gaussians | camera |" in md
    assert (folder / "fidelity.png").stat().st_size > 1000


@pytest.mark.slow  # about a minute on 2 cores (default suite time, README)
def test_interrupted_suite_resumes_and_keeps_finished_runs(tmp_path):
    folder = run_suite("quick", ["sds"], ["gaussians"], 2, tmp_path, TINY, progress=False)
    results = json.loads((folder / "results.json").read_text())
    lost = results["runs"].pop()  # as if the suite died before its last run was recorded
    (folder / "results.json").write_text(json.dumps(results))
    kept = {r["run_dir"]: (Path(r["run_dir"]) / "checkpoints" / "last.pt").stat().st_mtime_ns for r in results["runs"]}
    again = run_suite("quick", ["sds"], ["gaussians"], 2, tmp_path, TINY, progress=False, resume=folder)
    assert again == folder
    final = json.loads((folder / "results.json").read_text())
    validate_results(final)
    assert len(final["runs"]) == len(results["runs"]) + 1 == 5
    assert (final["runs"][-1]["kind"], final["runs"][-1]["seed"]) == (lost["kind"], lost["seed"]) == ("diversity", 1)
    assert {d: (Path(d) / "checkpoints" / "last.pt").stat().st_mtime_ns for d in kept} == kept  # not rerun
    # stopped early on purpose: resuming with fewer seeds runs nothing and tables the first seed only
    run_suite("quick", ["sds"], ["gaussians"], 1, tmp_path, TINY, progress=False, resume=folder)
    fewer = json.loads((folder / "results.json").read_text())
    assert sorted(r["seed"] for r in fewer["runs"] if r["kind"] == "diversity") == [0]
    assert len(fewer["runs"]) == 4
    with pytest.raises(ValueError, match="quick"):
        run_suite("full", ["sds"], ["gaussians"], 1, tmp_path, TINY, progress=False, resume=folder)
    with pytest.raises(ValueError, match="same --presets"):  # tuned presets would mix with the ones benched
        run_suite("quick", ["sds"], ["gaussians"], 1, tmp_path, TINY, progress=False, resume=folder, presets=tmp_path)


@pytest.mark.slow  # about a minute on 2 cores (default suite time, README)
def test_runs_at_once_in_processes_give_the_same_results(tmp_path):
    one = run_suite("quick", ["sds"], ["gaussians"], 1, tmp_path / "one", TINY, progress=False)
    two = run_suite("quick", ["sds"], ["gaussians"], 1, tmp_path / "two", TINY, progress=False, jobs_at_once=2)
    key = lambda r: (r["kind"], r["view_conditioning"], r["seed"])  # noqa: E731
    a, b = (sorted(json.loads((f / "results.json").read_text())["runs"], key=key) for f in (one, two))
    assert [key(r) for r in a] == [key(r) for r in b] and len(a) == 4
    for ra, rb in zip(a, b):
        assert ra["silhouette_iou"] == pytest.approx(rb["silhouette_iou"], abs=0.02)
        assert ra["colour_error"] == pytest.approx(rb["colour_error"], abs=0.02)
    assert json.loads((two / "results.json").read_text())["machine"]["jobs_at_once"] == 2


def test_variants_and_unknown_methods():
    from dream3d.bench import ALL_METHODS, preset
    from dream3d.config import load_config

    path, extra = preset("fdiv-fkl", "gaussians")
    assert path.endswith("fdiv-nerf.yaml") and load_config(path, extra).guidance.divergence == "forward_kl"
    assert all(Path(preset(m, "nerf")[0]).exists() for m in ALL_METHODS)
    with pytest.raises(ValueError, match="valid: sds"):
        run_suite("quick", ["sdss"], ["nerf"], 1, "unused", TINY, progress=False)


def test_sharpness_on_known_images():
    from dream3d.toyworld.metrics import sharpness

    gt = torch.zeros(1, 3, 32, 32)
    gt[..., 8:24, 8:24] = 1.0
    blurred = torch.nn.functional.avg_pool2d(gt, 5, 1, 2)
    noisy = gt + 0.2 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))
    assert sharpness(gt, gt) == pytest.approx(1.0)
    assert sharpness(blurred, gt) < 0.5 < 1.5 < sharpness(noisy, gt)


def _summary(**per_method):
    """A results summary with one NeRF row per method: dict(vendi=, vendi_std=, janus=, janus_std=, sharpness=,
    sat=, sat_std=, seeds=) (spreads 0.05 by default, 3 seeds per cell and 8 Janus seeds)."""
    rows = []
    for m, q in per_method.items():
        fid = {"silhouette_iou": q.get("iou", 0.9), "silhouette_iou_std": q.get("iou_std", 0.01), "colour_error": 0.05,
               "saturation_error": q.get("sat", 0.05),
               "saturation_error_std": q.get("sat_std", 0.05), "volumetric_iou": 0.8, "sharpness": q.get("sharpness", 0.8),
               "sharpness_std": 0.05, "wall_s": 10.0, "seeds": q.get("seeds", 3),
               "to_iou_0.9": {"seconds": q.get("secs", 5.0), "step": 50}}
        rows.append({"method": m, "scene": "nerf", "none": fid, "camera": fid, "janus_rate": q.get("janus", 0.2),
                     "janus_std": q.get("janus_std", 0.1), "janus_seeds": 8,
                     "diversity": {"colour_entropy": 0.0, "vendi": q.get("vendi", 1.0),
                                   "vendi_std": q.get("vendi_std", 0.1), "colours": [], "seeds": 6}})
    return rows


def test_published_claims_are_decided_from_the_spread():
    from dream3d.bench_claims import CLAIMS, check

    by_text = {c.text: c for c in CLAIMS}
    vsd_diverse = by_text["VSD is more diverse than SDS"]
    assert check(vsd_diverse, _summary(sds={"vendi": 1.0}, vsd={"vendi": 1.5}))["outcome"] == "reproduced"  # z 3.5
    assert check(vsd_diverse, _summary(sds={"vendi": 1.5}, vsd={"vendi": 1.0}))["outcome"] == "refuted"
    assert check(vsd_diverse, _summary(sds={"vendi": 1.0}, vsd={"vendi": 1.2}))["outcome"] == "no difference"  # z 1.4
    # the same difference is decided once the spread is small enough: not a fixed margin
    tight = check(vsd_diverse, _summary(sds={"vendi": 1.0, "vendi_std": 0.02}, vsd={"vendi": 1.2, "vendi_std": 0.02}))
    assert tight["outcome"] == "reproduced" and tight["z"]["vsd"] == pytest.approx(0.2 / (0.02 * 2**0.5), rel=1e-2)
    assert check(vsd_diverse, _summary(sds={"vendi": 1.0}))["outcome"] == "not measured"
    assert check(vsd_diverse, _summary(sds={"vendi": 1.0, "vendi_std": None}, vsd={"vendi": 2.0}))["outcome"] == "too few seeds"
    janus = by_text["ESD has fewer Janus faces than SDS"]
    assert check(janus, _summary(sds={"janus": 0.6}, esd={"janus": 0.2}))["outcome"] == "reproduced"  # lower wins
    zeros = _summary(sds={"janus": 0.0, "janus_std": 0.0}, esd={"janus": 0.0, "janus_std": 0.0})
    assert check(janus, zeros)["outcome"] == "no difference"
    bsd = by_text["BSD is less over-saturated than SDS"]
    result = check(bsd, _summary(sds={"sat": 0.10, "sat_std": 0.01}, bsd={"sat": 0.03, "sat_std": 0.01}))
    assert result["outcome"] == "reproduced" and result["methods"]["bsd"] == pytest.approx(0.03)
    assert check(bsd, _summary(sds={"sat": 0.10, "seeds": 1}, bsd={"sat": 0.03, "seeds": 1}))["outcome"] == "too few seeds"
    assert check(bsd, _summary(sds={"sat": 0.10, "seeds": 2}, bsd={"sat": 0.03, "seeds": 2}))["outcome"] == "too few seeds"
    # z = 3.5 is within Student's t at 3 seeds (4.30) but beyond it at 8 (2.36): more seeds decide a gap
    few = check(bsd, _summary(sds={"sat": 0.10, "sat_std": 0.01}, bsd={"sat": 0.08, "sat_std": 0.01}))
    assert few["outcome"] == "no difference" and few["z"]["bsd"] == pytest.approx(3.46, abs=0.01)
    assert few["threshold"]["bsd"] == pytest.approx(4.30, abs=0.01)
    many = check(bsd, _summary(sds={"sat": 0.10, "sat_std": 0.01, "seeds": 8}, bsd={"sat": 0.08, "sat_std": 0.01, "seeds": 8}))
    assert many["outcome"] == "reproduced" and many["threshold"]["bsd"] == pytest.approx(2.36, abs=0.01)
    fdiv = [c for c in CLAIMS if c.methods == ("fdiv", "fdiv-fkl")][0]
    assert check(fdiv, _summary(vsd={"vendi": 1.0}, fdiv={"vendi": 2.0}, **{"fdiv-fkl": {"vendi": 0.5}}))["outcome"] == "mixed"


def test_summary_gives_mean_spread_and_seeds_per_cell():
    from dream3d.bench import summarise

    def run(kind, seed, **kw):
        vc = "none" if kind != "diversity" else "camera"
        base = {"kind": kind, "method": "sds", "scene": "nerf", "view_conditioning": vc,
                "seed": seed, "silhouette_iou": 0.9, "colour_error": 0.1, "saturation_error": 0.05, "volumetric_iou": None,
                "sharpness": 1.0, "wall_s": 5.0, "to_iou_0.9": None, "matched_colour": "red", "mean_rgb": [1, 0, 0]}
        return {**base, **kw}

    runs = [run("fidelity", 0, silhouette_iou=0.8, **{"to_iou_0.9": {"seconds": 4.0, "step": 40}}),
            run("fidelity", 1, silhouette_iou=0.9),
            run("fidelity", 2, silhouette_iou=1.0, **{"to_iou_0.9": {"seconds": 2.0, "step": 20}}),
            *[run("janus", s, janus_rate=r) for s, r in enumerate([0.0, 0.2, 0.4, 0.2])],
            *[run("diversity", s, matched_colour=c, mean_rgb=rgb) for s, (c, rgb) in
              enumerate([("red", [1, 0, 0]), ("blue", [0, 0, 1]), ("red", [1, 0, 0]), ("green", [0, 1, 0])])]]
    (row,) = summarise(runs)
    cell = row["none"]
    assert cell["seeds"] == 3 and cell["silhouette_iou"] == pytest.approx(0.9)
    assert cell["silhouette_iou_std"] == pytest.approx(0.1)
    assert cell["silhouette_iou_values"] == [0.8, 0.9, 1.0] and cell["volumetric_iou"] is None
    assert cell["to_iou_0.9"] == {"seconds": 3.0, "step": 30, "seeds": 2}
    assert (row["janus_rate"], row["janus_seeds"]) == (pytest.approx(0.2), 4)
    assert row["janus_std"] == pytest.approx(float(torch.tensor([0.0, 0.2, 0.4, 0.2]).std()), abs=1e-4)
    assert row["diversity"]["seeds"] == 4 and row["diversity"]["vendi_std"] > 0


def test_advice_names_the_best_methods():
    from dream3d.bench_claims import advice_markdown

    # standard errors 0.01 / sqrt(3) = 0.0058 each: asd is 1.2 combined errors below sds (within 4.30, Student's t at
    # 3 seeds), vsd 12
    text = advice_markdown(_summary(sds={"iou": 0.95, "secs": 3.0}, vsd={"iou": 0.85, "secs": 9.0}, asd={"iou": 0.94}))
    line = text.splitlines()[0]
    assert "best silhouette IoU sds (0.950 ± 0.006, 3 seeds); as good within the spread: asd (0.940)." in line
    assert "vsd" not in line.split("Best colour")[0]
    assert "fastest to IoU 0.9 (camera conditioning): sds (3.0 s" in text
    # one seed each: the best is named, the rest are not claimed to be worse
    single = advice_markdown(_summary(sds={"iou": 0.95, "seeds": 1}, vsd={"iou": 0.85, "seeds": 1}))
    assert "best silhouette IoU sds (0.950, 1 seed); too few seeds (or no spread) to tell the others from it" in single


def test_schema_check_names_the_problem():
    with pytest.raises(ValueError, match="runs"):
        validate_results({"schema": 3, "suite": "quick", "created": "x", "summary": [], "machine": {}})
    with pytest.raises(ValueError, match=r"runs\[0\].janus_rate"):
        validate_results({"schema": 3, "suite": "q", "created": "x", "summary": [], "machine": {}, "runs": [
            {"kind": "janus", "method": "sds", "scene": "nerf", "view_conditioning": "none", "seed": 0, "config": {},
             "wall_s": 1.0, "silhouette_iou": 1.0, "colour_error": 0.0, "saturation_error": 0.0, "sharpness": 1.0,
             "curve": []}]})


def test_diversity_metrics_on_known_sets():
    uniform = diversity(["red", "green", "blue", "yellow", "purple", "orange"],
                        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0.5, 0, 0.5], [1, 0.5, 0]])
    collapsed = diversity(["red"] * 6, [[1, 0, 0]] * 6)
    assert uniform["colour_entropy"] == pytest.approx(1.0) and collapsed["colour_entropy"] == 0.0
    assert uniform["vendi"] > 5.0 and collapsed["vendi"] == pytest.approx(1.0)


class _Painted(torch.nn.Module):
    """A stand-in scene: a fixed image for every camera."""

    def __init__(self, rgb):
        super().__init__()
        self.rgb = torch.tensor(rgb)

    def render(self, cams, h, w, train=False):
        from renderers.base import RenderOutput

        n = len(cams)
        return RenderOutput(self.rgb[None, :, None, None].expand(n, 3, h, w), torch.ones(n, 1, h, w), torch.ones(n, 1, h, w))


def test_janus_rate_on_known_scenes():
    from dream3d.config import load_config

    cfg = load_config("configs/toy/sds-nerf.yaml", ["prompt=a blue cube with a yellow front"])
    assert janus_rate(_Painted([1.0, 0.85, 0.0]), cfg) == 1.0  # yellow seen from every back view
    assert janus_rate(_Painted([0.1, 0.2, 0.9]), cfg) == 0.0  # blue from behind, as the truth


def test_bench_command(tmp_path, capsys):
    assert main(["bench", "--methods", "sds", "--scenes", "nerf", "--seeds", "1", "--out", str(tmp_path), *TINY]) == 0
    assert "| sds | nerf | none |" in capsys.readouterr().out


def test_a_stopped_suite_says_it_is_partial_and_how_to_resume():
    from dream3d.bench import markdown

    results = {"suite": "full", "created": "now", "runs": [{}] * 3, "summary": [], "presets": "/tuned"}
    assert "Partial" not in markdown(results)  # results from before planned_runs was recorded
    assert "Partial" not in markdown({**results, "planned_runs": 3})
    text = markdown({**results, "planned_runs": 338})
    assert "**Partial: 3 of 338 runs done.**" in text and "--resume FOLDER --presets /tuned" in text


@pytest.mark.slow
def test_quick_suite_runs_and_validates(tmp_path):
    """The real quick suite (under 20 minutes on 2 cores): its results.json passes the schema."""
    folder = run_suite("quick", out_root=tmp_path, progress=False)
    results = json.loads((folder / "results.json").read_text())
    validate_results(results)
    assert len(results["runs"]) == 12 + 3 + 9 and len(results["summary"]) == 6
