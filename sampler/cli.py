"""The ``agent-sampler`` command: run, check-config, replay."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from sampler.config.load import load_config
from sampler.config.model import MODES, SamplerConfig
from sampler.config.reader import ConfigError, parse_duration, parse_listen
from sampler.otlp.json_codec import OtlpDecodeError

EXIT_USAGE = 2


def _listen(value: str) -> str:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _downstream(value: str) -> str:
    if not value.startswith(("grpc://", "grpcs://", "http://", "https://", "file://")):
        raise argparse.ArgumentTypeError(
            "expected grpc(s)://HOST:PORT, http(s)://HOST:PORT or file://PATH"
        )
    return value


class _Version(argparse.Action):
    """``--version``: like argparse's own, but the text is made only when asked for (it loads
    the native core and reads the package metadata)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from sampler.version import version_text

        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-sampler",
        description="Tail-based sampler for LLM-agent traces: buffers whole sessions, decides "
        "with YAML rules, forwards the kept ones over OTLP.",
    )
    parser.add_argument(
        "--version",
        action=_Version,
        help="print the versions of the sampler, its native core and Python, and exit",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="receive, decide and forward (until SIGTERM)")
    run.add_argument("--config", help="config file (default: the embedded config/sampler.yaml)")
    run.add_argument(
        "--listen",
        type=_listen,
        metavar="HOST:PORT",
        help="OTLP/gRPC listen address (receivers.grpc.listen)",
    )
    run.add_argument(
        "--http-listen",
        type=_listen,
        metavar="HOST:PORT",
        help="OTLP/HTTP listen address (receivers.http.listen)",
    )
    run.add_argument(
        "--downstream",
        type=_downstream,
        metavar="URL",
        help="grpc(s)://HOST:PORT, http(s)://HOST:PORT or file://PATH (exporter.url)",
    )
    run.add_argument(
        "--decision-wait",
        type=_duration,
        metavar="DURATION",
        help="idle time before a session is decided (sessions.decision_wait)",
    )
    run.add_argument(
        "--metrics-listen",
        type=_listen,
        metavar="HOST:PORT",
        help="/metrics, /healthz, /readyz address (metrics.listen)",
    )
    run.add_argument(
        "--queue-dir",
        metavar="PATH",
        help="durable queue of kept sessions, resumed on start (exporter.queue_dir)",
    )
    run.add_argument(
        "--watch-config",
        action="store_true",
        help="reload the config file when it changes (checked every second), as on SIGHUP",
    )
    run.add_argument(
        "--mode",
        choices=MODES,
        help="live, or shadow: decide as live but forward every span, annotated with the "
        "verdict it would have had (mode)",
    )
    run.add_argument(
        "--capture",
        metavar="PATH",
        help="append every accepted request to PATH as OTLP/JSON lines, for replay "
        "(capture.path; stops at capture.max_size, 1GiB by default)",
    )

    check = commands.add_parser("check-config", help="validate a config file (exit 2 if invalid)")
    check.add_argument("path")

    rep = commands.add_parser("replay", help="run recorded OTLP/JSON traffic through the rules")
    rep.add_argument("--config", help="config file (default: the embedded one)")
    rep.add_argument(
        "--output",
        metavar="OUT",
        help="file for the kept spans (OTLP/JSON lines); without it they are counted only",
    )
    rep.add_argument("--json", action="store_true", help="print the summary as JSON")
    rep.add_argument(
        "--report",
        metavar="PATH.html",
        help="also write the summary as a self-contained HTML page with plots",
    )
    rep.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (shown on a terminal, or for inputs over 256MiB)",
    )
    rep.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="OTLP/JSON lines files (e.g. from run --capture or the collector's file "
        "exporter), gzip-compressed or not; - reads standard input",
    )
    return parser


def apply_overrides(config: SamplerConfig, args: argparse.Namespace) -> SamplerConfig:
    r, s, e, m = config.receivers, config.sessions, config.exporter, config.metrics
    flags: list[tuple[str, str]] = []  # (key, flag) of each flag given
    if args.listen is not None:
        r = dataclasses.replace(r, grpc=dataclasses.replace(r.grpc, listen=args.listen))
        flags.append(("receivers.grpc.listen", "--listen"))
    if args.http_listen is not None:
        r = dataclasses.replace(r, http=dataclasses.replace(r.http, listen=args.http_listen))
        flags.append(("receivers.http.listen", "--http-listen"))
    if args.downstream is not None:
        e = dataclasses.replace(e, url=args.downstream)
        flags.append(("exporter.url", "--downstream"))
    if args.queue_dir is not None:
        e = dataclasses.replace(e, queue_dir=args.queue_dir)
        flags.append(("exporter.queue_dir", "--queue-dir"))
    if args.decision_wait is not None:
        s = dataclasses.replace(s, decision_wait=args.decision_wait)
        flags.append(("sessions.decision_wait", "--decision-wait"))
    if args.metrics_listen is not None:
        m = dataclasses.replace(m, listen=args.metrics_listen)
        flags.append(("metrics.listen", "--metrics-listen"))
    mode = config.mode
    if args.mode is not None:
        mode = args.mode
        flags.append(("mode", "--mode"))
    c = config.capture
    if args.capture is not None:
        c = dataclasses.replace(c, path=args.capture)
        flags.append(("capture.path", "--capture"))
    config = dataclasses.replace(
        config, mode=mode, receivers=r, sessions=s, exporter=e, metrics=m, capture=c
    )
    for key, flag in flags:
        config = config.set_by(f"flag {flag}", key)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-config":
            config = load_config(args.path)
            print(f"{args.path}: OK ({len(config.rules)} rules)")
            return 0
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run":
        return _run(apply_overrides(config, args), args)
    return _replay(config, args)


def _run(config: SamplerConfig, args: argparse.Namespace) -> int:
    from sampler.export.otel_env import apply_otel_env
    from sampler.logs import configure_logging
    from sampler.reload import ConfigSource
    from sampler.runtime import serve

    configure_logging(config.logging.level, config.logging.format)
    config, notes = apply_otel_env(config, os.environ)  # below the file and the flags
    for note in notes:
        logging.getLogger("sampler").warning("%s", note)

    def as_run(loaded: SamplerConfig) -> SamplerConfig:
        """A reload reads the same file and applies the same flags, which still win over it,
        and the same environment, below it (its notes were logged at start)."""
        return apply_otel_env(apply_overrides(loaded, args), os.environ)[0]

    source = ConfigSource(args.config, as_run, args.watch_config)
    try:
        asyncio.run(serve(config, source))
    except ValueError as exc:  # e.g. a downstream URL the exporter cannot use
        print(f"agent-sampler: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. a port already in use (listeners.ListenError)
        # errno and strerror set: the text is strerror, without str()'s "[Errno 98]" in front
        reason = exc.strerror if exc.errno is not None and exc.strerror else str(exc)
        logging.getLogger("sampler").error("cannot start: %s", reason)
        return 1
    return 0


def _replay(config: SamplerConfig, args: argparse.Namespace) -> int:
    from sampler.replay import (
        STDIN,
        Progress,
        format_summary,
        input_name,
        replay,
        summary_json,
        total_size,
    )

    if args.inputs.count(STDIN) > 1:
        print("agent-sampler replay: standard input (-) can be read once", file=sys.stderr)
        return EXIT_USAGE
    progress = None
    if not args.no_progress:
        progress = Progress(sys.stderr, total_size(args.inputs), tty=sys.stderr.isatty())
    try:
        result = replay(config, args.inputs, args.output, progress=progress)
    except (OSError, OtlpDecodeError) as exc:
        print(f"agent-sampler replay: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(summary_json(result.stats, result.requests, result.observed))
    else:
        print(format_summary(result.stats, result.observed, written=args.output is not None))
    if args.report is not None:
        from sampler.report import rule_thresholds, write_report

        signal_threshold = config.signals.rarity.threshold
        try:
            write_report(
                args.report,
                result,
                config_path=args.config if args.config is not None else config.source,
                inputs=[input_name(path) for path in args.inputs],
                thresholds=rule_thresholds(config.rules, signal_threshold),
                signal_threshold=signal_threshold,
            )
        except OSError as exc:
            print(f"agent-sampler replay: cannot write the report: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
