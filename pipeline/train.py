"""DVC stages `train@<loss>-<regularizer>` (one model on the pixels) and `train_features@<kind>` (every loss x
regularizer of the grid on the features of stage features@<kind>): SGD on the training split, each model tracked
in one MLflow run.

Writes, per model, W.npy, b.npy, history_steps.csv and history_epochs.csv in models/<loss>-<regularizer> (pixels)
or models/<kind>/<loss>-<regularizer> (features), and its summary in metrics/train/<loss>-<regularizer>.json or
under its name in metrics/train/<kind>.json. The MLflow run (named <model>-<params hash>, <model> =
<loss>-<regularizer> or <loss>-<regularizer>-<kind>) gets this model's own settings as params (`features`: pixels
or the kind), reproducibility tags, the loss curves (at chart resolution; the full history is the artifact
training/history_steps.csv), the accuracy per epoch, the weights and what they show: a pixel model's template
images and its classifier as an MLflow Model (it takes raw images); a features model's weights per class on the
hue bins and its HOG glyphs per cell (its weights are not an image; it logs no MLflow Model: one taking raw
images would have to compute the features).

The features models of a kind train in one stage, side by side in forked processes (one per core): a model
on 738 features trains in about 3 s, and a stage process of its own would pay its start-up (imports, the
store, DVC's bookkeeping: about 4 s) again per model. Each model's numbers do not depend on how many
processes there are. One line per epoch while it trains. Outputs appear only when everything succeeded.
"""
import json
import multiprocessing
import os
import signal
import tempfile
import time
import warnings
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path

from linclass.plumbing.threads import set_blas_threads

set_blas_threads()  # before numpy is imported: BLAS reads its thread count once, when it loads
import numpy as np  # noqa: E402
from mlflow.entities import Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from linclass import plots  # noqa: E402
from linclass.core.pixels import Pixels  # noqa: E402
from linclass.core.sgd import train_sgd  # noqa: E402
from linclass.core.stats import wilson_interval  # noqa: E402
from linclass.features import SETTINGS  # noqa: E402
from linclass.files import md5_file  # noqa: E402
from linclass.plumbing import progress  # noqa: E402
from linclass.plumbing.paths import (  # noqa: E402
    FEATURES,
    MODELS,
    dvc_lock_hashes,
    load_input,
    load_npy,
    load_split,
    train_metrics_file,
)
from linclass.plumbing.paths import class_names as load_class_names  # noqa: E402
from linclass.plumbing.stage import (  # noqa: E402
    EXIT_SIGINT,
    EXIT_SIGTERM,
    Terminated,
    atomic_dir,
    run,
    stage_params,
    train_models,
    write_json,
)
from linclass.studies.loss_questions import initial_loss, initial_loss_check  # noqa: E402
from linclass.tracking import records, registry  # noqa: E402
from linclass.tracking.runs import git_commit, setup, tracked_run  # noqa: E402
from linclass.tracking.ui import set_runs_view  # noqa: E402


def main() -> None:
    params = stage_params()
    models = train_models(params)  # from DVC_STAGE, or --loss/--regularizer: one pixel model
    kind = models[0][2]
    if kind == "pixels":
        [(loss, regularizer, _)] = models
        summary = train_one(params, loss, regularizer, kind, MODELS / f"{loss}-{regularizer}")
        write_json(train_metrics_file(f"{loss}-{regularizer}"), summary)
        return
    processes = min(len(models), len(os.sched_getaffinity(0)))
    with atomic_dir(MODELS / kind) as out:
        jobs = [(params, loss, regularizer, kind, out / f"{loss}-{regularizer}") for loss, regularizer, _ in models]
        summaries = [train_one(*job) for job in jobs] if processes == 1 else side_by_side(jobs, processes)
    names = [f"{loss}-{regularizer}-{kind}" for loss, regularizer, _ in models]
    write_json(train_metrics_file(names[0]), dict(zip(names, summaries, strict=True)))


def side_by_side(jobs: list[tuple], processes: int) -> list[dict]:
    """train_one(*job) for each job in `processes` forked processes; their summaries in the order of `jobs`.

    Forked before any store is opened here: each process opens its own. The first failure stops the
    others (SIGTERM: their runs end KILLED) and is raised; a process that dies (killed, out of memory)
    breaks the pool, which stops the others the same way (BrokenProcessPool, one line).
    """
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_on_signals_in_pool) as pool:
        futures = [pool.submit(_train_in_pool, job) for job in jobs]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f.exception() for f in futures if f.done() and f.exception()), None)
            if failed is not None:
                raise failed
            return [future.result() for future in futures]
        except BaseException:   # a model failed, or this stage was stopped: stop the models still training
            for future in futures:
                future.cancel()
            stop_processes(multiprocessing.active_children())   # the pool's processes
            raise


def stop_processes(processes, grace: float = 30.0) -> None:
    """SIGTERM to each (a model in training ends its run KILLED), then SIGKILL to any still there after `grace`
    seconds: every one must be gone before the pool shuts down, which otherwise waits for an idle one that
    blocks on a queue lock a terminated one held."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


_training = False  # in a pool process: whether a model is training now


def _on_signals_in_pool() -> None:
    signal.signal(signal.SIGTERM, _stop_in_pool)
    signal.signal(signal.SIGINT, _stop_in_pool)


def _stop_in_pool(signum, frame):
    """SIGTERM (the pool stops: another model failed, or the stage was stopped) or SIGINT in a pool process: a
    model in training ends its MLflow run KILLED first (tracked_run), then the process exits; an idle one exits."""
    if _training:
        raise Terminated(f"received signal {signal.Signals(signum).name}")
    os._exit(128 + signum)


def _train_in_pool(job: tuple) -> dict:
    global _training
    _training = True
    try:
        return train_one(*job)
    except Terminated as stopped:   # its run is KILLED; the stage reports the model that failed, not this one
        os._exit(EXIT_SIGTERM if "SIGTERM" in str(stopped) else EXIT_SIGINT)
    finally:
        _training = False


def train_one(params, loss: str, regularizer: str, kind: str, out: Path) -> dict:
    """Train one model on `kind` (pixels or features), track it in its MLflow run, write its files as the folder
    `out` (whole, once the run has everything); return its summary (the metrics of its train stage)."""
    on_features = kind != "pixels"
    name = f"{loss}-{regularizer}-{kind}" if on_features else f"{loss}-{regularizer}"
    stage = f"train_features@{kind}" if on_features else f"train@{name}"
    label = f"{stage} {name}" if on_features else stage  # what its lines on the terminal start with
    train, loss_cfg, reg_cfg = params.train, getattr(params.loss, loss), getattr(params.regularizer, regularizer)
    learning_rate = getattr(params.features.learning_rate, loss) if on_features else loss_cfg.learning_rate
    strength = getattr(params.features.strength, regularizer) if on_features else reg_cfg.strength

    # mapped, not read: the minibatches are gathered from the page cache, with no 150 MB copy up front
    X_train, y_train = load_input(kind, "train", mmap=True)
    X_val, y_val = load_input(kind, "val")
    class_names = load_class_names()
    if train.batch_size > len(X_train):
        raise ValueError(f"train.batch_size={train.batch_size} is larger than the "
                         f"{len(X_train)} training images; allowed 1..{len(X_train)}")

    experiment_id = setup(params.tracking.experiment_name(), params.tracking.uri)
    set_runs_view(experiment_id)
    run_params = records.training_params(params, loss, regularizer, kind)
    extra = {"features_settings": records.feature_settings(params)} if on_features else {}
    settings = records.params_hash({**run_params, **extra})
    tags = {"loss": loss, "regularizer": regularizer, "features": kind, "model": name, "params_hash": settings,
            "git_commit": git_commit(), "dvc_stage": stage, **extra,
            "data_md5": params.data.md5, "data_url": params.data.url,
            **dvc_lock_hashes()}
    run_name = f"{name}-{settings[:6]}"
    # The store writes go to one helper thread: they overlap the next epoch's GEMMs and the drawing of the
    # pictures (both release the GIL). Values, steps and timestamps are fixed when submitted: what lands is
    # exact. (MLflow's own async mode polls its queue once a second: ending the run waited for that poll.)
    with tracked_run(experiment_id, run_name, tags) as active, atomic_dir(out) as out, \
            ThreadPoolExecutor(1, thread_name_prefix="linclass-log") as background:
        run_id = active.info.run_id
        client = MlflowClient()
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in run_params.items()])
        records.log_dataset(params.data, len(X_train), len(X_val))

        delta = getattr(loss_cfg, "delta", 1.0)
        start = initial_loss(X_train, y_train, loss, len(class_names), seed=train.seed,
                             init_scale=train.init_scale, delta=delta)
        check = initial_loss_check(loss, start, len(class_names),
                                   tolerance=params.studies.initial_loss_tolerance, delta=delta)
        if not check["ok"]:
            warnings.warn(f"{name}: initial loss {start:.4f} is off the expected {check['expected']:.4f} "
                          f"by {check['relative_error']:.1%} (more than the tolerance)", stacklevel=1)

        clock, pending = [time.perf_counter()], []

        def on_epoch(epoch, history):  # live accuracy in the UI, one line on the terminal
            # val_accuracy is the run's first metric: MLflow's Compare page plots the first metric it finds
            pending.append(background.submit(client.log_batch, run_id, metrics=[
                *records.history_metrics("val_accuracy", history.val_accuracy[-1:], [epoch]),
                *records.history_metrics("train_accuracy", history.train_accuracy[-1:], [epoch])]))
            now = time.perf_counter()
            epoch_steps = history.total_loss[-history.steps_per_epoch:]
            progress.say(f"{label} epoch {epoch}/{train.epochs}: loss {epoch_steps.mean():.4f} "
                         f"train {history.train_accuracy[-1]:.4f} val {history.val_accuracy[-1]:.4f} "
                         f"({now - clock[0]:.1f} s)")
            clock[0] = now

        result = train_sgd(
            X_train, y_train, X_val=X_val, y_val=y_val, num_classes=len(class_names),
            loss=loss, delta=delta,
            regularizer=regularizer, strength=strength, beta=getattr(reg_cfg, "beta", 0.5),
            learning_rate=learning_rate, batch_size=train.batch_size, epochs=train.epochs,
            lr_decay=train.lr_decay, seed=train.seed, init_scale=train.init_scale,
            l1_step=train.l1_step, on_epoch=on_epoch)
        history = result.history
        val_low, val_high = wilson_interval(round(history.val_accuracy[-1] * len(y_val)), len(y_val))  # 95%
        curves = []
        for key in ("data_loss", "reg_loss", "total_loss"):
            steps, values = records.curve_points(getattr(history, key))
            curves += records.history_metrics(key, values, steps)
        curves += records.scalar_metrics({"val_accuracy_low": val_low, "val_accuracy_high": val_high,
                                          "initial_loss": start})
        pending.append(background.submit(client.log_batch, run_id, metrics=curves))

        np.save(out / "W.npy", result.W)
        np.save(out / "b.npy", result.b)
        steps, epochs = history.to_frames()
        steps.to_csv(out / "history_steps.csv", index=False)
        epochs.to_csv(out / "history_epochs.csv", index=False)
        summary = {"train_accuracy": float(history.train_accuracy[-1]),
                   "val_accuracy": float(history.val_accuracy[-1]),
                   "val_accuracy_low": val_low, "val_accuracy_high": val_high,  # its 95% Wilson interval
                   "final_data_loss": float(history.data_loss[-1]),
                   "final_reg_loss": float(history.reg_loss[-1]),
                   "final_total_loss": float(history.total_loss[-1]),
                   "initial_loss": float(start), "initial_loss_expected": float(check["expected"])}
        weights_md5 = md5_file(out / "W.npy", out / "b.npy")

        with tempfile.TemporaryDirectory() as tmp:  # drawn while the curves are written
            figures = Path(tmp)
            if on_features:  # not an image: the weights on the hue bins and the HOG glyphs, per class
                layout = json.loads((FEATURES / kind / "layout.json").read_text())
                plots.plot_feature_weights(result.W, layout, class_names, figures / "templates_grid.png",
                                           title=f"{name}: what each class weighs (rows of W on the features)")
            else:
                plots.save_template_pngs(result.W, class_names, figures / "templates", upscale=8)
                plots.plot_template_grid(result.W, class_names, figures / "templates_grid.png",
                                         title=f"{name}: class templates (rows of W)")
            plots.plot_loss_curves(steps, epochs, figures / "loss_curves.png", title=name)
            for logged in pending:  # everything logged (or its error raised) before the next store writes
                logged.result()
            if not on_features:
                client.log_artifacts(run_id, str(figures / "templates"), artifact_path="plots/templates")
            # at the artifact root, where MLflow's Compare page shows the pictures of several runs side by side
            client.log_artifact(run_id, str(figures / "templates_grid.png"))
            client.log_artifact(run_id, str(figures / "loss_curves.png"))
        client.set_tag(run_id, "weights_md5", weights_md5)
        client.set_tag(run_id, "mlflow.note.content",   # the run's description in the MLflow UI
                       f"The {loss} loss with {regularizer} regularization (strength {strength:g}) on "
                       f"{'the ' + kind + ' features' if on_features else 'the pixels'}, {train.epochs} epochs "
                       f"of minibatch SGD on {len(X_train):,} images: validation accuracy "
                       f"{summary['val_accuracy']:.4f} [{val_low:.4f}, {val_high:.4f}] (95%) on {len(y_val):,} images.")
        # its MLflow Model takes raw images: a features model computes its features itself
        pixels = X_val if isinstance(X_val, Pixels) else load_split("val", mmap=True)[0]
        preprocessing = {"mean_image": pixels.mean, "scale": pixels.scale} if not on_features else {"features": {
            "settings": params.features.model_dump(include=set(SETTINGS)),
            "mean": load_npy(FEATURES / kind / "mean.npy"), "std": load_npy(FEATURES / kind / "std.npy")}}
        model = registry.log_classifier(result.W, result.b, class_names, loss, example=registry.model_input(pixels[:2]),
                                        params=run_params, **preprocessing)
        client.set_tag(run_id, "model_id", model.model_id)
        client.log_artifacts(run_id, str(out), artifact_path="training")
    print(f"{label}: train {summary['train_accuracy']:.4f} val {summary['val_accuracy']:.4f} "
          f"(mlflow run {run_name}, {run_id})", flush=True)
    return {**summary, "weights_md5": weights_md5}


if __name__ == "__main__":
    run(main)
