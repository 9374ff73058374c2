"""Image-quality evaluation: feature distances (FID/KID or their project-encoder variants), LPIPS, MS-SSIM,
mask statistics and image-mask consistency."""
