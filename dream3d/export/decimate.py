"""Decimation by quadric edge collapse (fast-simplification through trimesh): to a face budget,
or to the fewest faces that keep the surface within an error of the original."""
from __future__ import annotations

import numpy as np
import trimesh

from dream3d.export.isosurface import drop_degenerate
from dream3d.export.writers import ExportError

MIN_FACES = 500  # the collapse does not reliably reach much lower targets on marching-cubes meshes
ERROR_SAMPLES = 2000  # points per side of the two-sided surface distance
ERROR_QUANTILE = 0.99


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """The mesh with at most `max_faces` faces (unchanged when already within budget or when
    max_faces is 0). Colours are not carried over: the caller repaints from the scene."""
    if max_faces <= 0 or len(mesh.faces) <= max_faces:
        return mesh
    target = max_faces
    for _ in range(4):  # the collapse can stop a few faces above its target; aim lower until it fits
        out = mesh.simplify_quadric_decimation(face_count=target)
        if len(out.faces) <= max_faces:
            break
        target = int(target * 0.97)
    else:
        # an ExportError: the run keeps its checkpoint and says how to export again (Trainer.export)
        raise ExportError(f"could not decimate {len(mesh.faces)} faces to {max_faces} (a noisy surface: train longer); "
                          "raise output.export.max_faces, or set it to 0 for no budget, then `dream3d export RUN_DIR`")
    out = drop_degenerate(trimesh.Trimesh(out.vertices, out.faces, process=True))  # collapses leave slivers
    if out.volume < 0:
        out.invert()
    return out


def surface_distance(a: trimesh.Trimesh, b: trimesh.Trimesh, samples: int = ERROR_SAMPLES,
                     quantile: float = ERROR_QUANTILE) -> float:
    """Two-sided distance between two surfaces: the `quantile` of the distances from `samples`
    points on either (its vertices when fewer, else seeded random points on its faces) to the
    other surface (exact point-to-triangle distances, trimesh.proximity). A high quantile rather
    than the maximum: one collapsed speck of marching-cubes noise should not keep 30k faces."""
    def points(m: trimesh.Trimesh) -> np.ndarray:
        if len(m.vertices) <= samples:
            return m.vertices
        return trimesh.sample.sample_surface(m, samples, seed=0)[0]

    distances = np.concatenate([trimesh.proximity.closest_point(b, points(a))[1],
                                trimesh.proximity.closest_point(a, points(b))[1]])
    return float(np.quantile(distances, quantile))


def decimate_to_error(mesh: trimesh.Trimesh, max_error: float, max_faces: int,
                      tries: int = 5) -> tuple[trimesh.Trimesh, float]:
    """About the fewest faces (at least MIN_FACES, at most `max_faces`; 0 = no budget) whose surface
    stays within `max_error` (surface_distance) of `mesh`; returns (mesh, its distance).

    Quadric collapse error falls roughly as 1 / faces, so each try scales the face count by
    error / max_error (bracketed by the tries so far), `tries` decimations at most. A collapse that
    opens a closed mesh (quadric collapse can, on thin parts: a torus's ring lost it at 1295 faces)
    counts as a miss, so more faces are tried (x1.5). When even the budget's face count misses, the
    budget wins (the distance returned says by how much), open or not."""
    budget = min(len(mesh.faces), max_faces or len(mesh.faces))
    if budget <= MIN_FACES:
        out = decimate(mesh, budget)
        return out, 0.0 if out is mesh else surface_distance(mesh, out)
    good: tuple[int, trimesh.Trimesh, float] | None = None  # the fewest faces within max_error so far
    bad = MIN_FACES - 1  # the most faces known to miss it
    n = min(budget, 4 * MIN_FACES)
    closed = mesh.is_watertight
    for _ in range(tries):
        candidate = decimate(mesh, n)
        error = surface_distance(mesh, candidate)
        last = n
        opened = closed and not candidate.is_watertight
        if error <= max_error and not opened:
            good = (n, candidate, error)
        elif n == budget:
            break  # the budget itself misses max_error
        else:
            bad = n
        upper = good[0] if good else budget
        guess = n * error / max_error * (1.0 if error <= max_error else 1.1)  # aim just inside when going up
        if opened:
            guess = max(guess, 1.5 * n)  # more faces keep thin parts
        n = int(np.clip(guess, bad + 1, upper - 1 if good else upper))
        if upper - bad <= upper // 5 or (good and n > 0.8 * upper):
            break  # within 20% of the best known count
    if good is not None:
        return good[1], good[2]
    if last != budget:
        candidate = decimate(mesh, budget)
        error = surface_distance(mesh, candidate)
    return candidate, error
