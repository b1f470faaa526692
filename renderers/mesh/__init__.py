"""Triangle-mesh scenes: a differentiable rasteriser (pure torch; nvdiffrast on CUDA when installed) and DMTet geometry."""
