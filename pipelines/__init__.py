"""Thin stage entry points: parse args → call components → log. One module per DVC stage / MLflow entry point."""
