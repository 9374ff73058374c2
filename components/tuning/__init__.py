"""Ray Tune sweeps over LoRA rank and sampling settings; trials report through a caller-supplied tracker."""
