"""MLflow helpers: tracking URI, stage runs, lineage tags, figures, registry and promotion."""
