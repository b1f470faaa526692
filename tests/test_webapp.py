"""The Gradio UI: input validation (property-based), a real server driven by gradio_client
(previews, GLB, downloads, Stop, errors, what is served), and a headless-Chromium browser test."""
import os
import shutil
import time
import urllib.error
import urllib.request

import pytest
import trimesh
from conftest import TINY_RUN, start_ui
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dream3d.webapp import UI_LIMITS, UserInputError, list_presets, make_config

pytestmark = pytest.mark.reliability  # the UI abuse tests of the reliability issue live here too

ADVANCED = "\n".join(o for o in TINY_RUN if not o.startswith("train.steps"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_presets_are_discovered_toyworld_first():
    names = list_presets()
    assert names[0].startswith("toy/") and "toy/sds-nerf" in names and "toy/sds-gaussians" in names
    assert any(n.startswith("sd/") for n in names)


def test_the_ui_offers_only_presets_it_accepts(tmp_path):
    """A preset the UI would refuse as it is (sd/*-gaussians render at 256 > the UI's 128; on a CPU
    server every Stable Diffusion preset is over the time budget) is not in the list, with the reason."""
    from dream3d.webapp import RequestBudget, offered_presets

    offered, hidden = offered_presets(tmp_path)
    assert "toy/sds-nerf" in offered and "toy/sds-gaussians" in offered
    assert set(offered) | set(hidden) == set(list_presets()) and not set(offered) & set(hidden)
    assert "train.resolution = 256 is above" in hidden["sd/sds-gaussians"]
    for name in offered:  # what is offered, the UI accepts
        make_config(name, "a red cube" if name.startswith("toy/") else "a hamburger", "", 100, 0, None, "", tmp_path)
    tight, why = offered_presets(tmp_path, budget=RequestBudget(seconds=1.0))
    assert not tight and all("this server allows 1 s" in w or "above this UI's limit" in w for w in why.values())


def test_make_config_applies_fields_and_caps(tmp_path):
    cfg = make_config("toy/sds-nerf", "a blue sphere", "", 120, 3, 2.0, "train.resolution=16", tmp_path)
    assert (cfg.prompt, cfg.seed, cfg.train.steps, cfg.guidance.guidance_scale, cfg.train.resolution) == (
        "a blue sphere", 3, 120, 2.0, 16)
    assert cfg.output.out_dir == str(tmp_path) and cfg.output.val_every == 6  # ~20 previews per run
    with pytest.raises(UserInputError, match="train.steps = 5001 is above"):
        make_config("toy/sds-nerf", "a red cube", "", UI_LIMITS["train.steps"] + 1, 0, None, "", tmp_path)
    with pytest.raises(UserInputError, match="train.resolution = 512 is above"):
        make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, "train.resolution=512", tmp_path)
    with pytest.raises(UserInputError, match="on the server"):
        make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, "output.out_dir=/etc", tmp_path)
    with pytest.raises(UserInputError, match="set by the UI"):
        make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, "seed=3", tmp_path)
    with pytest.raises(UserInputError, match="unknown preset"):
        make_config("../../etc/passwd", "a red cube", "", 100, 0, None, "", tmp_path)
    with pytest.raises(ValueError, match="prompt is empty"):
        make_config("toy/sds-nerf", "   ", "", 100, 0, None, "", tmp_path)
    with pytest.raises(ValueError, match=r"'\$\{oc.env:HOME\}' is not valid") as e:  # literal text, never resolved
        make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, "output.video_format=${oc.env:HOME}", tmp_path)
    assert os.environ["HOME"] not in str(e.value)
    with pytest.raises(ValueError, match="cannot be parsed"):
        make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, "train.steps=@", tmp_path)
    with pytest.raises(ValueError, match="unknown config key 'scene.nope'"):
        make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, "scene.nope=1", tmp_path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(max_size=400), advanced=st.text(max_size=200),
       steps=st.one_of(st.none(), st.integers(-10, 10_000), st.floats()),
       seed=st.one_of(st.none(), st.integers(), st.floats()),
       scale=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_any_ui_input_is_a_config_or_a_clear_error(tmp_path, prompt, advanced, steps, seed, scale):
    """Whatever a visitor types: a valid config within the caps, or a ValueError with a message."""
    try:
        cfg = make_config("toy/sds-nerf", prompt, "", steps, seed, scale, advanced, tmp_path)
    except ValueError as e:
        assert str(e).strip()
        return
    assert cfg.prompt.strip() and 1 <= cfg.train.steps <= UI_LIMITS["train.steps"]
    assert cfg.output.out_dir == str(tmp_path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = tmp_path_factory.mktemp("ui_runs")
    url, demo = start_ui(runs)
    yield url, runs
    demo.close()


def test_client_gets_previews_a_glb_and_downloads(server):
    from gradio_client import Client

    url, runs = server
    job = Client(url, verbose=False).submit("toy/sds-nerf", "a red cube", "", 40, 0, None, ADVANCED, api_name="/generate")
    status, preview, video, glb, files = job.result(timeout=300)
    updates = job.outputs()
    previews = [u[1] for u in updates[:-1] if u[1]]
    assert previews, "no intermediate preview reached the client"
    assert status.startswith("**Finished**")
    mesh = trimesh.load(glb, force="mesh")
    assert len(mesh.faces) > 100
    assert {os.path.basename(f) for f in files} >= {"model.glb", "model.obj", "steps.csv", "run.zip"}  # the run's logs too
    assert video.endswith((".mp4", ".gif"))
    assert len(list(runs.glob("*/checkpoints/last.pt"))) >= 1


def test_unknown_word_shows_the_grammar_message(server):
    from gradio_client import Client

    with pytest.raises(Exception, match="unknown word 'dragon'"):
        Client(server[0], verbose=False).predict("toy/sds-nerf", "a red dragon", "", 20, 0, None, ADVANCED,
                                                 api_name="/generate")


def test_stop_checkpoints_and_exports(server):
    from gradio_client import Client

    client = Client(server[0], verbose=False)
    job = client.submit("toy/sds-nerf", "a blue sphere", "", 5000, 1, None, ADVANCED, api_name="/generate")
    deadline = time.time() + 120
    while not any(u[1] for u in job.outputs()) and time.time() < deadline:
        time.sleep(0.5)
    assert "Stopping" in client.predict(api_name="/stop")
    status, _, _, glb, files = job.result(timeout=300)
    assert status.startswith("**Stopped**"), status
    assert glb and any(f.endswith("run.zip") for f in files)


def test_only_the_runs_folder_is_served(server):
    url, _ = server
    for path in ("/etc/passwd", os.path.abspath("pyproject.toml")):
        try:
            code = urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=10).status
        except urllib.error.HTTPError as e:
            code = e.code
        assert code in (403, 404), (path, code)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_browser_generates_and_shows_the_mesh(server, tmp_path):
    """Headless Chromium (playwright, no downloaded browser): type a prompt, Generate, wait for
    the 3D viewer, screenshot it and check it is not blank."""
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    url, _ = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url, wait_until="networkidle")
        page.locator("#prompt textarea").fill("a green cylinder")
        page.locator("input[aria-label='number input for Steps']").fill("30")
        page.get_by_text("Advanced overrides").click()
        page.locator("#advanced textarea").fill(ADVANCED)
        page.locator("#generate").click()
        page.locator("#status").get_by_text("Finished").wait_for(timeout=240_000)
        viewer = page.locator("#model3d canvas")
        viewer.wait_for(timeout=60_000)
        shot = tmp_path / "ui.png"

        def green_share() -> tuple[float, float]:
            page.locator("#model3d").screenshot(path=str(shot))
            pixels = np.asarray(Image.open(shot).convert("RGB")).astype(float)
            greenish = (pixels[..., 1] > pixels[..., 0] + 20) & (pixels[..., 1] > pixels[..., 2] + 20)
            return float(pixels.std()), float(greenish.mean())

        for _ in range(20):  # the viewer loads the GLB and draws it asynchronously: look for up to ~20 s
            page.wait_for_timeout(1000)
            spread, green = green_share()
            if spread > 5 and green > 0.005:
                break
        browser.close()
    assert spread > 5, "the 3D viewer screenshot is blank"
    assert green > 0.005, "no green mesh visible in the viewer"


def test_a_second_job_waits_in_the_queue(server):
    """Concurrency 1: while one run trains, another visitor's job is queued, then runs."""
    from gradio_client import Client
    from gradio_client.utils import Status

    first, second = Client(server[0], verbose=False), Client(server[0], verbose=False)
    a = first.submit("toy/sds-nerf", "a red cube", "", 5000, 0, None, ADVANCED, api_name="/generate")
    deadline = time.time() + 120
    while not any(u[1] for u in a.outputs()) and time.time() < deadline:
        time.sleep(0.5)
    b = second.submit("toy/sds-nerf", "a blue cube", "", 20, 0, None, ADVANCED, api_name="/generate")
    time.sleep(3)
    assert b.status().code == Status.IN_QUEUE and not b.outputs()
    first.predict(api_name="/stop")
    assert a.result(timeout=300)[0].startswith("**Stopped**")
    assert b.result(timeout=300)[0].startswith("**Finished**")


def test_refinement_is_capped_priced_and_shown(tmp_path):
    """The refine preset is offered; its stages count in the request's price, their knobs have caps, and
    the status names the stage."""
    from dream3d.cost import estimate_cost
    from dream3d.webapp import status_text

    assert "toy/sds-nerf-refine" in list_presets()
    plain = make_config("toy/sds-nerf", "a red cube", "", 400, 0, None, "", tmp_path)
    refined = make_config("toy/sds-nerf-refine", "a red cube", "", 400, 0, None, "", tmp_path)
    assert "refine" in estimate_cost(refined).phases and "refine" not in estimate_cost(plain).phases
    assert estimate_cost(refined).seconds > estimate_cost(plain).seconds
    longer = make_config("toy/sds-nerf-refine", "a red cube", "", 400, 0, None, "refine.geometry_steps=1000", tmp_path)
    assert estimate_cost(longer).phases["refine"][0] > estimate_cost(refined).phases["refine"][0]
    with pytest.raises(UserInputError, match="refine.geometry_steps = 100000 is above"):
        make_config("toy/sds-nerf-refine", "a red cube", "", 100, 0, None, "refine.geometry_steps=100000", tmp_path)
    with pytest.raises(UserInputError, match="refine.mesh.grid_resolution = 256 is above"):
        make_config("toy/sds-nerf-refine", "a red cube", "", 100, 0, None, "refine.mesh.grid_resolution=256", tmp_path)
    mesh = make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, "scene.name=mesh", tmp_path)
    assert estimate_cost(mesh).seconds > 0  # a mesh scene is priced too
    assert "geometry" in status_text({"step": 5, "steps": 10, "stage": "geometry"}, 0.0, None)


def test_the_refine_checkbox_adds_the_mesh_stages(tmp_path):
    """With a `-refine` sibling the run becomes it (tuned refine settings); without one it gets the default refine
    settings and REFINE_STEPS; a preset that refines already, and the visitor's own refine.* overrides, are kept."""
    from dream3d.config import load_config
    from dream3d.webapp import REFINE_STEPS

    gauss = make_config("toy/sds-gaussians", "a red cube", "", 400, 0, None, "", tmp_path, refine=True)
    sibling = load_config("configs/toy/sds-gaussians-refine.yaml")
    assert gauss.scene.name == "gaussians" and gauss.refine == sibling.refine and gauss.refine.geometry_steps == 500
    assert not make_config("toy/sds-gaussians", "a red cube", "", 400, 0, None, "", tmp_path).refine.enabled
    assert "toy/vsd-nerf-refine" not in list_presets()
    vsd = make_config("toy/vsd-nerf", "a red cube", "", 400, 0, None, "", tmp_path, refine=True)
    steps = {o.split("=")[0]: int(o.split("=")[1]) for o in REFINE_STEPS}
    assert vsd.guidance.name == "vsd" and (vsd.refine.geometry_steps, vsd.refine.texture_steps) == (
        steps["refine.geometry_steps"], steps["refine.texture_steps"])
    own = make_config("toy/vsd-nerf", "a red cube", "", 400, 0, None, "refine.texture_steps=7", tmp_path, refine=True)
    assert own.refine.texture_steps == 7
    again = make_config("toy/sds-nerf-refine", "a red cube", "", 400, 0, None, "", tmp_path, refine=True)
    assert again.refine == make_config("toy/sds-nerf-refine", "a red cube", "", 400, 0, None, "", tmp_path).refine


def test_multiview_prior_is_offered_and_priced(tmp_path):
    """The multi-view preset fits the budget; its grid and candidate knobs are priced, so a visitor cannot ask
    for a grid or a candidate set the server cannot hold."""
    from dream3d.cost import estimate_cost

    assert "toy/sds-nerf-multiview" in list_presets()
    mv = make_config("toy/sds-nerf-multiview", "a blue cube with a yellow front", "", 400, 0, None, "", tmp_path)
    relative = make_config("toy/sds-nerf-multiview", "a blue cube", "", 400, 0, None, "prior.view_conditioning=none",
                           tmp_path)
    assert estimate_cost(relative).seconds > estimate_cost(mv).seconds  # a candidate per grid azimuth turn
    with pytest.raises(UserInputError, match="this request would take"):
        make_config("toy/sds-nerf-multiview", "a cube", "", 400, 0, None, "prior.views=8\nprior.grid_azimuth_steps=720\n"
                    "prior.view_conditioning=none\nprior.resolution=64\ntrain.batch_size=8", tmp_path)


def rgba_png(path, size=64):
    import imageio.v3 as iio
    import numpy as np

    img = np.zeros((size, size, 4), np.uint8)
    img[size // 4:3 * size // 4, size // 4:3 * size // 4] = 40, 200, 60, 255
    iio.imwrite(path, img)
    return path


def test_an_uploaded_image_makes_an_image_run_and_is_checked(tmp_path, monkeypatch):
    """The upload becomes `image` (never an override: a visitor cannot name a server file), is priced, and is
    refused with a message when the preset cannot take it, it is too large or it is not an image."""
    import dream3d.webapp as webapp
    from dream3d.cost import estimate_cost

    ref = rgba_png(tmp_path / "ref.png")
    text = make_config("toy/sds-nerf-image", "a green cylinder", "", 200, 0, None, "", tmp_path)
    cfg = make_config("toy/sds-nerf-image", "a green cylinder", "", 200, 0, None, "", tmp_path, image=str(ref))
    assert text.image is None and cfg.image == str(ref)
    assert estimate_cost(cfg).seconds > estimate_cost(text).seconds  # the reference view is rendered every step
    with pytest.raises(UserInputError, match="names a file"):
        make_config("toy/sds-nerf-image", "a cube", "", 200, 0, None, f"image={ref}", tmp_path)
    with pytest.raises(UserInputError, match="cannot take an image; remove the image or choose"):
        make_config("sd/sds-nerf", "a hamburger", "", 200, 0, None, "", tmp_path, image=str(ref))
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="cannot read the reference image"):
        make_config("toy/sds-nerf-image", "a cube", "", 200, 0, None, "", tmp_path, image=str(tmp_path / "junk.png"))
    monkeypatch.setattr(webapp, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="64 x 64 pixels; the limit here is 1,000 pixels"):
        make_config("toy/sds-nerf-image", "a cube", "", 200, 0, None, "", tmp_path, image=str(ref))


def test_presets_that_need_an_image_are_priced_with_one(tmp_path):
    """Zero123's preset cannot run without an image; the UI prices it with one instead of hiding it for that
    (on this CPU server it is hidden for its cost, like every Stable Diffusion preset)."""
    from dream3d.webapp import offered_presets

    offered, hidden = offered_presets(tmp_path)
    assert "toy/sds-nerf-image" in offered
    assert "this request would take" in hidden["sd/zero123-sds-nerf"], hidden["sd/zero123-sds-nerf"]


def test_client_uploads_an_image_and_gets_an_image_run(server, tmp_path):
    from gradio_client import Client, handle_file

    url, runs = server
    advanced = "\n".join([o for o in TINY_RUN if not o.startswith(("train.steps", "prior.num_views"))] + [
        "prior.grid_elevation_step=27.5", "prior.grid_azimuth_steps=8", "reference.elevation=17.5",
        "reference.resolution=16"])
    job = Client(url, verbose=False).submit("toy/sds-nerf-image", "a green cylinder", "", 10, 0, None, advanced,
                                            handle_file(str(rgba_png(tmp_path / "ref.png"))), api_name="/generate")
    status, *_ = job.result(timeout=300)
    assert status.startswith("**Finished**"), status
    copies = list(runs.glob("*/reference.png"))
    assert copies, "the run folder has no copy of the uploaded image"


def test_client_ticks_refine_and_gets_a_refined_mesh(server):
    import json

    from gradio_client import Client

    url, runs = server
    small = "\n".join([ADVANCED, "refine.geometry_steps=2", "refine.texture_steps=2", "refine.resolution=16",
                       "refine.sdf_resolution=24", "refine.mesh.grid_resolution=8"])
    job = Client(url, verbose=False).submit("toy/sds-nerf", "a purple cone", "", 10, 0, None, small, None, True,
                                            api_name="/generate")
    status, *_ = job.result(timeout=300)
    assert status.startswith("**Finished**"), status
    [metrics] = [json.loads(p.read_text()) for p in runs.glob("a-purple-cone*/metrics.json")]
    assert metrics["stage"] == "texture" and metrics["export"]["method"] == "surface"
    assert any("texture" in u[0] for u in job.outputs() if u[0]), "the status never named the stage"
