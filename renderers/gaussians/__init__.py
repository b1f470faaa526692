"""3D Gaussian splats: model, rasterization (gsplat on CUDA / torch), densification, PLY."""
