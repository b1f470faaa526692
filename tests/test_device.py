"""train.device: every tensor of a training step on the run's device, checked on a CPU-only machine
with a virtual second device (tests/device_audit.py), and the device settings' errors."""
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides
from device_audit import VIRTUAL, OnDevice, virtual_device

import dream3d.trainer
from dream3d.config import load_config
from dream3d.kernel import draws
from dream3d.kernel.device import prior_device, resolve_device
from dream3d.kernel.schema import ConfigError
from dream3d.runs import RunDir
from dream3d.trainer import Trainer

FDIV = ["guidance.bank_size=2", "guidance.bank_sampler_steps=2"]
CASES = [  # every scene type and every ToyWorld guidance preset (buffers and trainables of their own included)
    *[(str(p), FDIV if "fdiv" in p.name else []) for p in sorted(Path("configs/toy").glob("*.yaml"))],
    ("configs/toy/sds-nerf.yaml", ["scene.shading=diffuse", "scene.ambient_only_steps=0", "scene.orientation_weight=1",
                                   "scene.normal_method=analytic"]),  # shading, normals by autograd.grad
]


def audited_trainer(tmp_path, preset, extra, monkeypatch, steps=3):
    """A tiny run of `preset` built and trained `steps` steps on the virtual device; (trainer, mode)."""
    refresh = [] if "gaussians" in preset else ["scene.occupancy_every=1"]  # the NeRF's grid update runs in the steps
    cfg = load_config(preset, tiny_overrides(preset) + [f"output.out_dir={tmp_path}", "train.steps=50", *refresh, *extra])
    Trainer(cfg, RunDir.create(str(tmp_path), "warm", "c", 0, "warm"), progress=False)  # datasets cached outside the audit
    monkeypatch.setattr(dream3d.trainer, "resolve_device", lambda name: VIRTUAL)
    with virtual_device() as mode:
        trainer = Trainer(cfg, RunDir.create(str(tmp_path), cfg.prompt, "c", 0, "audit"), progress=False)
        for _ in range(steps):
            trainer.train_step()
        trainer.check_convergence()
        trainer.save_preview()
    return trainer, mode


@pytest.mark.parametrize("preset,extra", CASES, ids=[f"{c[0].split('/')[-1][:-5]}{'+' if c[1] else ''}" for c in CASES])
def test_a_training_step_makes_no_tensor_off_the_run_device(tmp_path, monkeypatch, preset, extra):
    trainer, mode = audited_trainer(tmp_path, preset, extra, monkeypatch)
    assert not mode.violations, "\n".join(f"{v.where}: {v.what}" for v in mode.violations[:10])
    # not vacuous: the scene, the optimiser's state and the guidance's buffers are on the virtual device
    assert all(isinstance(p, OnDevice) for p in trainer.scene.parameters())
    assert all(isinstance(v, OnDevice) for s in trainer.optimizer.state.values() for v in s.values() if v.dim() > 0)
    assert all(isinstance(b, OnDevice) for b in trainer.guidance.buffers() if b.numel())
    assert mode.checked > 1000


def test_a_planted_cpu_tensor_in_a_step_is_caught(tmp_path, monkeypatch):
    """The audit fails a step whose noise is drawn without moving it to the device, naming the line."""
    monkeypatch.setattr(draws, "randn", lambda shape, generator, device=None: torch.randn(tuple(shape), generator=generator))
    _, mode = audited_trainer(tmp_path, "configs/toy/sds-nerf.yaml", [], monkeypatch, steps=1)
    assert mode.violations and all(v.where.startswith("guidance/") for v in mode.violations), mode.violations[:3]


def test_the_audit_catches_what_cuda_refuses():
    with virtual_device() as mode:
        on = torch.zeros(4, device=VIRTUAL)
        assert on.device == VIRTUAL and isinstance(on + 1, OnDevice)
        on + torch.tensor(2.0)  # a 0-dim CPU scalar: CUDA allows it
        assert not mode.violations
        on + torch.ones(4)  # a CPU tensor made without a device
        on.numpy()
        torch.ones(2).cuda()
        assert not isinstance(on.cpu(), OnDevice)
    assert [v.what.split()[0] for v in mode.violations] == ["TensorBase.add", ".numpy()", ".cuda()"]


# -- settings --------------------------------------------------------------------------------
def test_auto_is_the_cpu_here_and_cuda_is_one_clear_error():
    assert resolve_device("auto") == torch.device("cpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=r"train.device=cuda: no CUDA device on this machine .*train.device=auto"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="valid: auto, cpu, cuda, cuda:N, mps"):
        load_config("configs/toy/sds-nerf.yaml", ["train.device=gpu"])


def test_prior_device_follows_the_run_or_names_the_mismatch():
    cpu = torch.device("cpu")
    assert prior_device(cpu, "auto") == cpu and prior_device(cpu, None) == cpu
    with pytest.raises(ConfigError, match="prior.device=.*does not match train.device"):
        prior_device(torch.device("cuda"), "cpu")


def test_cli_run_on_a_missing_gpu_stops_with_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from dream3d.cli import main

    assert main(["run", "configs/toy/sds-nerf.yaml", "train.device=cuda", f"output.out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.device=cuda: no CUDA device" in err, err
    assert not any(tmp_path.iterdir())  # stopped before any work: no run folder


@pytest.mark.parametrize("preset", ["configs/toy/sds-nerf.yaml", "configs/toy/sds-gaussians.yaml"])
def test_export_turntable_and_eval_take_a_scene_on_the_run_device(tmp_path, monkeypatch, preset):
    """Isosurface, texture bake, the Gaussians' surface maps and splat files, the turntable and
    `dream3d eval`'s renders read a scene that lives on the device."""
    from dream3d.evaluate import evaluate_scene

    trainer, _ = audited_trainer(tmp_path, preset, [], monkeypatch, steps=2)
    with virtual_device() as mode:
        info = trainer.export()
        trainer.save_turntable()
        metrics = evaluate_scene(trainer.scene, trainer.cfg, trainer.run_dir.asset("glb"))
    assert "error" not in info, info
    assert 0 <= metrics["silhouette_iou"] <= 1 and metrics["volumetric_iou"] is not None
    assert not mode.violations, "\n".join(f"{v.where}: {v.what}" for v in mode.violations[:10])
    assert mode.checked > 100


def test_mlp_precision_bf16_is_a_switch_and_fp32_is_the_plain_path():
    from renderers.nerf.field import RadianceField

    torch.manual_seed(0)
    field = RadianceField(0.6, 4, 16, 64, 2, 18, 32, 10.0, 0.5)
    points = torch.rand(512, 3) - 0.5
    sigma, albedo = field(points)
    # fp32: exactly the MLP on the grid features, as before the switch existed
    h = field.mlp(field.encoding((points / 0.6 + 1) / 2))
    r = points.norm(dim=-1)
    assert torch.equal(sigma, torch.exp((h[:, 0] + 10.0 * (1 - r / 0.5)).clamp(max=15.0)))
    assert torch.equal(albedo, torch.sigmoid(h[:, 1:]))
    field.mlp_precision = "bf16"
    sigma16, albedo16 = field(points)
    assert sigma16.dtype == torch.float32 and not torch.equal(albedo16, albedo)  # it did run in bfloat16 ...
    assert (albedo16 - albedo).abs().max() < 0.02  # ... and stays close
    sigma16.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in field.parameters() if p.grad is not None)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("preset", ["configs/toy/sds-nerf.yaml", "configs/toy/sds-gaussians.yaml"])
def test_a_cuda_run_repeats_and_resumes_from_its_checkpoint(tmp_path, preset):
    """Same seed, same scene on CUDA, and a run checkpointed at step 3 and resumed to 6 matches one
    trained straight to 6 (the checkpoint carries the CUDA RNG). Float atomics in the kernels'
    backward (and Adam's tiny eps, which turns a near-zero gradient's sign into a full step) make two
    identical CUDA runs differ a little: the resumed run may differ from the straight one by no more
    than that measured run-to-run difference (plus 1e-4)."""
    from dream3d.lifecycle import load_run, resume_run

    def cfg(name, *extra):
        return load_config(preset, tiny_overrides(preset) + [f"output.out_dir={tmp_path}", "train.device=cuda",
                                                             f"output.name={name}", *extra])

    runs = {}
    for name in ("a", "b"):
        t = Trainer(cfg(name), RunDir.create(str(tmp_path), "x", "c", 0, name), progress=False)
        while t.step < 6:
            t.train_step()
        assert next(t.scene.parameters()).is_cuda
        runs[name] = {k: v.detach().cpu() for k, v in t.scene.state_dict().items() if isinstance(v, torch.Tensor)}
    half = Trainer(cfg("half", "train.steps=3"), RunDir.create(str(tmp_path), "x", "c", 0, "half"), progress=False)
    half.fit()
    resume_run(half.run_dir.path, ("train.steps=6",), progress=False)
    resumed, _ = load_run(half.run_dir.path)
    runs["resumed"] = {k: v.detach().cpu() for k, v in resumed.scene.state_dict().items() if isinstance(v, torch.Tensor)}
    def gap(other: str) -> float:
        assert runs[other].keys() == runs["a"].keys()
        return max(float((runs[other][k].float() - v.float()).abs().max()) if runs[other][k].shape == v.shape else
                   float("inf") for k, v in runs["a"].items() if v.numel())

    noise = gap("b")
    assert noise < float("inf"), "two runs with one seed densified to different Gaussian counts"
    assert gap("resumed") <= 3 * noise + 1e-4, (gap("resumed"), noise)


def test_a_checkpoint_made_on_the_cpu_loads_onto_the_run_device(tmp_path, monkeypatch):
    """Resuming moves everything the checkpoint holds (Gaussians, Adam's moments, the densifier's
    running gradients) onto the run's device."""
    preset = "configs/toy/sds-gaussians.yaml"
    cfg = load_config(preset, tiny_overrides(preset) + [f"output.out_dir={tmp_path}", "train.steps=50"])
    cpu = Trainer(cfg, RunDir.create(str(tmp_path), "cpu", "c", 0, "cpu"), progress=False)
    for _ in range(3):
        cpu.train_step()
    path = cpu.save_checkpoint()
    assert any(isinstance(v, torch.Tensor) for v in cpu.scene.densifier.state.values())  # densifying by now
    state = RunDir(path.parent.parent).load_checkpoint()
    monkeypatch.setattr(dream3d.trainer, "resolve_device", lambda name: VIRTUAL)
    with virtual_device() as mode:
        trainer = Trainer(cfg, RunDir.create(str(tmp_path), "dev", "c", 0, "dev"), progress=False)
        trainer.load_state_dict(state)
        for _ in range(3):
            trainer.train_step()
    assert not mode.violations, "\n".join(f"{v.where}: {v.what}" for v in mode.violations[:10])
    assert all(isinstance(v, OnDevice) for v in trainer.scene.densifier.state.values() if isinstance(v, torch.Tensor))


def test_export_and_eval_load_a_run_trained_on_a_gpu_on_this_machine(tmp_path, capsys):
    """config.yaml says train.device=cuda (trained on a GPU); `dream3d export` / `eval` default to
    --device auto, so they work here; asking for CUDA here is one clear line."""
    from dream3d.cli import main
    from dream3d.lifecycle import start_run

    cfg = load_config("configs/toy/sds-nerf.yaml", tiny_overrides("configs/toy/sds-nerf.yaml") + [
        f"output.out_dir={tmp_path}", "train.steps=2", "output.export.formats=[]", "output.turntable_frames=0"])
    run = RunDir(start_run(cfg, progress=False)["run_dir"])
    run.config.write_text(run.config.read_text().replace("device: auto", "device: cuda"))
    assert "device: cuda" in run.config.read_text()
    assert main(["export", str(run.path), "--format", "ply"]) == 0 and run.asset("ply").exists()
    assert main(["eval", str(run.path)]) == 0
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert main(["export", str(run.path), "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
