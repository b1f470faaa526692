import json
import subprocess
import sys

from conftest import TINY_RUN

from dream3d.cli import main
from dream3d.export import load_mesh


def test_config_show_prints_merged_config(capsys):
    assert main(["config", "show", "configs/toy/sds-nerf.yaml", "seed=7"]) == 0
    out = capsys.readouterr().out
    assert "seed: 7" in out and "view_conditioning: camera" in out


def test_bad_key_exits_2_with_message(capsys):
    assert main(["run", "configs/toy/sds-nerf.yaml", "guidance.guidance_scal=3"]) == 2
    err = capsys.readouterr().err
    assert "guidance.guidance_scal" in err and "guidance_scale" in err


def test_unknown_prompt_word_exits_2_listing_vocabulary(tmp_path, capsys):
    assert main(["run", "configs/toy/sds-nerf.yaml", "prompt=a red dragon", f"output.out_dir={tmp_path}"] + TINY_RUN) == 2
    err = capsys.readouterr().err
    assert "dragon" in err and "cube" in err
    assert not any(tmp_path.iterdir())  # nothing started


def test_run_export_eval_end_to_end(tmp_path, capsys):
    assert main(["run", "configs/toy/sds-nerf.yaml", f"output.out_dir={tmp_path}", "output.name=e2e"] + TINY_RUN) == 0
    run_dir = tmp_path / "e2e"
    assert main(["export", str(run_dir), "--format", "ply", "--method", "density"]) == 0
    assert (run_dir / "model.ply").exists()
    # re-export with a face budget and texture size, no retraining
    assert main(["export", str(run_dir), "--format", "glb", "--texture-size", "128", "--faces", "300"]) == 0
    mesh = load_mesh(run_dir / "model.glb")
    assert 0 < len(mesh.faces) <= 300 and mesh.visual.material.baseColorTexture.size == (128, 128)
    assert main(["export", str(run_dir), "--level", "abc", "--method", "density"]) == 2
    assert main(["export", str(run_dir), "--texture-size", "4"]) == 2
    assert "texture_size" in capsys.readouterr().err
    assert main(["eval", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "silhouette_iou" in out
    result = json.loads((run_dir / "eval.json").read_text())
    for k in ("silhouette_iou", "colour_error", "saturation", "volumetric_iou"):
        assert 0 <= result[k] <= 1


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "dream3d.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "run" in out.stdout and "eval" in out.stdout
