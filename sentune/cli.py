"""The ``sentune`` command: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from sentune._log import console
from sentune._uri import redact
from sentune.errors import ConfigError, SentuneError

__all__ = ["main"]


def _cmd_run(args) -> int:
    from sentune.spec import load_job
    from sentune.tuning import run_range_test, run_sweep

    spec = load_job(args.job, storage_path=args.storage)
    if spec.kind == "lr_range_test":
        run_dir, s = run_range_test(spec, address=args.address, verbose=args.verbose)
        print(
            f"\nSuggested lr: {s['suggested_lr']:.3g} (the loss falls fastest at {s['steep_lr']:.3g} and is lowest at "
            f"{s['min_loss_lr']:.3g}; {s['steps_run']} steps"
            f"{', stopped when it diverged' if s['stopped_before_lr_max'] else ''})"
        )
        print(
            f"It would search lr in [{s['search_low']:.3g}, {s['search_high']:.3g}]: lr: {{from_range_test: {run_dir}}}"
        )
        print(f"Curve: {run_dir / 'lr_range.png'}")
        return 0
    summary = run_sweep(spec, address=args.address, verbose=args.verbose, progress=_progress(args))
    return _print_summary(summary, as_json=args.json)


def _cmd_resume(args) -> int:
    if args.submit:
        from sentune.submission import submit_resume

        sid, url = submit_resume(args.run, address=args.submit)
        print(f"submitted {sid}\ndashboard: {url}\nfollow:    sentune logs {sid} --follow --address {args.submit}")
        return 0
    from sentune.tuning import resume_sweep

    summary = resume_sweep(args.run, address=args.address, verbose=args.verbose, progress=_progress(args))
    return _print_summary(summary, as_json=args.json)


def _cmd_extend(args) -> int:
    from sentune.tuning import extend_sweep

    summary = extend_sweep(args.run, trials=args.trials, address=args.address, verbose=args.verbose,
                           progress=_progress(args))  # fmt: skip
    return _print_summary(summary, as_json=args.json)


def _progress(args) -> str:
    """-q: the summary only; --json: a JSON object per result; else a live screen on a terminal, lines if not."""
    if args.json or args.quiet:
        logging.getLogger("sentune").setLevel(logging.WARNING)  # no progress lines either
        return "json" if args.json else "quiet"
    return "live" if sys.stdout.isatty() else "plain"


def _print_summary(summary, *, as_json: bool = False) -> int:
    from sentune.results import format_leaderboard

    if as_json:
        best = summary.leaderboard.head(1).to_dict("records") if len(summary.leaderboard) else []
        print(json.dumps({"event": "summary", "interrupted": summary.interrupted, "run_dir": str(summary.run_dir),
                          "summary": summary.progress, "best": best[0] if best else None,
                          "budget": summary.budget, "comparison": summary.comparison,
                          "best_config": str(summary.best_config_path or "") or None}, default=str))  # fmt: skip
        return 130 if summary.interrupted else 0

    if summary.progress:
        print(summary.progress)
    if summary.interrupted:
        where = redact(summary.remote) if summary.remote else summary.run_dir
        print(f"\nStopped before the sweep ended; its state is saved. Go on with:\n  sentune resume {where}")
        return 130
    print("\nLeaderboard")
    if summary.budget:
        print(summary.budget)
    print(format_leaderboard(summary.leaderboard))
    if summary.comparison:
        print(summary.comparison)
    if summary.importance:
        print(summary.importance)
    if summary.ended:
        print(summary.ended)
    if summary.second_chances:
        print(summary.second_chances)
    if summary.test_figures:
        test = summary.test_figures
        print(f"\nBest trial on the test split: accuracy {test['acc']:.4f}, macro-F1 {test['macro_f1']:.4f}")
    _print_examples(summary.run_dir)
    print(f"Best config: {summary.best_config_path}")
    print(f"Report:      {summary.run_dir / 'report.html'}")
    print(f"Run folder:  {summary.run_dir}  ({summary.wall_seconds:.0f} s)")
    if summary.remote:
        print(f"Uploaded to: {redact(summary.remote)}")
    return 0


def _print_examples(run_dir, n: int = 5) -> None:
    """A few dev sentences as the best model labelled them (from the run's predictions_dev.csv)."""
    from sentune.results import example_predictions

    rows = example_predictions(run_dir, "dev", n)
    if rows:
        print("\nExample predictions (dev):")
    for r in rows:
        text = r["text"] if len(r["text"]) <= 70 else r["text"][:67] + "..."
        mark = "ok" if r["label"] == r["predicted"] else f"true: {r['label']}"
        print(f"  {r['predicted']} ({r['p']:.2f}, {mark})  {text}")


def _cmd_predict(args) -> int:
    from sentune.inference import figures, label_file, open_model, write_predictions

    if bool(args.text) == bool(args.input):
        raise ConfigError("predict: give --text (one or more) or --input FILE, not both")
    model = open_model(args.source)
    texts, known = (args.text, {}) if args.text else label_file(model, args.input, args.format,
                                                                 text_column=args.text_column)  # fmt: skip
    probs = model.predict_proba(texts)
    if args.output:
        write_predictions(model, texts, probs, args.output)
        print(f"{len(texts)} predictions -> {args.output}")
    else:
        names = model.label_names
        for text, p in zip(texts, probs):
            print(f"{names[int(p.argmax())]}\t{float(p.max()):.3f}\t{text}")
    if "labels" in known:
        f = figures(known["labels"], probs, len(model.label_names))
        print(f"{f['rows']} labelled rows: accuracy {f['accuracy']:.4f}, macro-F1 {f['macro_f1']:.4f}")
    return 0


def _cmd_results(args) -> int:
    from sentune.results import (
        RunView,
        comparison_line,
        format_budget,
        format_leaderboard,
        gpu_fraction_line,
        importance_line,
        read_importance,
        resolve_run_dir,
    )

    view = RunView.load(resolve_run_dir(args.run_dir))  # the run read once for all that is shown
    print(f"run {view.run_dir.name} ({redact(str(args.run_dir))})")
    print(format_budget(view.budget))
    print(format_leaderboard(view.leaderboard_with_reference, limit=args.limit))
    line = comparison_line(view)
    if line:
        print(line)
    print(importance_line(read_importance(view)))
    if fit := gpu_fraction_line(view):  # a GPU run: the gpus: share its peak memory fits
        print(fit)
    return 0


def _cmd_compare(args) -> int:
    from sentune.results import RunView, compare_runs, format_comparison, resolve_run_dir

    views = [RunView.load(resolve_run_dir(run)) for run in args.runs]
    found = compare_runs(views, resamples=args.resamples, seed=args.seed)
    print(json.dumps(found, default=str) if args.json else format_comparison(found))
    return 0


def _cmd_runs(args) -> int:
    from sentune.results import format_table, list_runs

    runs = list_runs(args.storage)
    print(format_table(runs, limit=args.limit) if len(runs) else f"no runs under {redact(str(args.storage))}")
    return 0


def _cmd_report(args) -> int:
    from sentune.results import resolve_run_dir, write_report

    print(f"report -> {write_report(resolve_run_dir(args.run_dir))}")
    return 0


def _cmd_export(args) -> int:
    from sentune.results import export_run, is_uri, resolve_run_dir

    if args.model:
        from sentune.inference import export_model

        print(f"model folder -> {export_model(args.run_dir, args.model)}")
        return 0

    out = args.output or ("best_config.yaml" if is_uri(args.run_dir) else None)  # a fetched copy lives in the cache
    paths = export_run(resolve_run_dir(args.run_dir), out)
    print(f"best config -> {paths['best_config']}")
    return 0


def _cmd_train(args) -> int:
    from sentune.standalone import load_train_config, train_alone

    trainable, data, params = load_train_config(args.config)
    result = train_alone(trainable, data, params)
    print(f"best epoch {result.best_epoch}: {params.get('monitor', 'val_macro_f1')} = {result.best_metric:.4f}")
    return 0


def _cmd_cluster_check(args) -> int:
    from sentune.cluster import check_cluster_file

    problems = check_cluster_file(args.file)
    for line in problems:
        print(line)
    if not problems:
        print(f"{args.file}: ok")
    return 1 if problems else 0


def _cmd_submit(args) -> int:
    from sentune.submission import submit_job

    sid, url = submit_job(args.job, address=args.address, storage=args.storage)
    print(f"submitted {sid}")
    print(f"dashboard: {url}")
    print(f"follow:    sentune logs {sid} --follow" + (f" --address {args.address}" if args.address else ""))
    return 0


def _cmd_status(args) -> int:
    from sentune.submission import job_status

    st = job_status(args.job_id, address=args.address)
    took = f" after {st['seconds']:.0f} s" if st["seconds"] is not None else ""
    print(f"{st['job_id']}: {st['status']}{took}" + (f" ({st['message']})" if st["message"] else ""))
    return 0 if st["status"] != "FAILED" else 1


def _cmd_logs(args) -> int:
    from sentune.submission import follow_logs, job_logs

    if args.follow:
        if sys.stdout.isatty():  # the driver's event lines, shown as the live screen
            from sentune._progress import EventFollower

            follower = EventFollower("live")
            try:
                status = follow_logs(args.job_id, follower.feed, address=args.address)
            finally:
                follower.close()
        else:
            status = follow_logs(args.job_id, lambda chunk: print(chunk, end="", flush=True), address=args.address)
        print(f"[sentune] {args.job_id}: {status}")
        return 0 if status == "SUCCEEDED" else 1
    print(job_logs(args.job_id, address=args.address), end="")
    return 0


def _cmd_stop(args) -> int:
    from sentune.submission import stop_job

    print(f"{args.job_id}: " + ("stop requested" if stop_job(args.job_id, address=args.address) else "already ended"))
    return 0


def _cmd_dashboard(args) -> int:
    from sentune.submission import check_dashboard, dashboard_url, find_token

    url = dashboard_url(args.address)
    if args.cluster:
        print(f"port-forward: ray dashboard {args.cluster}   (then open {url})")
    print(f"dashboard: {url}")
    token = find_token()
    version = check_dashboard(args.address, token)
    print(f"token:     works ({token.source})" if token else "token:     none needed (this cluster has auth off)")
    print(f"ray:       {version.get('ray_version', '?')}")
    return 0


def _cmd_optuna_dashboard(args) -> int:
    from sentune.results import resolve_run_dir, run_optuna_study, serve_optuna_dashboard

    target, study = run_optuna_study(resolve_run_dir(args.run), storage=args.storage)

    def announce(url: str, loopback: bool) -> None:
        print(f"optuna-dashboard: {url}   (study {study}; Ctrl-C stops it)", flush=True)
        if not loopback:
            print("warning: the dashboard has no login and can change the study; anyone who reaches it can", flush=True)

    try:
        serve_optuna_dashboard(target, study, host=args.host, port=args.port, announce=announce)
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_data(args) -> int:
    from sentune.data import prepare_builtin

    for name, path in prepare_builtin(args.names or None, force=args.force).items():
        print(f"{name}: {path}")
    if args.backbones:
        from sentune.trainables._backbones import hf_dir, parse_backbone

        for name in args.backbones:
            print(f"{name}: {hf_dir(parse_backbone(name))}")
    return 0


def _cmd_serve(args) -> int:
    from sentune.serving import serve_model, stop_serving

    if args.stop:
        stopped = stop_serving(args.address)
        print("stopped the sentune app" if stopped else "no sentune app was running")
        return 0
    if not args.source:
        raise ConfigError("sentune serve: give a run folder or a model folder (or --stop)")
    serve_model(args.source, replicas=args.replicas, host=args.host, port=args.port, address=args.address)
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a run's best model (or a model folder) over HTTP on Ray Serve")
    p.add_argument("source", nargs="?", help="a run folder (its best model) or a model folder")
    p.add_argument("--replicas", type=int, default=1, help="model replicas (default 1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--stop", action="store_true", help="stop the sentune app (of --address, or this machine's)")
    p.set_defaults(func=_cmd_serve)


def _progress_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.add_argument("--json", action="store_true", help="print one JSON object per result (for scripts)")


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 (the argument table reads best whole)
    parser = argparse.ArgumentParser(
        prog="sentune", description="Hyperparameter tuning for sentiment classifiers on Ray"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a tune job (embedded local Ray unless --address)")
    p.add_argument("job", help="tune job YAML")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--storage", help="override the job's storage_path")
    p.add_argument("--verbose", action="store_true", help="forward Ray worker logs")
    _progress_options(p)
    p.set_defaults(func=_cmd_run)

    run_help = "a run folder, a job folder (its newest run), or either behind a URI (s3://, gs://, file://...)"
    p = sub.add_parser("resume", help="go on with an interrupted sweep (Ctrl-C, a killed driver, a lost head node)")
    p.add_argument("run", help="the run folder, local or behind a URI (s3://, gs://, file://...)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--submit", metavar="URL", help="instead, send the resume to a cluster's Jobs API (dashboard URL)")
    p.add_argument("--verbose", action="store_true", help="forward Ray worker logs")
    _progress_options(p)
    p.set_defaults(func=_cmd_resume)

    p = sub.add_parser("extend", help="give a finished run more trials of its job (the search learns from the earlier)")
    p.add_argument("run", help="the run folder, local or behind a URI (s3://, gs://, file://...)")
    p.add_argument("--trials", type=int, required=True, help="how many more trials")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--verbose", action="store_true", help="forward Ray worker logs")
    _progress_options(p)
    p.set_defaults(func=_cmd_extend)

    p = sub.add_parser("results", help="print a run's leaderboard")
    p.add_argument("run_dir", help=run_help)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_cmd_results)

    p = sub.add_parser("compare", help="runs side by side, and a paired bootstrap of each pair's test predictions")
    p.add_argument("runs", nargs="+", metavar="RUN", help=f"two runs or more: {run_help}")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="the resamples' seed (default: 0)")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("runs", help="list the runs under a storage path or URI: status, trials, best metric")
    p.add_argument(
        "storage", nargs="?", default="results", help="a storage root, a job folder, or a URI (default: results)"
    )
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=_cmd_runs)

    p = sub.add_parser("report", help="write a run's self-contained report.html")
    p.add_argument("run_dir", help=run_help)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="write a run's best config (and leaderboard.csv)")
    p.add_argument("run_dir", help=run_help)
    p.add_argument("-o", "--output", help="where to write best_config.yaml")
    p.add_argument("--model", metavar="DIR", help="instead, write the best model as a self-contained model folder")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict", help="label texts with a run's best model or a model folder (no Ray)")
    p.add_argument("source", help="a run folder (its best model) or a model folder from export --model")
    p.add_argument("--text", action="append", help="a text to label (repeat for more)")
    p.add_argument("--input", help="a file of texts: labelled ones also print accuracy and macro-F1")
    p.add_argument("--format", choices=["csv", "sst", "lines"], default="lines", help="--input's format")
    p.add_argument("--text-column", default="review", help="a CSV's text column (default: review)")
    p.add_argument("-o", "--output", help="write text, predicted label and one probability per class as CSV")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("train", help="train once, without Ray, from a best_config.yaml")
    p.add_argument("config")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("cluster", help="cluster launcher files")
    cluster = p.add_subparsers(dest="cluster_command", required=True)
    c = cluster.add_parser("check", help="validate a cluster file offline with Ray's schema, one line per problem")
    c.add_argument("file")
    c.set_defaults(func=_cmd_cluster_check)

    address_help = "dashboard / Jobs API address (default: RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265)"
    p = sub.add_parser("submit", help="send a tune job to a Ray cluster through the Jobs API")
    p.add_argument("job", help="tune job YAML (inside the current folder, which is uploaded)")
    p.add_argument("--address", help=address_help)
    p.add_argument("--storage", help="shared absolute path or URI for the results (default: the job's storage_path)")
    p.set_defaults(func=_cmd_submit)
    for name, func, text in (
        ("status", _cmd_status, "a submitted job's status"),
        ("logs", _cmd_logs, "a submitted job's driver log"),
        ("stop", _cmd_stop, "stop a submitted job"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id")
        p.add_argument("--address", help=address_help)
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
        p.set_defaults(func=func)

    p = sub.add_parser("dashboard", help="the dashboard URL, and whether the token works")
    p.add_argument("--address", help=address_help)
    p.add_argument("--cluster", help="a cluster launcher file: also print the port-forward command")
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser("optuna-dashboard", help="optuna-dashboard on a run's Optuna study (tracking: {optuna: ...})")
    p.add_argument("run", help=run_help)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8080, help="the port (default 8080; 0: a free one)")
    p.add_argument("--storage", help="the study's storage instead of the one run.json names (a URL with credentials)")
    p.set_defaults(func=_cmd_optuna_dashboard)

    p = sub.add_parser("data", help="prepare built-in data sets (and convert backbones) into the cache")
    p.add_argument("names", nargs="*", help="built-in data set names (default: all)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--backbone", dest="backbones", action="append", help="also convert/cache a backbone, e.g. smollm2")
    p.set_defaults(func=_cmd_data)
    _add_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console()
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"sentune: error: {exc}", file=sys.stderr)
        return 2
    except SentuneError as exc:
        print(f"sentune: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
