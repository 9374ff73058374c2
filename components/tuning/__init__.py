"""Ray Tune sweeps over LoRA rank and sampling settings, one MLflow child run per trial."""
