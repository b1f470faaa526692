"""Hostile and careless input (issue 19): each test reproduces an attack or a crash found on the CLI
or the web UI and checks its defined behaviour, so the defects stay fixed."""
import errno
import json
import os
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import PRESET, TINY_RUN, start_ui
from conftest import tiny_config as tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dream3d.cli import main
from dream3d.config import ConfigError, load_config, to_yaml
from dream3d.kernel.atomic_io import write_torch_file
from dream3d.lifecycle import start_run
from dream3d.runs import RunDir
from dream3d.webapp import RequestBudget, UserInputError, make_config, result_note, zip_run

pytestmark = pytest.mark.reliability

SECRET_NAME, SECRET = "DREAM3D_TEST_SECRET", "s3cr3t-9f8e7d"
ADVANCED = "\n".join(o for o in TINY_RUN if not o.startswith("train.steps"))


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv(SECRET_NAME, SECRET)
    return SECRET


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny finished run (checkpoint, config.yaml, model.glb) to attack."""
    out = tmp_path_factory.mktemp("target")
    result = start_run(load_config(PRESET, TINY_RUN + [f"output.out_dir={out}", "output.name=target"]))
    return Path(result["run_dir"])


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# -- 1. a checkpoint never runs code ------------------------------------------------------------
class _Payload:
    """Unpickling this object calls Path.touch(marker): what an attacker's checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("command", ["resume", "export", "eval"])
def test_malicious_checkpoint_is_refused_without_running_code(finished_run, tmp_path, capsys, command):
    folder = _copy_run(finished_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    state = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
    state["history"] = [_Payload(marker)]
    torch.save(state, folder / "checkpoints" / "last.pt")
    assert main([command, str(folder)]) == 2
    assert not marker.exists(), "loading the checkpoint executed code"
    assert "not written by dream3d" in capsys.readouterr().err


def test_real_checkpoint_loads_with_weights_only(finished_run):
    state = RunDir(finished_run).load_checkpoint()
    assert state["step"] == 6 and isinstance(state["config"], dict)


# -- 2. no user value is interpolated --------------------------------------------------------------
ESCAPED = '"\\x24{oc.env:' + SECRET_NAME + '}"'  # YAML's \x24 is '$': ${oc.env:...} with no literal '${'


def test_escaped_interpolation_in_a_ui_override_reveals_nothing(secret, tmp_path):
    for advanced in (f"output.video_format={ESCAPED}", f"guidance.weighting={ESCAPED}",
                     f"output.export.formats=[{ESCAPED}]"):
        with pytest.raises(ValueError) as e:
            make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, advanced, tmp_path)
        assert secret not in str(e.value) and "oc.env" in str(e.value), str(e.value)


def test_interpolation_in_prompts_is_literal_text(secret, tmp_path, capsys):
    prompt = "a red cube ${oc.env:" + SECRET_NAME + "}"
    ui = make_config("toy/sds-nerf", prompt, "", 100, 0, None, "", tmp_path)  # the UI keeps the text as typed
    assert ui.prompt == prompt and secret not in to_yaml(ui)
    cfg = load_config(PRESET, [f"prompt='{prompt}'", f"negative_prompt={ESCAPED}"])  # the CLI
    assert cfg.prompt == prompt and cfg.negative_prompt == "${oc.env:" + SECRET_NAME + "}"
    assert main(["config", "show", PRESET, f"prompt={ESCAPED}"]) == 0
    assert secret not in capsys.readouterr().out


def test_batch_prompt_lines_are_never_interpolated(secret, tmp_path):
    from dream3d.batch import BatchSpec, read_prompts

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube ${oc.env:" + SECRET_NAME + "}\n")
    job = read_prompts(prompts, [0])[0]
    cfg = BatchSpec(PRESET, (), str(tmp_path / "b")).job_config(job)
    assert cfg.prompt == job.prompt and secret not in to_yaml(cfg)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("ab $\\{}:'\"%.\n"), min_size=1, max_size=40).filter(str.strip))
def test_any_string_survives_config_round_trips_literally(tmp_path_factory, text):
    """A string value goes through YAML, OmegaConf's typed merge and back to YAML unchanged."""
    from dream3d.config import build_config, read_yaml

    cfg = build_config({"prompt": text.strip()[:300], "negative_prompt": text})
    path = tmp_path_factory.mktemp("rt") / "c.yaml"
    path.write_text(to_yaml(cfg))
    again = build_config(read_yaml(path))
    assert (again.prompt, again.negative_prompt) == (text.strip()[:300], text)


# -- 3. one request cannot exhaust the server ------------------------------------------------------
@pytest.mark.parametrize("advanced", [
    "output.export.texture_size=8192",
    "output.export.texture_size=4096",
    "prior.num_views=16384\nprior.dataset_resolution=256",
    "output.export.max_faces=10000000\noutput.export.resolution=256\noutput.export.texture_size=4096",
    "train.resolution=128\ntrain.batch_size=8\nscene.samples_per_ray=1024",
    "scene.max_resolution=4096\nscene.log2_hashmap_size=24\nscene.num_levels=16\nscene.features_per_level=8",
])
def test_costly_ui_requests_are_refused_by_estimate(tmp_path, advanced):
    with pytest.raises(UserInputError, match="this server allows"):
        make_config("toy/sds-nerf", "a red cube", "", 400, 0, None, advanced, tmp_path)


@pytest.mark.parametrize("override", ["prior.uncond_views_per_item=1000000000", "scene.max_gaussians=1000000000000"])
def test_unbounded_sizes_have_sanity_bounds_everywhere(override):
    preset = "configs/toy/sds-gaussians.yaml" if "gaussians" in override else PRESET
    with pytest.raises(ConfigError, match="out of range"):
        load_config(preset, [override])


COST_KEYS = {  # key: (low, high); raising any of them must raise the estimate
    "train.steps": (100, 400), "train.batch_size": (2, 8), "train.resolution": (32, 64),
    "scene.samples_per_ray": (32, 128), "scene.eval_samples_per_ray": (64, 256), "scene.hidden_dim": (32, 128),
    "scene.max_resolution": (64, 1024), "scene.log2_hashmap_size": (14, 22),
    "prior.num_views": (512, 4096), "prior.dataset_resolution": (32, 128), "prior.resolution": (16, 64),
    "prior.uncond_views_per_item": (16, 1024), "output.val_resolution": (32, 128),
    "output.turntable_frames": (12, 120), "output.turntable_resolution": (64, 256),
    "output.export.resolution": (64, 256), "output.export.texture_size": (256, 2048),
    "output.export.max_faces": (5000, 200000),
}


@pytest.mark.parametrize("key", sorted(COST_KEYS))
def test_the_estimate_prices_every_cost_bearing_key(key):
    from dream3d.cost import estimate_cost

    lo, hi = COST_KEYS[key]
    a, b = (estimate_cost(load_config(PRESET, ["output.val_every=50", f"{key}={v}"])) for v in (lo, hi))
    assert b.seconds > a.seconds or b.peak_bytes > a.peak_bytes, key


def test_the_estimate_prices_gaussian_counts_and_guidance_work():
    from dream3d.cost import estimate_cost

    g = "configs/toy/sds-gaussians.yaml"
    assert estimate_cost(load_config(g, ["scene.max_gaussians=200000"])).seconds > estimate_cost(load_config(g)).seconds
    ism = "configs/toy/ism-nerf.yaml"
    assert (estimate_cost(load_config(ism, ["guidance.inversion_max_steps=50"])).seconds
            > estimate_cost(load_config(ism)).seconds)


UI_KEYS = st.sampled_from([
    "train.batch_size", "train.resolution", "scene.samples_per_ray", "scene.eval_samples_per_ray", "scene.hidden_dim",
    "scene.max_resolution", "scene.log2_hashmap_size", "scene.num_levels", "prior.num_views",
    "prior.dataset_resolution", "prior.resolution", "prior.uncond_views_per_item", "prior.dataset_seed",
    "output.val_resolution", "output.val_every", "output.turntable_frames", "output.turntable_resolution",
    "output.export.resolution", "output.export.texture_size", "output.export.max_faces"])
BUDGET = RequestBudget(seconds=900.0, memory_gb=4.0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(preset=st.sampled_from(["toy/sds-nerf", "toy/sds-gaussians", "toy/ism-nerf", "toy/fdiv-nerf"]),
       steps=st.integers(1, 5000), pairs=st.lists(st.tuples(UI_KEYS, st.integers(0, 2**40)), max_size=6))
def test_no_accepted_ui_request_exceeds_the_budget(tmp_path, preset, steps, pairs):
    """Whatever sizes a visitor asks for: refused with a message, or estimated within the budget."""
    from dream3d.cost import estimate_cost

    advanced = "\n".join(f"{k}={v}" for k, v in pairs)
    try:
        cfg = make_config(preset, "a red cube", "", steps, 0, None, advanced, tmp_path, budget=BUDGET)
    except ValueError as e:
        assert str(e).strip()
        return
    cost = estimate_cost(cfg)
    assert cost.seconds <= BUDGET.seconds and cost.peak_bytes <= BUDGET.memory_gb * 2**30


def test_new_dataset_seeds_cannot_grow_the_cache_without_bound(tmp_path, monkeypatch):
    from dream3d.toyworld.dataset import cache_dir, load_shape_views

    monkeypatch.setenv("DREAM3D_CACHE", str(tmp_path / "cache"))
    one = 4 * 3 * 16 * 16 * 2  # bytes of layers: 4 views, 3 layers, 16x16, float16
    monkeypatch.setenv("DREAM3D_CACHE_MAX_GB", str(3.5 * one / 2**30))  # room for ~3 entries (plus headers)
    for seed in range(8):
        load_shape_views("cube", num_views=4, resolution=16, seed=seed)
    files = sorted(p.name for p in cache_dir().glob("*.pt"))
    assert 1 <= len(files) <= 3 and "cube-n4-r16-s7-uniform.pt" in files, files


# -- 6. two runs never share a folder ----------------------------------------------------------------
def test_concurrent_runs_with_the_same_name_get_their_own_folders(tmp_path):
    barrier, folders = threading.Barrier(8), []

    def claim():
        barrier.wait()
        folders.append(RunDir.create(str(tmp_path), "a red cube", "c", 0, "same").path)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(folders)) == 8 and all(f.is_dir() for f in folders)


def test_two_concurrent_tiny_runs_with_one_name(tmp_path):
    results = []
    cfgs = [tiny(tmp_path, "output.name=twin", "output.turntable_frames=0", f"seed={s}") for s in (0, 1)]
    threads = [threading.Thread(target=lambda c=c: results.append(start_run(c))) for c in cfgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dirs = {r["run_dir"] for r in results}
    assert len(dirs) == 2
    seeds = sorted(load_config(Path(d) / "config.yaml").seed for d in dirs)
    assert seeds == [0, 1]


def test_concurrent_zips_of_one_run_do_not_collide(finished_run, tmp_path):
    folder = _copy_run(finished_run, tmp_path / "run")
    errors = []

    def z():
        try:
            zip_run(folder)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=z) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and zipfile.ZipFile(folder / "run.zip").testzip() is None


def test_batch_prompts_that_slug_alike_get_their_own_runs(tmp_path):
    from dream3d.batch import BatchJob, run_batch

    assert BatchJob("a red cube", 0).name != BatchJob("A RED CUBE", 0).name
    assert BatchJob("a red cube", 0).name == "a-red-cube-s0"  # plain prompts keep readable names
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\nA RED CUBE\n")
    index = run_batch(prompts, PRESET, tuple(TINY_RUN + ["output.turntable_frames=0"]), backend="local",
                      out=str(tmp_path / "batch"), progress=False)
    assert [r["status"] for r in index["runs"]] == ["finished", "finished"]
    assert len({r["run_dir"] for r in index["runs"]}) == 2


def test_long_prompts_and_seeds_keep_their_whole_batch_folder_name(tmp_path):
    from dream3d.batch import BatchJob

    for job in (BatchJob("a red cube " * 20, 2**62), BatchJob("A red cube with a very long description", 12345, ("x=1",))):
        assert RunDir.create(str(tmp_path), job.prompt, "c", job.seed, job.name).path.name == job.name


# -- 7. a run without a mesh format -------------------------------------------------------------------
def test_result_note_without_mesh_formats():
    assert result_note({"method": "visibility", "files": {}}) == "no mesh format asked for"
    assert "splats written" in result_note({"method": "visibility", "files": {"splat": "x.splat.ply"}})
    assert result_note({"files": {}, "faces": 12}) == "12 faces"


# -- 8. resume refuses an edited config.yaml ----------------------------------------------------------
@pytest.mark.parametrize("edit", [("prompt: a red cube", "prompt: a blue cube", "prompt"),
                                  ("guidance_scale: 1.0", "guidance_scale: 7.5", "guidance.guidance_scale")])
def test_resume_refuses_a_config_yaml_edited_after_the_checkpoint(finished_run, tmp_path, capsys, edit):
    folder = _copy_run(finished_run, tmp_path / "run")
    old, new, key = edit
    text = (folder / "config.yaml").read_text()
    assert old in text
    (folder / "config.yaml").write_text(text.replace(old, new))
    assert main(["resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert key in err and "checkpoint was trained with" in err


def test_resume_still_accepts_more_steps(finished_run, tmp_path):
    from dream3d.lifecycle import load_run

    folder = _copy_run(finished_run, tmp_path / "run")
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text().replace("steps: 6", "steps: 9"))
    trainer, _ = load_run(folder)
    assert trainer.cfg.train.steps == 9 and trainer.step == 6


# -- 9. the rest ---------------------------------------------------------------------------------------
def test_zip_run_skips_symlinks_out_of_the_run(finished_run, tmp_path):
    folder = _copy_run(finished_run, tmp_path / "run")
    (folder / "passwd").symlink_to("/etc/passwd")
    (folder / "etc").symlink_to("/etc", target_is_directory=True)
    names = zipfile.ZipFile(zip_run(folder)).namelist()
    assert "model.glb" in names and "checkpoints/last.pt" in names
    assert not any(n.startswith(("passwd", "etc")) for n in names), names


@pytest.mark.parametrize("advanced", ["scene.init_points=/etc/passwd", "output.out_dir=/tmp", "output.name=x"])
def test_ui_takes_no_server_paths(tmp_path, advanced):
    with pytest.raises(UserInputError, match="server|set by the UI"):
        make_config("toy/sds-gaussians", "a red cube", "", 100, 0, None, advanced, tmp_path)


def test_ui_keeps_the_presets_prior(tmp_path):
    for advanced in ("prior.name=stable_diffusion", "prior={name: stable_diffusion}"):
        with pytest.raises(UserInputError, match="comes from the preset"):
            make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, advanced, tmp_path)


def test_ui_caps_the_advanced_text_and_refuses_yaml_aliases(tmp_path):
    with pytest.raises(UserInputError, match="limit is"):
        make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, "# x\n" * 2000, tmp_path)
    bomb = "camera.elevation_range=[&a [0,0,0,0,0,0,0,0], &b [*a,*a,*a,*a,*a,*a,*a,*a], [*b,*b,*b,*b,*b,*b,*b,*b]]"
    with pytest.raises(ConfigError, match="aliases"):
        make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, bomb, tmp_path)
    with pytest.raises(ConfigError, match="nested too deeply"):
        make_config("toy/sds-nerf", "a red cube", "", 100, 0, None, "camera.fovy=" + "[" * 900 + "]" * 900, tmp_path)


def test_stable_diffusion_on_a_cpu_server_is_priced_as_such(tmp_path):
    from dream3d.cost import estimate_cost

    cpu = estimate_cost(load_config("configs/sd/sds-nerf.yaml", ["prior.device=cpu", "train.steps=400"]))
    gpu = estimate_cost(load_config("configs/sd/sds-nerf.yaml", ["prior.device=cuda", "train.steps=400"]))
    assert cpu.phases["training"][0] > 5 * gpu.phases["training"][0] and cpu.peak_bytes > gpu.peak_bytes


def test_checkpoint_frequency_is_priced():
    from dream3d.cost import estimate_cost

    every = estimate_cost(load_config(PRESET, ["output.checkpoint_every=1"]))
    assert every.seconds > estimate_cost(load_config(PRESET)).seconds + 40  # 1000 checkpoints, not 5


def test_ui_takes_no_model_path_or_hub_id(tmp_path):
    for key in ("prior.model=/root", "prior.revision=main", "prior.variant=fp16", "prior.local_files_only=false",
                "prior.single_file_config=/root"):
        with pytest.raises(UserInputError, match="server"):
            make_config("sd/sds-nerf", "a red cube", "", 100, 0, None, key, tmp_path)


def test_torch_writes_to_a_full_disk_raise_oserror():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with pytest.raises(OSError) as e:
        write_torch_file({"x": torch.zeros(1000)}, "/dev/full")
    assert e.value.errno == errno.ENOSPC


def test_full_disk_at_a_checkpoint_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    """The temp file of every checkpoint is /dev/full (the kernel's ENOSPC), through the real writer."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*a, **k):
        fd, path = real(*a, **k)
        if ".last." in os.path.basename(path):
            os.close(fd)
            os.unlink(path)
            os.symlink("/dev/full", path)
            fd = os.open(path, os.O_WRONLY)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert main(["run", PRESET, f"output.out_dir={tmp_path}"] + TINY_RUN) == 1
    err = capsys.readouterr().err
    assert "free disk space" in err and "No space left" in err


@pytest.mark.parametrize("override,words", [
    ("seed=18446744073709551616", "seed"),
    ("seed=-1", "seed"),
    ("camera.elevation_range=[0,10,20]", "elevation_range"),
    ("camera.azimuth_range=[0]", "azimuth_range"),
    ("camera.elevation_range=[.nan,10]", "finite"),
    ("prior.dataset_seed=-1", "dataset_seed"),
    ("a..b=1", "dotted key"),
])
def test_bad_values_are_clear_errors_not_tracebacks(tmp_path, capsys, override, words):
    assert main(["run", PRESET, override, f"output.out_dir={tmp_path}"] + TINY_RUN) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and words in err, err
    assert not any(tmp_path.iterdir())


def test_top_level_yaml_list_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "list.yaml"
    bad.write_text("- prompt\n- a red cube\n")
    assert main(["run", str(bad)]) == 2
    assert "must hold a mapping" in capsys.readouterr().err


def test_batch_prompt_file_with_invalid_utf8_names_the_line(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(b"a red cube\na blue \xff\xfe cube\n")
    assert main(["batch", str(prompts), "--config", PRESET, "--backend", "local", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "p.txt:2" in err and "UTF-8" in err


def test_corrupt_glb_given_to_eval_is_a_clear_error(finished_run, tmp_path, capsys):
    folder = _copy_run(finished_run, tmp_path / "run")
    (folder / "model.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage")
    assert main(["eval", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "cannot be read" in err and "dream3d export" in err


def test_stop_after_training_ends_the_export_and_reports_stopped(tmp_path):
    """Stop pressed during the export: no turntable, status 'stopped', the checkpoint final."""
    from dream3d.trainer import Trainer

    cfg = tiny(tmp_path, "output.name=late-stop")
    trainer = Trainer(cfg, RunDir.create(str(tmp_path), "x", "c", 0, "late-stop"), progress=False)
    stop = threading.Event()
    result = trainer.fit(stop, on_step=lambda s: stop.set() if s["step"] == s["steps"] else None)
    assert result["status"] == "stopped" and "stopped during export" in result["export"]["error"]
    assert not list(trainer.run_dir.path.glob("turntable.*")) and not (trainer.run_dir.path / "model.glb").exists()
    assert trainer.run_dir.load_checkpoint()["step"] == cfg.train.steps
    assert json.loads(trainer.run_dir.metrics.read_text())["status"] == "stopped"


# -- the server: cancel, Stop with a full queue, uploads, a run without meshes -----------------------
@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    url, demo = start_ui(tmp_path_factory.mktemp("sec_runs"), max_queue=1)
    yield url, demo
    demo.close()


def _wait_for_preview(job, seconds=120):
    deadline = time.time() + seconds
    while not any(u[1] for u in job.outputs()) and time.time() < deadline:
        time.sleep(0.3)
    assert any(u[1] for u in job.outputs()), "the run showed no preview"


def test_stop_works_when_the_queue_is_full(small_server):
    from gradio_client import Client
    from gradio_client.utils import Status

    url, _ = small_server
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    a = first.submit("toy/sds-nerf", "a red cube", "", 5000, 0, None, ADVANCED, api_name="/generate")
    _wait_for_preview(a)
    b = second.submit("toy/sds-nerf", "a blue cube", "", 20, 0, None, ADVANCED, api_name="/generate")
    deadline = time.time() + 30
    while b.status().code != Status.IN_QUEUE and time.time() < deadline:
        time.sleep(0.2)
    third = Client(url, verbose=False).submit("toy/sds-nerf", "a green cube", "", 20, 0, None, ADVANCED,
                                              api_name="/generate")
    with pytest.raises(Exception, match="(?i)queue is full"):
        third.result(timeout=60)
    # gradio_client always joins the queue; the page's Stop posts straight to /run/stop (queue=False), as here
    assert "Stopping" in _post_stop(url, first.session_hash)
    assert a.result(timeout=300)[0].startswith("**Stopped**")
    assert b.result(timeout=300)[0].startswith("**Finished**")


def _post(url: str, api_name: str, data: list, session_hash: str) -> str:
    req = urllib.request.Request(f"{url}gradio_api/run/{api_name}", method="POST",
                                 data=json.dumps({"data": data, "session_hash": session_hash}).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())["data"][0]


def _post_stop(url: str, session_hash: str) -> str:
    return _post(url, "stop", [], session_hash)


def test_stop_is_unqueued_and_generate_only_queued(small_server):
    """The page posts an unqueued event straight to /run/<name>; a queued one must go through the
    queue (its size and concurrency limits), never around it."""
    url, _ = small_server
    config = json.loads(urllib.request.urlopen(f"{url}config", timeout=30).read())
    queued = {d.get("api_name"): d.get("queue") for d in config["dependencies"]}
    assert queued["stop"] is False and queued["generate"] is not False
    with pytest.raises(urllib.error.HTTPError) as e:
        _post(url, "generate", ["toy/sds-nerf", "a red cube", "", 10, 0, None, ADVANCED], "direct")
    assert e.value.code == 404


def test_cancelled_job_ends_before_the_next_starts(small_server):
    """A visitor who cancels frees the slot only when the run's worker thread has ended."""
    from gradio_client import Client

    url, demo = small_server
    n0 = len(demo.jobs.log)
    a = Client(url, verbose=False).submit("toy/sds-nerf", "a red cube", "", 5000, 2, None, ADVANCED,
                                          api_name="/generate")
    _wait_for_preview(a)
    a_number = next(n for event, n, _ in demo.jobs.log[n0:] if event == "start")
    a.cancel()
    b = Client(url, verbose=False).submit("toy/sds-nerf", "a blue cube", "", 20, 3, None, ADVANCED,
                                          api_name="/generate")
    assert b.result(timeout=300)[0].startswith("**Finished**")
    a_end = next(t for event, n, t in demo.jobs.log if event == "end" and n == a_number)
    b_start = next(t for event, n, t in demo.jobs.log if event == "start" and n > a_number)
    assert a_end <= b_start, demo.jobs.log
    (a_dir,) = [d for d in Path(demo.runs_dir).glob("a-red-cube-*-s2-*")]
    metrics = json.loads((a_dir / "metrics.json").read_text())
    assert metrics["status"] == "stopped" and metrics["step"] < 5000


def test_a_run_with_no_mesh_format_finishes_in_the_ui(small_server):
    from gradio_client import Client

    url, _ = small_server
    status, _, _, glb, files = Client(url, verbose=False).predict(
        "toy/sds-nerf", "a red cube", "", 10, 0, None, ADVANCED + "\noutput.export.formats=[]", api_name="/generate")
    assert status.startswith("**Finished**") and "no mesh format asked for" in status
    assert glb is None and any(f.endswith("run.zip") for f in files)


def test_uploads_are_size_limited(small_server):
    """MAX_UPLOAD is 10 MB (a reference image); 11 MB is refused."""
    url, _ = small_server
    boundary = "dream3dboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + b"\0" * (11 * 2**20) + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        code = urllib.request.urlopen(req, timeout=30).status
    except urllib.error.HTTPError as e:
        code = e.code
    assert code == 413, code


def test_auth_keeps_the_app_behind_a_login(tmp_path):
    url, demo = start_ui(tmp_path, auth=("visitor", "pw"))
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}config", timeout=30)
        assert e.value.code in (401, 403)
        login = urllib.request.Request(f"{url}login", method="POST",
                                       data=b"username=visitor&password=pw",
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert urllib.request.urlopen(login, timeout=30).status == 200
    finally:
        demo.close()
