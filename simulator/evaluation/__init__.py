"""Measuring a simulator: evaluate.py (`unisim eval`: the model and its baselines on held-out clips, by action error,
PSNR, SSIM and FVD*) and fidelity.py (FID/FVD: Fréchet distances of image and video features)."""
