"""MLflow for linclass: the store, runs that end honestly, what a run records, the model registry.

    store         the sqlite store never silently replaced, created under a lock; dead runs marked KILLED
    runs          where the store is, its experiments, tracked runs (FINISHED / FAILED / KILLED, never RUNNING)
    signals       SIGINT / SIGTERM raised outside store calls, so that a run can still be ended
    records       a training run's params, curves and metrics, its data set
    registry      each model as an MLflow Model, registered; the best on validation is `champion`
    served_model  that model (models from code): raw 32x32x3 uint8 images in, class and scores out
    ui            how the MLflow UI shows the runs
    serve         `linclass ui` and `linclass server` (behind linclass.orchestration.guard)
"""
