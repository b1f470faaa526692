"""Splat files (renderers/gaussians/splat_files.py): the orientation 3DGS viewers expect, checked
against the conventions read from their source (SuperSplat turns PLY / .splat 180 degrees about Z
on load; antimatter15's camera is OpenCV's, y down), and every format reloading as written."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from renderers.gaussians.splat_files import (
    MIN_OPACITY,
    SPLAT_FORMATS,
    read_splat_file,
    rotate_z180,
    splat_suffix,
    write_splat_file,
)


def quat_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices [N,3,3] of quaternions [N,4] (w x y z), written out independently."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                     np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                     np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], 1)


def sh_colour(sh0: np.ndarray, shn: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Colour [N,3] seen along unit directions d [N,3], real SH to degree 2 as the 3DGS code
    evaluates them (constants from Kerbl et al.'s sh_utils), independent of the code under test."""
    x, y, z = d.T
    basis = [0.28209479177387814 * np.ones_like(x),
             -0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x,
             1.0925484305920792 * x * y, -1.0925484305920792 * y * z, 0.31539156525252005 * (2 * z * z - x * x - y * y),
             -1.0925484305920792 * x * z, 0.5462742152960396 * (x * x - y * y)]
    coeffs = np.concatenate([sh0, shn], 1)  # [N,9,3]
    return sum(b[:, None] * coeffs[:, i] for i, b in enumerate(basis[:coeffs.shape[1]])) + 0.5


def random_splats(n: int = 600, sh_bands: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"means": torch.rand(n, 3, generator=g) - 0.5, "scales": torch.rand(n, 3, generator=g) * 2 - 5,
            "quats": torch.randn(n, 4, generator=g), "opacities": torch.randn(n, generator=g) * 3,
            "sh0": torch.randn(n, 1, 3, generator=g) * 0.5, "shN": torch.randn(n, sh_bands, 3, generator=g) * 0.3}


def test_viewer_frame_is_dream3d_turned_180_degrees_about_z(tmp_path):
    """A splat on top of the object (+Y in dream3d) is at -Y in the file (up for the viewers); the
    turn SuperSplat applies on load, (x, y, z) -> (-x, -y, z) with the rotations composed, gives
    back dream3d's positions, orientations and view-dependent colours exactly."""
    p = random_splats()
    p["means"][0] = torch.tensor([0.0, 0.4, 0.1])  # the top of the object, a little towards the front
    path = write_splat_file(p, tmp_path / f"m{splat_suffix('ply')}", "ply", "-y")
    f = read_splat_file(path, "ply")
    assert f["means"][0, 1] == pytest.approx(-0.4) and f["means"][0, 2] == pytest.approx(0.1)
    rz = np.diag([-1.0, -1.0, 1.0])
    means = p["means"].numpy()
    np.testing.assert_allclose(f["means"] @ rz.T, means, atol=1e-6)  # SuperSplat's load turn undoes ours
    # orientations: R_file = Rz R, so the covariance in the viewer's frame is Rz Sigma Rz^T
    np.testing.assert_allclose(quat_matrix(f["quats"]), rz @ quat_matrix(p["quats"].numpy()), atol=1e-5)
    np.testing.assert_allclose(f["scales"], p["scales"].numpy(), atol=1e-6)
    np.testing.assert_allclose(f["opacities"], p["opacities"].numpy(), atol=1e-6)
    # colours: seen along Rz d in the file = seen along d in dream3d
    d = np.random.default_rng(0).normal(size=(len(means), 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    np.testing.assert_allclose(sh_colour(f["sh0"], f["shN"], d @ rz.T),
                               sh_colour(p["sh0"].numpy(), p["shN"].numpy(), d), atol=1e-5)


def test_plus_y_writes_dream3d_frame_unchanged(tmp_path):
    p = random_splats(50, 3)
    f = read_splat_file(write_splat_file(p, tmp_path / "m.splat.ply", "ply", "+y"), "ply")
    for k in ("means", "scales", "quats", "opacities", "sh0", "shN"):
        np.testing.assert_allclose(f[k], p[k].numpy(), atol=1e-6, err_msg=k)


def test_rotation_is_a_proper_turn_for_every_sh_band():
    """rotate_z180 on SH of degree 3 (the colour test above covers degrees <= 2): odd orders m flip
    sign, even ones keep it, and turning twice is the identity."""
    p = random_splats(20, 15)
    twice = rotate_z180(rotate_z180(p))
    for k in p:
        torch.testing.assert_close(twice[k].abs(), p[k].abs())
    torch.testing.assert_close(twice["means"], p["means"])
    torch.testing.assert_close(twice["shN"], p["shN"])
    signs = (rotate_z180(p)["shN"] / p["shN"])[0, :, 0].round()
    expected = [-1, 1, -1] + [1, -1, 1, -1, 1] + [-1, 1, -1, 1, -1, 1, -1]  # bands 1..3, m = -l..l: odd m flip
    assert signs.tolist() == expected


@pytest.mark.parametrize("fmt", SPLAT_FORMATS)
def test_every_format_reloads_as_written(tmp_path, fmt):
    """ply exactly; .splat with its uint8 colours and rotations; ply_compressed with its per-chunk
    quantisation (positions and log scales in 11/10/11 bits of the chunk's range) and without the
    splats of opacity <= 1/255. Files reorder splats (Morton order), so match them by position."""
    p = random_splats()
    path = write_splat_file(p, tmp_path / f"m{splat_suffix(fmt)}", fmt, "-y")
    f = read_splat_file(path, fmt, sh_bands=8)
    ref = {k: v.numpy() for k, v in rotate_z180(p).items()}
    keep = np.ones(len(ref["means"]), bool)
    if fmt == "ply_compressed":
        keep = 1 / (1 + np.exp(-ref["opacities"])) > MIN_OPACITY
        assert 0 < keep.sum() < len(keep)
    ref = {k: v[keep] for k, v in ref.items()}
    assert len(f["means"]) == len(ref["means"])
    match = np.linalg.norm(f["means"][:, None] - ref["means"][None], axis=-1).argmin(1)
    assert len(set(match.tolist())) == len(match)
    ref = {k: v[match] for k, v in ref.items()}
    pos_tol, scale_tol, colour_tol = {"ply": (1e-6, 1e-6, 1e-6), "splat": (1e-6, 1e-6, 2.5 / 255),
                                      "ply_compressed": (1 / 1000, 4 / 1000, 2.5 / 255)}[fmt]
    np.testing.assert_allclose(f["means"], ref["means"], atol=pos_tol)
    np.testing.assert_allclose(f["scales"], ref["scales"], atol=scale_tol)
    # rotations equal up to quantisation (as matrices: q and -q are the same rotation); .splat truncates
    # q * 128 + 128 to a byte (up to 1/128 per component), ply_compressed rounds to 10 bits
    rot_tol = {"ply": 1e-5, "splat": 0.04, "ply_compressed": 0.005}[fmt]
    np.testing.assert_allclose(quat_matrix(f["quats"]), quat_matrix(ref["quats"]), atol=rot_tol)
    colour = lambda sh0: 0.5 + 0.28209479177387814 * sh0[:, 0]  # noqa: E731
    np.testing.assert_allclose(colour(f["sh0"]).clip(0, 1), colour(ref["sh0"]).clip(0, 1), atol=colour_tol)
    alpha = lambda logit: 1 / (1 + np.exp(-logit))  # noqa: E731
    np.testing.assert_allclose(alpha(f["opacities"]), alpha(ref["opacities"]), atol=1e-6 if fmt == "ply" else 1 / 255)
    if fmt != "splat":  # .splat holds no higher SH bands
        np.testing.assert_allclose(f["shN"], ref["shN"], atol=1e-6 if fmt == "ply" else 8 / 256)


def test_a_file_that_does_not_reopen_is_removed(tmp_path, monkeypatch):
    import renderers.gaussians.splat_files as sf

    monkeypatch.setattr(sf, "splat_bytes", lambda *a: b"not a splat file")
    with pytest.raises(RuntimeError, match="did not reopen"):
        write_splat_file(random_splats(10, 0), tmp_path / "m.splat", "splat")
    assert not (tmp_path / "m.splat").exists()


def test_gaussian_preset_run_leaves_every_splat_file(tmp_path):
    """`dream3d run configs/toy/sds-gaussians.yaml` writes model.splat.ply, model.splat and
    model.compressed.ply by default, in the viewers' frame (the trained Gaussians turned about Z)."""
    from dream3d.config import load_config
    from dream3d.lifecycle import load_run, start_run

    cfg = load_config("configs/toy/sds-gaussians.yaml", tiny_overrides("configs/toy/sds-gaussians.yaml") +
                      [f"output.out_dir={tmp_path}", "scene.sh_degree=1"])
    assert "splat" in cfg.output.export.formats and cfg.output.export.splat_up == "-y"
    result = start_run(cfg)
    files = result["export"]["files"]
    assert {"splat", "splat_antimatter", "splat_compressed"} <= set(files)
    assert files["splat"].endswith("model.splat.ply") and files["splat_antimatter"].endswith("model.splat")
    assert files["splat_compressed"].endswith("model.compressed.ply")
    g = load_run(result["run_dir"])[0].scene.gaussians
    ply = read_splat_file(files["splat"], "ply")
    np.testing.assert_allclose(ply["means"] * [-1, -1, 1], g.means.detach().numpy(), atol=1e-6)
    assert ply["shN"].shape == (len(g), 3, 3)
    assert math.isclose(len(read_splat_file(files["splat_antimatter"], "splat")["means"]), len(g))
    # `dream3d export RUN --format splat --splat-format splat --splat-up +y` rewrites one file in dream3d's frame
    from dream3d.cli import main

    Path(files["splat_antimatter"]).unlink()
    assert main(["export", result["run_dir"], "--format", "splat", "--splat-format", "splat", "--splat-up", "+y"]) == 0
    plus_y = read_splat_file(files["splat_antimatter"], "splat")["means"]
    ours = g.means.detach().numpy()
    assert np.abs(plus_y[:, None] - ours[None]).sum(-1).min(1).max() < 1e-6  # same points, unturned (file order differs)


def test_no_splats_to_write_is_a_clear_error(tmp_path):
    p = random_splats(20, 0)
    p["opacities"][:] = -20.0  # every splat invisible: ply_compressed would hold none
    with pytest.raises(ValueError, match="no finite visible"):
        write_splat_file(p, tmp_path / "m.compressed.ply", "ply_compressed")
    assert not (tmp_path / "m.compressed.ply").exists()
    write_splat_file(p, tmp_path / "m.splat.ply", "ply")  # the plain PLY keeps them
