"""Typed config of the `quality` stage (params.yaml section `quality`)."""
from __future__ import annotations

from dataclasses import dataclass, field



@dataclass
class QualityConfig:
    """Inputs, feature space, pair sampling and the consistency segmenter of the Table-1 evaluation."""
    real_dir: str = "data/real"
    synthetic_dir: str = "data/synthetic"
    categories: list[str] = field(default_factory=list)  # [] = the real dataset's classes (categories.json)
    image_size: int = 0                 # images compared at this side (0 = the smaller of real and synthetic)
    feature_extractor: str = "auto"     # auto | inception | tv_inception | vae (components/quality/features.py)
    inception_weights: str = ""         # local Inception-v3 weights file; "" = the project VAE feature space
    vae_dir: str = "models/base"        # diffusers folder whose vae/ gives the `vae` feature space
    kid_subsets: int = 100
    kid_subset_size: int = 1000         # clipped to the smallest set
    pairs: int = 1000                   # random cross pairs for MS-SSIM and LPIPS (overall)
    class_pairs: int = 200              # ... and per class
    msssim_kernel_size: int = 7
    lpips_net: str = "alex"             # alex | vgg | squeeze
    lpips_weights: str = ""             # local torchvision ImageNet weights of that backbone; "" = unavailable
    min_class_samples: int = 10         # per-class Fréchet distance only when both sets have this many
    consistency: bool = True            # Dice of each mask against a segmenter trained on real training pairs
    segmenter: str = "tiny_unet"        # components/downstream/segmenters.py registry name
    segmenter_size: int = 64
    segmenter_epochs: int = 5
    segmenter_batch_size: int = 16
    segmenter_lr: float = 0.003
    faithfulness: bool = True           # Table 1b: per-class recall of a real-trained classifier, test vs synthetic
    faithfulness_trees: int = 200       # random forest size of that classifier
    seed: int = 42
    device: str = "auto"
    batch_size: int = 32
    metrics_file: str = "metrics/quality.json"
    report_dir: str = "reports/quality"  # table1.md and the mask-statistics histograms
    progress: bool = True
