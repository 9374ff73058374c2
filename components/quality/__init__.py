"""Image-quality evaluation: feature distances (FID/KID or their project-encoder variants), LPIPS, MS-SSIM,
mask statistics before and after the pair filter, image-mask consistency, per-class faithfulness and the
memorisation audit."""
