"""The one place that imports gsplat's private torch reference (`gsplat.cuda._torch_impl`).

Why: the CPU rasterizer (rasterize_torch.py), view-dependent colours (rasterize.py) and the
export fields (scene.py) need gsplat's exact projection / covariance / SH maths without its CUDA
kernels, and gsplat only ships them as private functions. Keeping the import here means a gsplat
release that moves or changes them breaks one module, and the signatures we rely on are listed
in one place.

Checked against gsplat 1.5.3 (the version the tests run with), where:
- `quat_scale_to_covar_preci(quats [...,4], scales [...,3], compute_covar=True, compute_preci=True,
  triu=False) -> (covars [...,3,3] | None, precis [...,3,3] | None)`
- `fully_fused_projection(means [N,3], covars [N,3,3], viewmats [C,4,4], Ks [C,3,3], width, height,
  eps2d=0.3, near_plane=0.01, ...) -> (radii [C,N,2] int, means2d [C,N,2], depths [C,N], conics [C,N,3],
  compensations | None)`; radii has one value per image axis since gsplat 1.5 (earlier: [C,N])
- `spherical_harmonics(degrees_to_use, dirs [...,3], coeffs [...,K,3]) -> colours [...,3]`
Import this module lazily (inside functions), as gsplat itself is imported lazily elsewhere.
"""
from gsplat.cuda._torch_impl import _fully_fused_projection as fully_fused_projection
from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci as quat_scale_to_covar_preci
from gsplat.cuda._torch_impl import _spherical_harmonics as spherical_harmonics

__all__ = ["fully_fused_projection", "quat_scale_to_covar_preci", "spherical_harmonics"]
