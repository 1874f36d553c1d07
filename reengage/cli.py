"""`reengage` command line: train one grid cell (a population of seeds), and more.

Bad input gets one line on stderr naming the option and what is allowed, exit status 2,
and nothing is written.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .config import (
    HER_FUTURES,
    HER_RELABELS,
    INPUT_LAYOUTS,
    MATMUL_PRECISIONS,
    TRAINING_LOOPS,
    ConfigError,
    TrainConfig,
    check_machine,
    check_out_dir,
    from_arguments,
    validate,
)
from .paths import checkpoint_path
from .registry import ENVS, METHODS, ROBOTICS_ENVS
from .workflow import import_plugins, parse_train_command

USAGE_ERROR = 2
ROBOTICS_SETTINGS = ("workers", "envs_per_worker", "cycles", "batches", "test_rollouts",
                     "polyak", "hidden", "action_l2", "random_eps", "noise_eps", "clip_return",
                     "norm_eps", "norm_clip", "clip_obs", "vectorization_mode", "buffer_size",
                     "her_k", "gamma", "compile")
"""reengage.baselines_her.SETTINGS, repeated so that --help needs no torch import (a test
holds them equal)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (the full usage is one --help away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see --help)\n")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one grid cell: a population of seeds in one process",
        description="Train one (env, dim, method, hyperparameters) cell. All seeds train as "
        "one population in one process; each writes OUT/seed<k>/progress.csv (one row per "
        "evaluation) and OUT/seed<k>/run.json (resolved config, versions, status).",
        epilog="example: reengage train --env ContinuousSeek --dim 20 --method reengage_her "
        "--c 0.2 --batch-size 256 --lr 0.001 --seeds 0-9 --steps 20000 --eval-every 2000 "
        "--eval-episodes 50 --out runs/cs20",
    )
    p.add_argument("--env", required=True,
                   help=f"environment: {', '.join(ENVS)}, or a robotics task "
                   f"({', '.join(ROBOTICS_ENVS)}), trained in the Baselines HER regime "
                   "(reengage/baselines_her.py) by ddpg_her, reengage_her (c = the release's "
                   "grad_loss_weight) or reengage_her_normalized")
    p.add_argument("--dim", type=int, required=True,
                   help="goal dimension d (>= 1); on a robotics task its fixed goal width "
                   "(HandReach 15, HandManipulateBlockRotateXYZ 7, FetchReach 3)")
    p.add_argument("--method", required=True, help=f"method: {', '.join(METHODS)}")
    p.add_argument("--c", type=float, default=None,
                   help="ReenGAGE coefficient c, α = c/d (required by reengage_her, refused "
                   "by ddpg_her)")
    p.add_argument("--batch-size", type=int, default=256, help="minibatch size (default 256)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seeds", default="0", help="seeds: a range 0-9, a list 0,3,5 or a mix")
    p.add_argument("--steps", type=int, required=True,
                   help="env steps per seed (robotics: a multiple of one epoch, cycles x "
                   "workers x envs_per_worker x T steps)")
    p.add_argument("--eval-every", type=int, default=2000,
                   help="env steps between evaluations (default 2000; robotics: a multiple "
                   "of one epoch that divides --steps)")
    p.add_argument("--eval-episodes", type=int, default=50,
                   help="deterministic evaluation episodes per seed (default 50; a robotics "
                   "test runs workers x envs_per_worker x test_rollouts, and only that count "
                   "or the default is accepted)")
    p.add_argument("--learning-starts", type=int, default=1000,
                   help="initial uniformly random steps without training (default 1000)")
    p.add_argument("--cycle-episodes", type=int, default=0,
                   help="train in cycles, as Andrychowicz et al.'s HER did: after every N "
                   "episodes, --cycle-updates updates at once (default 0: one update per env "
                   "step, as the paper's toy tasks train)")
    p.add_argument("--cycle-updates", type=int, default=40,
                   help="updates at the end of each cycle (default 40)")
    p.add_argument("--buffer-size", type=int, default=1_000_000,
                   help="replay capacity in transitions per seed (default 1e6)")
    p.add_argument("--her-k", type=int, default=4,
                   help="HER relabelled goals per real goal (default 4: probability 0.8)")
    p.add_argument("--her-future", default="next_to_final", choices=HER_FUTURES,
                   help="the later states a HER goal is drawn from: next_to_final (default, "
                   "Stable-Baselines3 2.x) or next_to_penultimate (SB3 1.3, the paper's "
                   "release: never the final state, never the last transition)")
    p.add_argument("--her-relabel", default="probability", choices=HER_RELABELS,
                   help="relabel each sample with probability k/(k+1) (default), or exactly "
                   "int(k/(k+1)*batch) samples of every batch as Stable-Baselines3 does")
    p.add_argument("--inputs", default="sb3", choices=INPUT_LAYOUTS,
                   help="network inputs: sb3 (default) = (achieved goal, desired goal, "
                   "observation) as the paper's Stable-Baselines3 networks saw them; "
                   "obs_goal = (observation, desired goal)")
    p.add_argument("--gamma", type=float, default=0.95, help="discount (default 0.95)")
    p.add_argument("--tau", type=float, default=0.005, help="polyak coefficient (default 0.005)")
    p.add_argument("--action-noise", type=float, default=0.03,
                   help="Gaussian exploration noise sd (default 0.03)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's; 1 on a robotics task)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when present; cpu on a robotics task), cpu or cuda")
    p.add_argument("--loop", default="numpy", choices=TRAINING_LOOPS,
                   help="numpy (default): environments in numpy, networks on --device; "
                   "device: task, replay, exploration and evaluation as tensors on --device "
                   "(CUDA graphs on a GPU; ContinuousSeek with ddpg_her or reengage_her, "
                   "DriveSeek and NoisySeek with ddpg or multi_reengage; other random "
                   "streams, so other curves for one seed)")
    p.add_argument("--matmul-precision", default="float32", choices=list(MATMUL_PRECISIONS),
                   help="float32 (default) or tf32: float32 matrix products as TF32 on "
                   "CUDA (Ampere and later; no effect on a CPU), as the paper's PyTorch did "
                   "by default; benchmarks/tf32.py measures its error and speed")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--checkpoint-every", type=int, default=10_000,
                   help="env steps between checkpoints of the whole population (default "
                   "10000; 0 disables; robotics: rounded up to whole epochs). Re-running the "
                   "same command resumes from the last one")
    p.add_argument("--restart", action="store_true",
                   help="discard this population's checkpoint and start from step 0")
    p.add_argument("--force", action="store_true",
                   help="allow writing into an existing non-empty --out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="a learner setting, e.g. hidden=[64,64] or hand_gradients=false "
                   "(DDPG/ReenGAGE: gradients by autograd instead of in closed form) or "
                   "compile=false (the closed form without torch.compile) "
                   "or networks.encoder_hidden=64, through_target_actor=false (goal sets); "
                   f"on a robotics task the Baselines settings: {', '.join(ROBOTICS_SETTINGS)} "
                   "(e.g. workers=19 envs_per_worker=2); repeatable")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it may register methods); repeatable")
    p.add_argument("--wandb-project", default=None,
                   help="also log every seed as a Weights & Biases run in this project")
    p.add_argument("--wandb-group", default=None,
                   help="wandb group (default: the --out path)")
    p.add_argument("--wandb-mode", default="offline", choices=["offline", "online", "disabled"],
                   help="wandb mode (default offline: no account, no network)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar: one line per evaluation on stderr instead")


def _training_outcome(command: str, run: Callable[[], list[dict[str, Any]]]
                      ) -> list[dict[str, Any]] | int:
    """`run()`'s records, or the exit status of a refusal (2: a checkpoint that cannot be
    used, bad input found late) or an interruption (128 + the signal, after the run
    checkpointed), said in one line on stderr."""
    from .checkpoint import CheckpointError  # heavy imports only once the input is good
    from .run import RunInterrupted

    try:
        return run()
    except (CheckpointError, ConfigError) as error:
        print(f"{command}: {error}", file=sys.stderr)
        return USAGE_ERROR
    except RunInterrupted as interruption:
        print(f"{command}: {interruption}", file=sys.stderr)
        return 128 + interruption.signal_number


def _train(args: argparse.Namespace) -> int:
    try:
        import_plugins(args.plugin)
        cfg = from_arguments(args)
        validate(cfg)
        check_machine(cfg)
        out: Path = args.out
        checkpoint = checkpoint_path(out, cfg.seeds)
        if out.exists() and not out.is_dir():
            raise ConfigError("--out", f"{out} exists and is not a directory")
        check_out_dir(out)
        if args.restart:
            checkpoint.unlink(missing_ok=True)
            shutil.rmtree(checkpoint.with_suffix(".sb3"), ignore_errors=True)
        # A population loop's checkpoint, or the finished seeds a runner of its own kept
        # (reengage/sb3_control.py).
        resuming = checkpoint.exists() or checkpoint.with_suffix(".sb3").is_dir()
        if out.is_dir() and any(out.iterdir()) and not (resuming or args.force or args.restart):
            raise ConfigError(
                "--out", f"{out} is not empty; choose another directory or pass --force "
                "to write into it",
            )
    except ConfigError as error:
        print(f"reengage train: {error}", file=sys.stderr)
        return USAGE_ERROR

    from .run import train  # heavy imports only once the input is good

    listeners = []
    if args.wandb_project:  # every evaluation is logged as it happens
        from .tracking import WandbTracker

        listeners.append(WandbTracker(out, args.wandb_project, args.wandb_group or str(out),
                                      args.wandb_mode))
    outcome = _training_outcome("reengage train", lambda: train(
        cfg, out, progress=not args.quiet, listeners=listeners))
    if isinstance(outcome, int):
        return outcome
    records = outcome
    if not args.quiet:
        diverged = [r["seed"] for r in records if r["status"] == "diverged"]
        note = f"; diverged: seeds {diverged}" if diverged else ""
        files = "progress.csv, run.json" if cfg.env in ROBOTICS_ENVS else \
            "progress.csv, policy.pt, run.json"
        print(f"wrote {len(records)} seeds under {out}/seed<k>/ ({files}){note}",
              file=sys.stderr)
    return 0


def _add_train_pack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-pack", help="train grid cells that differ in seeds, lr and c as one population",
        description="Train several cells as one population on the device loop (--loop "
        "device): cells may differ in --seeds, --lr and --c only (same env, dim, method, "
        "batch size, steps and the rest). Every seed writes OUT/seed<k>/ under its own "
        "cell's --out, the same files as `reengage train --loop device` of that cell alone "
        "writes. DDPG+HER and ReenGAGE+HER are different methods and pack apart.",
        epilog="example: reengage train-pack --checkpoint-dir runs/pack1 "
        "--cell '--env ContinuousSeek --dim 5 --method reengage_her --c 0.1 --lr 0.001 "
        "--seeds 0-4 --steps 25000 --out runs/c0.1' --cell '--env ContinuousSeek --dim 5 "
        "--method reengage_her --c 0.3 --lr 0.0003 --seeds 0-4 --steps 25000 --out "
        "runs/c0.3'",
    )
    p.add_argument("--cell", action="append", required=True, metavar="ARGUMENTS",
                   help="one cell: `reengage train` arguments with its --out, quoted as one "
                   "argument; repeat for every cell")
    p.add_argument("--cell-options", default="", metavar="ARGUMENTS",
                   help="`reengage train` options added to every cell (e.g. '--threads 4 "
                   "--checkpoint-every 10000 --force')")
    p.add_argument("--checkpoint-dir", required=True, type=Path,
                   help="where the pack's checkpoint goes (DIR/.checkpoints/pack.pt); "
                   "re-running the same command resumes from it")
    p.add_argument("--restart", action="store_true",
                   help="discard the pack's checkpoint and start from step 0")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar: one line per cell and evaluation on stderr")


def _parse_cell(text: str) -> tuple[argparse.Namespace, TrainConfig]:
    """A --cell's `reengage train` arguments, parsed as `reengage train` parses them."""
    try:
        args = parse_train_command(build_parser(),
                                   ["train", *shlex.split(text), "--loop", "device"])
    except ConfigError as error:
        raise ConfigError("--cell", f"{error} in {text!r}") from None
    return args, from_arguments(args)


def _trackers(args: argparse.Namespace) -> tuple:
    """A cell's Weights & Biases tracker, where its options ask for one."""
    if not args.wandb_project:
        return ()
    from .tracking import WandbTracker

    return (WandbTracker(args.out, args.wandb_project, args.wandb_group or str(args.out),
                         args.wandb_mode),)


def _train_pack(args: argparse.Namespace) -> int:
    from .device.pack import PackedCell, pack_checkpoint, population_config

    try:
        parsed = [_parse_cell(f"{text} {args.cell_options}") for text in args.cell]
        for cell_args, _ in parsed:
            import_plugins(cell_args.plugin)
        cells = [PackedCell(cfg, cell_args.out, _trackers(cell_args))
                 for cell_args, cfg in parsed]
        for cell in cells:
            validate(cell.cfg)
        population, _, _ = population_config(cells)
        check_machine(population)
        checkpoint = pack_checkpoint(args.checkpoint_dir)
        if args.restart:
            checkpoint.unlink(missing_ok=True)
        for (cell_args, _), cell in zip(parsed, cells, strict=True):
            out = cell.out
            if out.exists() and not out.is_dir():
                raise ConfigError("--out", f"{out} exists and is not a directory")
            check_out_dir(out)
            if out.is_dir() and any(out.iterdir()) and not (
                    checkpoint.exists() or cell_args.force or args.restart):
                raise ConfigError("--out", f"{out} is not empty; choose another directory or "
                                  "pass --force in that --cell to write into it")
    except ConfigError as error:
        print(f"reengage train-pack: {error}", file=sys.stderr)
        return USAGE_ERROR

    from .device.driver import train_pack

    outcome = _training_outcome("reengage train-pack", lambda: train_pack(
        cells, args.checkpoint_dir, progress=not args.quiet))
    if isinstance(outcome, int):
        return outcome
    records = outcome
    if not args.quiet:
        diverged = sum(r["status"] == "diverged" for r in records)
        note = f"; {diverged} diverged" if diverged else ""
        print(f"wrote {len(records)} seeds of {len(cells)} cells (progress.csv, policy.pt, "
              f"run.json under each cell's --out){note}", file=sys.stderr)
    return 0


def _add_check_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-config", help="validate a workflow config against reengage/schema.yaml",
        description="Validate a workflow config file (the same checks the Snakefile runs) "
        "and print the number of training jobs and seed-steps it plans.",
    )
    p.add_argument("config", type=Path, help="a YAML config, e.g. config/paper.yaml")


def _check_config(args: argparse.Namespace) -> int:
    import yaml

    from .workflow import (
        apply_defaults,
        cells,
        pack_jobs,
        packed,
        seed_chunks,
        seeds_of,
        seeds_per_job,
        steps_for,
        validate_config,
        yaml_problem,
    )

    try:
        config = yaml.safe_load(args.config.read_text())
        if not isinstance(config, dict):
            raise ConfigError("(top level)", "the file does not hold a mapping of keys")
        validate_config(config)
    except OSError as error:
        print(f"reengage check-config: cannot read {args.config}: {error.strerror}",
              file=sys.stderr)
        return USAGE_ERROR
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        print(f"reengage check-config: {args.config}: not valid YAML: {yaml_problem(error)}",
              file=sys.stderr)
        return USAGE_ERROR
    except ConfigError as error:
        print(f"reengage check-config: {args.config}: {error}", file=sys.stderr)
        return USAGE_ERROR
    config = apply_defaults(config)
    jobs = seed_steps = 0
    for cell in cells(config):
        experiment = config["experiments"][cell.experiment]
        seeds = seeds_of(experiment, cell.method)
        if not packed(config, cell):  # a packed cell's seeds train in its pack's jobs
            jobs += len(seed_chunks(seeds, seeds_per_job(config, cell.experiment)))
        seed_steps += len(seeds) * steps_for(experiment, cell.dim)
    packs = len(pack_jobs(config))
    note = f" ({packs} of them packs of cells)" if packs else ""
    # The size before the cost: seed-steps, the unit the README's rates are measured in.
    print(f"{args.config}: valid; {jobs + packs} training jobs{note}, "
          f"{seed_steps / 1e6:,.1f}M seed-steps")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="reload trained policies (seed<k>/policy.pt) and score them",
        description="Rebuild each seed's environment and learner from its policy.pt, play "
        "deterministic episodes and print one line per seed: success rate and mean return. "
        "The episodes are the run's own evaluation episodes (its first evaluation's goals "
        "by default).",
        epilog="example: reengage evaluate runs/cs20 --episodes 100",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a seed's folder, or a population's or cell's folder of seed<k>/")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes per seed (default: the run's --eval-episodes)")
    p.add_argument("--seed", type=int, default=None,
                   help="play the evaluation episodes of this seed instead of each policy's "
                   "own (other goals)")
    p.add_argument("--evaluation", default="1", metavar="K|last",
                   help="the goals of the run's K-th evaluation (default 1, the first) or of "
                   "its last, which reproduces progress.csv's last row with the run's episode "
                   "count; the earlier ones are replayed to reach them")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it registers the run's method); repeatable")


def _evaluate(args: argparse.Namespace) -> int:
    from .policy import PolicyError

    try:
        if args.episodes is not None and args.episodes < 1:
            raise ConfigError("--episodes", f"must be a positive integer (got {args.episodes})")
        if args.seed is not None and args.seed < 0:
            raise ConfigError("--seed", f"must be >= 0 (got {args.seed})")
        evaluation = args.evaluation
        if evaluation != "last" and not (evaluation.isdigit() and int(evaluation) >= 1):
            raise ConfigError("--evaluation", f"must be a number >= 1 or last (got "
                              f"{evaluation!r})")
        if args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
            raise ConfigError("--device", f"must be auto, cpu or cuda[:N] (got {args.device!r})")
        import_plugins(args.plugin)
        refuse_robotics(args.run_dir)
        from .evaluate import evaluate_run
        from .run import resolve_device

        scores = evaluate_run(args.run_dir, args.episodes, args.seed, evaluation,
                              resolve_device(args.device))
    except (ConfigError, PolicyError) as error:
        print(f"reengage evaluate: {error}", file=sys.stderr)
        return USAGE_ERROR
    for score in scores:
        print(score.line())
    return 0


def refuse_robotics(run_dir: Path) -> None:
    """A robotics run has no policy.pt to evaluate: say so instead of 'no policy.pt'."""
    import json

    for record in [run_dir / "run.json", *sorted(run_dir.glob("seed*/run.json"))]:
        try:
            env = json.loads(record.read_text()).get("config", {}).get("env")
        except (OSError, ValueError, AttributeError):
            continue
        if env in ROBOTICS_ENVS:
            raise ConfigError("RUN_DIR", f"{record.parent} is a run on {env}, trained in the "
                              "Baselines regime, which writes no policy.pt (the policy file "
                              "holds neither the input normaliser nor the robotics env); its "
                              "test success is in progress.csv")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "bench", add_help=False,
        help="throughput against Stable-Baselines3 and the GEMM ceiling "
        "(benchmarks/throughput.py; `reengage bench --help` for its options)",
    )


def _add_theory(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "theory", add_help=False,
        help="O(d^2) vs O(d) transitions on the Proposition 1 and 2 environments "
        "(python -m reengage.theory; `reengage theory --help` for its options)",
    )


def _bench(argv: list[str]) -> int:
    import runpy

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"
    if not script.exists():
        print(f"reengage bench: {script} not found (run from a source checkout)",
              file=sys.stderr)
        return USAGE_ERROR
    namespace = runpy.run_path(str(script))
    return int(namespace["main"](argv))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="reengage",
        description="ReenGAGE reproduction harness (Levine & Feizi, AAAI 2023).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_train(sub)
    _add_train_pack(sub)
    _add_check_config(sub)
    _add_evaluate(sub)
    _add_bench(sub)
    _add_theory(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # these two parse their own options
        return _bench(argv[1:])
    if argv[:1] == ["theory"]:
        from .theory import main as theory_main

        return theory_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return _train(args)
    if args.command == "train-pack":
        return _train_pack(args)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "evaluate":
        return _evaluate(args)
    return USAGE_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
