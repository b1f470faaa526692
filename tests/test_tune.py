"""`dream3d tune`: search spaces that fit each method's config, tuning prompts apart from the bench's,
one trial trained and scored, and a tiny Ray Tune search end to end that writes loadable presets."""
import json
from pathlib import Path

import pytest
import yaml

from dream3d.bench import DIVERSITY_PROMPT, FIDELITY_PROMPT, JANUS_PROMPT, preset
from dream3d.config import load_config
from dream3d.kernel.schema import ConfigError
from dream3d.toyworld import parse_prompt
from dream3d.tune import TUNING_PROMPTS, overrides_of, run_trial, search_space
from guidance import GUIDANCES

TINY = ["train.batch_size=2", "train.resolution=16", "prior.num_views=64", "prior.dataset_resolution=32",
        "prior.resolution=16", "eval.resolution=16", "eval.num_cameras=2", "eval.volume_resolution=16",
        "output.export.resolution=32", "output.export.texture_size=64", "output.val_resolution=16"]


def middle(knob):
    return knob.values[0] if knob.kind == "choice" else (knob.lo * knob.hi) ** 0.5 if knob.kind == "loguniform" \
        else (knob.lo + knob.hi) / 2


@pytest.mark.parametrize("scene", ["nerf", "gaussians"])
@pytest.mark.parametrize("method", list(GUIDANCES))
def test_every_method_has_a_search_space_its_preset_accepts(method, scene):
    space = search_space(method, scene)
    assert 3 <= len(space) <= 6  # the scene's learning rates and the method's few key knobs
    path, variant = preset(method, scene)
    cfg = load_config(path, [f"scene.name={scene}", *variant, *overrides_of({k: middle(v) for k, v in space.items()})])
    for key, knob in space.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        assert value == pytest.approx(float(f"{middle(knob):.4g}")), key


def test_tuning_never_sees_the_benchs_prompts_or_shapes():
    bench = [parse_prompt(p).shape for p in (FIDELITY_PROMPT, JANUS_PROMPT, DIVERSITY_PROMPT)]
    assert not {parse_prompt(p).shape for p in TUNING_PROMPTS} & set(bench)
    from dream3d.tune import run_tuning

    with pytest.raises(ConfigError, match="differ from the bench's evaluation prompts"):
        run_tuning(["sds"], prompts=(FIDELITY_PROMPT,))
    with pytest.raises(ConfigError, match="tunable: sds"):
        run_tuning(["nope"])


def test_a_trial_trains_each_prompt_and_reports_a_running_mean(tmp_path):
    reports = run_trial({"guidance.guidance_scale": 2.0}, "sds", "nerf", 4, TUNING_PROMPTS, str(tmp_path), tuple(TINY))
    assert [r["prompts"] for r in reports] == [1, 2]
    assert all(r["score"] == pytest.approx(r["iou"] - r["colour_error"]) for r in reports)
    runs = sorted((tmp_path / "runs").glob("*/*"))
    assert len(runs) == 2 and all((r / "config.yaml").exists() for r in runs)
    assert yaml.safe_load((runs[0] / "config.yaml").read_text())["guidance"]["guidance_scale"] == 2.0


def test_a_tiny_search_writes_results_and_presets_that_load(tmp_path):
    from dream3d.tune import run_tuning

    folder = run_tuning(["sds"], trials=2, steps=4, out_root=tmp_path, overrides=TINY, workers=2)
    results = json.loads((folder / "tune_results.json").read_text())
    record = results["methods"]["sds"]
    assert len(record["trials"]) == 2 and record["best"] is not None
    finished = [t["score"] for t in record["trials"] if t["prompts"] == 2]
    assert record["best"]["score"] == max(finished + [record["hand_set"]["score"]])
    tuned = load_config(folder / "presets" / "sds-nerf.yaml")
    for key, value in record["best"]["config"].items():
        section, name = key.split(".")
        assert getattr(getattr(tuned, section), name) == pytest.approx(value, rel=1e-3)
    assert tuned.train.resolution == 16 and tuned.prior.num_views == 64  # the run's overrides, kept in the preset
    assert preset("sds", "nerf", folder / "presets")[0] == str(folder / "presets" / "sds-nerf.yaml")
    hand = record["hand_set"]  # the hand-set preset scored on the same prompts, before the search
    assert hand["prompts"] == 2 and hand["score"] == pytest.approx(hand["iou"] - hand["colour_error"])
    assert f"| sds | {hand['score']:.3f} | {record['best']['score']:.3f} |" in (folder / "tune_results.md").read_text()


def test_the_hand_set_values_win_when_no_trial_beats_them(tmp_path):
    from dream3d.tune import best_of, tuned_preset

    trials = [{"config": {"guidance.t_max": 0.6}, "overrides": ["guidance.t_max=0.6"], "score": s, "iou": 0.9,
               "colour_error": 0.1, "prompts": 2} for s in (0.5, 0.7)]
    hand = {"score": 0.6, "iou": 0.7, "colour_error": 0.1, "prompts": 2}
    assert best_of(trials, hand)["score"] == 0.7 and "hand_set" not in best_of(trials, hand)
    for kept in (best_of(trials, {**hand, "score": 0.8}), best_of(trials, {**hand, "score": 0.7}), best_of([], hand)):
        assert kept["hand_set"] and kept["config"] == {}  # better, tied, or nothing finished: keep the preset
    assert best_of([], None) is None
    text = tuned_preset("sds", "nerf", best_of([], hand), ("scene.blob_density=10",))
    path = tmp_path / "sds-nerf.yaml"
    path.write_text(text)
    cfg, hand_set = load_config(path), load_config("configs/toy/sds-nerf.yaml")
    assert "no trial beat the hand-set values" in text and cfg.scene.blob_density == 10
    assert cfg.guidance == hand_set.guidance and cfg.scene.lr_encoding == hand_set.scene.lr_encoding


def test_zero_trials_scores_only_the_hand_set_presets(tmp_path):
    from dream3d.tune import run_tuning

    folder = run_tuning(["sds", "csd"], trials=0, steps=3, out_root=tmp_path, overrides=TINY)
    results = json.loads((folder / "tune_results.json").read_text())
    for method in ("sds", "csd"):
        record = results["methods"][method]
        assert record["trials"] == [] and record["best"] is None and record["hand_set"]["prompts"] == 2
    assert not list((folder / "presets").iterdir())  # nothing was tuned, so no preset is written
    assert "not searched (--trials 0)" in (folder / "tune_results.md").read_text()
    with pytest.raises(ConfigError, match="--trials -1"):
        run_tuning(["sds"], trials=-1, out_root=tmp_path)


def test_a_tuned_preset_keeps_its_scene_and_loads(tmp_path):
    from dream3d.tune import tuned_preset

    best = {"config": {"scene.lr_colours": 0.02, "guidance.t_max": 0.61234567}, "score": 0.5}
    path = tmp_path / "csd-gaussians.yaml"  # csd has no Gaussian preset of its own: it starts from the NeRF one
    path.write_text(tuned_preset("csd", "gaussians", best))
    cfg = load_config(path)
    assert cfg.scene.name == "gaussians" and cfg.scene.lr_colours == 0.02 and cfg.guidance.t_max == 0.6123
    assert path.read_text().startswith("# csd tuned by `dream3d tune`")


@pytest.mark.parametrize("path", sorted(Path("docs/tune").glob("*/presets/*.yaml")),
                         ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_committed_tuned_presets_load_as_their_method(path):
    """The committed tuning results stay benchable: each preset loads and is the method its name says."""
    cfg = load_config(path)
    method, scene = path.stem.rsplit("-", 1)
    assert cfg.guidance.name == method and cfg.scene.name == scene
    assert cfg.scene.blob_density == 10  # what they were tuned with (README: Tuning each method fairly)
