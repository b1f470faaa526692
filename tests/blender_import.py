"""Import a GLB into Blender (the `bpy` module, Blender as a Python package) and report what Blender made of it:
mesh objects, faces, UV layers, and each material's base colour source (an image texture: its size and mean
colour; or a plain colour). Blender runs in its own Python (bpy pins its Python version and is 370 MB), named by
$DREAM3D_BLENDER_PYTHON or .cache/blender/bin/python (.ci/run installs it there); tests skip without it.

    python tests/blender_import.py model.glb        # with a Python that has bpy: prints the report as JSON
"""
import json
import os
import subprocess
import sys
from pathlib import Path

BLENDER_PYTHON = Path(os.environ.get("DREAM3D_BLENDER_PYTHON", Path(__file__).parent.parent / ".cache" / "blender" /
                                     "bin" / "python"))


def blender_report(path) -> dict:
    """What Blender imports from a GLB (see `import_glb`), run in BLENDER_PYTHON; skips the test without it."""
    import pytest

    if not BLENDER_PYTHON.exists():
        pytest.skip(f"needs Blender's Python module: python3 -m venv .cache/blender && .cache/blender/bin/pip install "
                    f"bpy (or set DREAM3D_BLENDER_PYTHON); {BLENDER_PYTHON} does not exist")
    out = subprocess.run([str(BLENDER_PYTHON), __file__, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def import_glb(path: str) -> dict:
    """Inside Blender: an empty scene, the glTF importer on `path`, and the report."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=path)
    meshes = []
    for ob in bpy.data.objects:
        if ob.type != "MESH":
            continue
        me = ob.data
        materials = []
        for mat in me.materials:
            nodes = mat.node_tree.nodes if mat.node_tree is not None else []
            bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None)
            entry = {"name": mat.name, "base_color": None, "image": None}
            if bsdf is not None:
                base = bsdf.inputs["Base Color"]
                source = base.links[0].from_node if base.is_linked else None
                if source is not None and source.type == "TEX_IMAGE" and source.image is not None:
                    img = source.image
                    px = list(img.pixels[:])
                    n = len(px) // 4
                    mean = [sum(px[c::4]) / max(n, 1) for c in range(3)]
                    entry["image"] = {"size": list(img.size), "mean_rgb": mean, "packed": img.packed_file is not None}
                elif source is None:
                    entry["base_color"] = list(base.default_value)[:3]
            materials.append(entry)
        meshes.append({"name": ob.name, "vertices": len(me.vertices), "faces": len(me.polygons),
                       "uv_layers": [layer.name for layer in me.uv_layers],
                       "color_attributes": [a.name for a in me.color_attributes], "materials": materials})
    return {"blender": bpy.app.version_string, "meshes": meshes}


if __name__ == "__main__":
    report = import_glb(sys.argv[1])
    sys.stdout.flush()
    print(json.dumps(report))
