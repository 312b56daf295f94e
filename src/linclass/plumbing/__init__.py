"""How stages run: config (conf/ -> params.yaml), stage entry points, file layout, MLflow tracking, sweeps."""
