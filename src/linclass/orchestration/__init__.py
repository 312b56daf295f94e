"""Commands people run around the pipeline, not stages: the grid and sweeps (DVC's queue or a Ray
cluster), a local Ray cluster, the team stack (PostgreSQL + MLflow with logins + a DVC remote), the
workspace lock. No DVC stage imports them, so changing them reruns nothing."""
