"""Great Expectations results in MLflow: metrics, the summary JSON as an artifact, a pass/fail tag."""
from __future__ import annotations

import mlflow

from components.data.validation import ValidationSummary


def log_validation(summary: ValidationSummary, artifact_name: str) -> None:
    """Log a validation summary to the active run (nothing without one).

    Metrics validation_<kind>_success / _failed, the summary as validation/<artifact_name>, tag validation.<kind>.
    """
    if mlflow.active_run() is None:
        return
    mlflow.log_metrics({f"validation_{summary.kind}_success": float(summary.success),
                        f"validation_{summary.kind}_failed": float(len(summary.failures))})
    mlflow.log_dict(summary.to_dict(), f"validation/{artifact_name}")
    mlflow.set_tag(f"validation.{summary.kind}", "passed" if summary.success else "failed")
