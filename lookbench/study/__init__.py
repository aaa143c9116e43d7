"""Studies: trial configurations, the shared trial runner and (later) the Optuna engine."""
