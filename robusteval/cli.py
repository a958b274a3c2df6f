"""Command line: parse → call the Python API → exit code (0 ok, 1 gate failed, 2 bad input)."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robusteval import __version__
from robusteval.cli_compare import add_compare_command, gate_against_run
from robusteval.errors import GateFailed, RobustEvalError
from robusteval.escaping import visible
from robusteval.presets import listing

PIPE_CLOSED = 141
"""Exit code when the output's reader stopped reading (128 + SIGPIPE, as a shell reports a tool killed by it)."""
EPILOG = "Exit codes: 0 success, 1 gate failed, 2 bad input, 3 internal error. Docs: README.md."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robusteval`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        code = int(args.func(args, ["robusteval", *argv]) or 0)
        sys.stdout.flush()  # output piped into a reader that stopped (| head) fails here, not at exit
        return code
    except BrokenPipeError:  # the reader stopped early: quiet, as a tool killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return PIPE_CLOSED
    except GateFailed as exc:
        print(f"robusteval: gate failed: {visible(exc)}", file=sys.stderr)
        return exc.exit_code
    except RobustEvalError as exc:
        if args.verbose:
            raise
        print(f"robusteval: error: {visible(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("robusteval: interrupted; rerun the same command to resume from what was recorded", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line unless --verbose
        if args.verbose:
            raise
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"robusteval: internal error: {type(exc).__name__}: {visible(first)} (rerun with --verbose for the "
              "traceback)", file=sys.stderr)
        return 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robusteval", description="What does pruning cost beyond test accuracy? "
                                     "Prune a model into a family, audit robustness, report and gate.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"robusteval {__version__}")
    sub = parser.add_subparsers(title="commands")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    model_opts, prune_opts, gate_opts = _model_options(common), _prune_options(), _gate_options()
    _run_commands(sub, model_opts, prune_opts, gate_opts)
    _run_dir_commands(sub, common)
    add_compare_command(sub, common, EPILOG)
    return parser


def _model_options(common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The model, data and evaluation options of audit, evaluate and prune."""
    model_opts = argparse.ArgumentParser(add_help=False, parents=[common])
    model_opts.add_argument("model", help="model file: state_dict (.pt/.pth, needs --arch), .safetensors (needs "
                            "--arch), TorchScript (.pt), torch.export archive (.pt2), ONNX (.onnx); or "
                            "hf-hub:<org>/<repo> (its model.safetensors) or torchvision:<name>:<WEIGHTS>")
    model_opts.add_argument("--arch", help="architecture for weight-only files: a built-in name (e.g. "
                            "cifar_resnet20, cifar_vgg16, wrn16_4), torchvision:<name>, timm:<name>, or "
                            "path/file.py:factory")
    model_opts.add_argument("--checkpoint-key", help="checkpoint entry holding the weights, e.g. state_dict_ema "
                            "(default: the regular weights under state_dict/model/...)")
    model_opts.add_argument("--data", help="evaluation data: bundled, cifar10, cifar100, svhn (add :train for the "
                            "training split), imagefolder:PATH, npz:PATH, imagenet:PATH, imagenet-v2/-r/-a:PATH, cifar10.1:PATH, "
                            "cifar10.2:PATH, cinic10:PATH, cifar10-c/cifar100-c/imagenet-c:ROOT:CORRUPTION:SEVERITY "
                            "(default: bundled; README, Data)")
    model_opts.add_argument("--train-data", help="data for SNIP/GraSP, fine-tuning and BatchNorm re-calibration "
                            "(default: the training split of a built-in --data source; none for sources read from a path)")
    model_opts.add_argument("--subset", type=int, help="evaluate on a seeded class-balanced sample of N images")
    model_opts.add_argument("--config", help="YAML config: a path, or a preset name "
                            "(robusteval presets lists them: clean, quick, ...)")
    model_opts.add_argument("--out", help="run directory (default: reports/<timestamp>); rerunning the same "
                            "command on it resumes and skips finished work")
    model_opts.add_argument("--mean", help="per-channel input mean the model expects, e.g. 0.485,0.456,0.406; "
                            "the model is wrapped so it takes images in [0, 1]")
    model_opts.add_argument("--std", help="per-channel input std, e.g. 0.229,0.224,0.225")
    model_opts.add_argument("--trust-pickle", action="store_true", help="allow loading a pickled full model "
                            "(torch.save(model)); unpickling runs arbitrary code: only for files you trust")
    model_opts.add_argument("--batch-size", type=int, help="evaluation batch size, also the attacks' unless "
                            "the config sets evaluate.adversarial.batch_size")
    model_opts.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    model_opts.add_argument("--device", help="auto (default: CUDA, then MPS, else CPU), cpu, cuda, cuda:N or mps")
    model_opts.add_argument("--precision", help="forward passes in fp32 (default), bf16 or fp16 autocast; attacks and "
                            "pruning scores always run in fp32")
    model_opts.add_argument("--channels-last", action="store_true", help="models and inputs in channels-last "
                            "memory format (often faster on GPUs)")
    model_opts.add_argument("--engine", help="local (default: this process) or ray (a local Ray instance, or the "
                            "cluster named by engine.address / RAY_ADDRESS; pip install 'robusteval[ray]')")
    model_opts.add_argument("--seed", type=int, help="seed for sampling and generated conditions")
    return model_opts


def _prune_options() -> argparse.ArgumentParser:
    prune_opts = argparse.ArgumentParser(add_help=False)
    prune_opts.add_argument("--methods", help="comma-separated pruning methods: random, magnitude, "
                            "layer_magnitude, snip, grasp, synflow, l1_filter, coreset_filter, fisher")
    prune_opts.add_argument("--ratios", help="comma-separated prune ratios in [0, 1), e.g. 0.5,0.7,0.9")
    prune_opts.add_argument("--finetune-epochs", type=float, help="recovery fine-tuning epochs after pruning "
                            "(fractions allowed)")
    return prune_opts


def _gate_options() -> argparse.ArgumentParser:
    gate_opts = argparse.ArgumentParser(add_help=False)
    gate_opts.add_argument("--gate", help="gate rules YAML, or the preset 'gate' (configs/gate.yaml); exit 1 "
                           "when a budget is exceeded")
    gate_opts.add_argument("--junit", help="write the gate's JUnit XML here")
    return gate_opts


def _run_commands(sub: Any, model_opts: argparse.ArgumentParser, prune_opts: argparse.ArgumentParser,
                  gate_opts: argparse.ArgumentParser) -> None:
    """audit, evaluate and prune: the commands that load a model."""
    p = sub.add_parser("audit", parents=[model_opts, prune_opts, gate_opts], help="prune (per config), evaluate, "
                       "report and optionally gate", description="Prune MODEL into a family (when the config or "
                       "--methods ask for it), evaluate every member, write summary.json and report.html.",
                       epilog=EPILOG)
    p.add_argument("--reference", help="dense model file: audit MODEL as an already pruned model against it "
                   "(no pruning); same --arch")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("evaluate", parents=[model_opts, gate_opts], help="evaluate one model (no pruning)",
                       description="Evaluate MODEL alone with the config's evaluators (default configs/clean.yaml).",
                       epilog=EPILOG)
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("prune", parents=[model_opts, prune_opts], help="build and save the pruned family only",
                       description="Prune MODEL with each method at each ratio; save every member as "
                       "<out>/models/<id>.pt2 and write summary.json.", epilog=EPILOG)
    p.set_defaults(func=_cmd_prune)


def _run_dir_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """report, gate (on a run directory), demo and presets."""
    p = sub.add_parser("report", parents=[common], help="rebuild report.html from a run directory (no models)")
    p.add_argument("run_dir")
    p.add_argument("--tolerance", type=float, help="prune-potential tolerance δ (default from the run's config)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("gate", parents=[common], help="check a finished run against gate rules")
    p.add_argument("run_dir")
    p.add_argument("--gate", required=True, help="gate rules YAML, or the preset 'gate'")
    p.add_argument("--junit", help="write JUnit XML here")
    p.add_argument("--reference", help="reference model id (default: the run's baseline: dense+ft when recovery "
                   "fine-tuned, else dense)")
    p.add_argument("--baseline-run", help="a previous release's run directory: gate each model against the model "
                   "of the same id there instead (as robusteval compare --gate)")
    p.set_defaults(func=_cmd_gate)

    p = sub.add_parser("demo", parents=[common], help="audit the bundled ResNet-20 with configs/quick.yaml")
    p.add_argument("--out", default="reports/demo", help="run directory (default: reports/demo)")
    p.add_argument("--config", default="quick", help="config (default: quick)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("presets", parents=[common], help="list the presets that --config and --gate take by name")
    p.set_defaults(func=lambda args, command: print("\n".join(map(visible, listing().splitlines()))))


def _config(args: argparse.Namespace, default: str | None) -> Any:
    """The config file (or preset) with command-line overrides applied, then validated; an error a
    flag causes names that flag, not the file."""
    import dataclasses

    from robusteval.config import config_from_dict, read_config_file

    name = args.config or default
    data, where = read_config_file(name) if name else ({}, "command line")
    flags = _overrides(vars(args))
    try:
        config = config_from_dict(_apply(data, flags), where=where)
    except RobustEvalError:
        config_from_dict(data, where=where)  # the file's own error comes first
        for flag in flags:
            config_from_dict(_apply(data, [flag]), where=flag[0])
        raise
    if getattr(args, "reference", None):
        config = dataclasses.replace(config, pruning=None)
    return config


#: command-line flags that override a config key: (flag, argparse attribute, key path in the config)
_CONFIG_FLAGS = (
    ("--data", "data", ("data", "source")), ("--train-data", "train_data", ("data", "train")),
    ("--subset", "subset", ("data", "subset")), ("--batch-size", "batch_size", ("data", "batch_size")),
    ("--seed", "seed", ("data", "seed")), ("--arch", "arch", ("model", "arch")),
    ("--checkpoint-key", "checkpoint_key", ("model", "checkpoint_key")), ("--mean", "mean", ("model", "mean")),
    ("--std", "std", ("model", "std")), ("--trust-pickle", "trust_pickle", ("model", "trust_pickle")),
    ("--methods", "methods", ("pruning", "methods")), ("--ratios", "ratios", ("pruning", "ratios")),
    ("--finetune-epochs", "finetune_epochs", ("pruning", "finetune", "epochs")), ("--threads", "threads", ("threads",)),
    ("--device", "device", ("device",)), ("--precision", "precision", ("precision",)),
    ("--channels-last", "channels_last", ("channels_last",)), ("--engine", "engine", ("engine", "kind")),
)


def _overrides(o: dict[str, Any]) -> list[tuple[str, tuple[str, ...], Any]]:
    """(the flag as given, key path in the config, value) for every config flag on the command line."""
    parse = {"mean": lambda t: _floats(t, "--mean"), "std": lambda t: _floats(t, "--std"),
             "methods": _names, "ratios": lambda t: _floats(t, "--ratios")}
    out = []
    for flag, attr, path in _CONFIG_FLAGS:
        given = o.get(attr)
        if given is not None and given is not False:
            label = flag if given is True else f"{flag} {given}"
            out.append((label, path, parse[attr](given) if attr in parse else given))
    return out


def _apply(data: dict[str, Any], flags: list[tuple[str, tuple[str, ...], Any]]) -> dict[str, Any]:
    """A copy of ``data`` with each flag's value at its key path (a non-mapping section is replaced)."""
    import copy

    out = copy.deepcopy(data)
    for _, path, value in flags:
        node = out
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    return out


def _floats(text: str | None, what: str) -> list[float] | None:
    from robusteval.models.wrap import parse_floats

    values = parse_floats(text, what)
    return None if values is None else list(values)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _cmd_audit(args: argparse.Namespace, command: list[str]) -> int:
    from robusteval.api import audit

    run = audit(args.model, config=_config(args, None), out=args.out, reference=args.reference,
                progress=not args.quiet, command=command, report=not args.no_report, gate=args.gate, junit=args.junit)
    return _finish(run, args)


def _cmd_evaluate(args: argparse.Namespace, command: list[str]) -> int:
    import dataclasses

    from robusteval.api import audit

    config = dataclasses.replace(_config(args, "clean"), pruning=None)
    run = audit(args.model, config=config, out=args.out, progress=not args.quiet, command=command,
                report=not args.no_report, gate=args.gate, junit=args.junit)
    return _finish(run, args)


def _cmd_prune(args: argparse.Namespace, command: list[str]) -> int:
    from robusteval.api import prune
    from robusteval.engine.store import models_dir
    from robusteval.results import RunDir

    config = _config(args, None)
    run = prune(args.model, config=config, out=args.out, progress=not args.quiet, command=command)
    print(f"family of {len(run.summary['models'])} models saved in {visible(models_dir(RunDir(run.path)))}")
    print(f"summary: {visible(RunDir(run.path).summary_path)}")
    return 0


def _finish(run: Any, args: argparse.Namespace) -> int:
    """The exit code of an audit the API reported and gated: 1 (:class:`GateFailed`) when the gate failed;
    where the results are, when the API had no tail to say it in (``--no-report``, no gate)."""
    if getattr(args, "no_report", False) and getattr(args, "gate", None) is None:
        from robusteval.finish import announce

        announce(run.path)
    if run.gate is not None:
        run.gate.raise_on_failure()
    return 0


def _cmd_report(args: argparse.Namespace, command: list[str]) -> int:
    from robusteval.analysis import DEFAULT_TOLERANCE  # not config: rebuilding a report needs no torch
    from robusteval.finish import report_with_verdict
    from robusteval.results import RunDir

    run = RunDir.existing(Path(args.run_dir))
    analysis_cfg = ((run.read_manifest() or {}).get("config") or {}).get("analysis") or {}
    tolerance = args.tolerance if args.tolerance is not None else analysis_cfg.get("tolerance", DEFAULT_TOLERANCE)
    report_with_verdict(run.path, tolerance, analysis_cfg.get("tolerances") or {})
    return 0


def _cmd_gate(args: argparse.Namespace, command: list[str]) -> int:
    from robusteval.finish import run_gate
    from robusteval.gate import load_rules
    from robusteval.results import RunDir

    if args.baseline_run:
        return gate_against_run(args)
    run_gate(RunDir.existing(args.run_dir).path, load_rules(args.gate), args.junit, args.reference).raise_on_failure()
    return 0


def _cmd_demo(args: argparse.Namespace, command: list[str]) -> int:
    import time

    from robusteval.api import demo
    from robusteval.config import load_config

    config = load_config(args.config)
    start = time.perf_counter()
    run = demo(config=config, out=args.out, progress=not args.quiet, command=command, report=True)
    code = _finish(run, args)
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
