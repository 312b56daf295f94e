"""Commands people run around the pipeline, not stages: the grid and sweeps (DVC's queue or a Ray cluster, with
warm interpreters), a local Ray cluster, the team stack (PostgreSQL + MLflow with logins + a DVC remote) and the
guard every MLflow server of the project runs behind (guard, throttle). No DVC stage imports them, so changing
them reruns nothing."""
