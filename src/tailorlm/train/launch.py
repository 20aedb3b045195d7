"""Scale-out: run the same SFT recipe in N processes under ``accelerate launch`` (DDP, FSDP or DeepSpeed).

    tailor train sft RECIPE.yaml --launcher accelerate --num-processes 2
    tailor train sft RECIPE.yaml --launcher accelerate --accelerate-config recipes/accelerate/fsdp.yaml

Who does what:

- the **launcher** (the ``tailor`` process the user started) creates the run directory (or reopens it for
  ``--resume``), so every process shares one run id; it starts ``python -m accelerate.commands.launch ... -m
  tailorlm.cli.main train sft RECIPE ... --run-dir RUN_DIR``, waits, and ends the run "complete" or "failed";
- every **worker** runs the same ``fit`` on its shard of each batch. The Trainer already saves checkpoints on
  rank 0 only; ``WorkerRun`` makes every other run write (run.json, metrics, the log) a no-op on ranks > 0, and
  ``train_and_save`` writes the artifacts, system.yaml, canaries and the model card on rank 0 only.

Without a GPU the workers use the CPU and the gloo backend (``ACCELERATE_USE_CPU``), which is what the tests run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tailorlm.core.run import Run
from tailorlm.errors import ConfigError, RunError, TailorError

log = logging.getLogger("tailorlm.train.launch")


def process_rank() -> int:
    """This process's global rank as set by accelerate/torchrun/DeepSpeed (0 when not launched)."""
    return int(os.environ.get("RANK", "0"))


class WorkerRun(Run):
    """One process's handle on a run the launcher owns: rank 0 writes; the other ranks only read.

    It never changes the run's status: the launcher ends the run once every process has exited.
    """

    def __init__(self, path: Path, meta: dict[str, Any], main: bool) -> None:
        super().__init__(path, meta)
        self.main = main

    @classmethod
    def attach(cls, path: str | Path, rank: int | None = None) -> WorkerRun:
        path = Path(path)
        try:
            meta = json.loads((path / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RunError(f"{path} is not a run directory (no readable run.json)") from err
        run = cls(path, meta, main=(process_rank() if rank is None else rank) == 0)
        if run.main:
            handler = logging.FileHandler(path / "logs" / "run.log", encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            handler.setLevel(logging.INFO)
            logging.getLogger("tailorlm").addHandler(handler)
            run._handler = handler
        return run

    def record_dataset(self, name: str, path: str | Path, fingerprint: str, n_records: int) -> None:
        if self.main:
            super().record_dataset(name, path, fingerprint, n_records)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if self.main:
            super().log_metrics(metrics, step)

    def write_metrics(self, metrics: Mapping[str, Any], *, merge: bool = True) -> None:
        if self.main:
            super().write_metrics(metrics, merge=merge)

    def detach(self) -> None:
        """Stop writing to the run's log (the status stays the launcher's to set)."""
        if self._handler is not None:
            logging.getLogger("tailorlm").removeHandler(self._handler)
            self._handler.close()
            self._handler = None


def run_worker(recipe: Any, run_dir: str | Path, *, resume: bool, callbacks: Sequence[Any] = ()) -> None:
    """What each process started by ``accelerate launch`` does: the ordinary ``fit`` inside the shared run."""
    from tailorlm.train.sft import fit

    run = WorkerRun.attach(run_dir)
    try:
        fit(recipe, run, resume=resume, callbacks=callbacks)
    finally:
        run.detach()


def _free_port() -> int:
    # Port 0 asks the OS for a free one: two launches on one machine must not fight over accelerate's 29500.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accelerate_command(
    worker_args: Sequence[str],
    *,
    num_processes: int | None,
    accelerate_config: Path | None,
    cpu: bool,
) -> tuple[list[str], dict[str, str]]:
    """The ``accelerate launch`` command line and environment that start ``worker_args`` in every process."""
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    env = dict(os.environ)
    if accelerate_config is not None:
        if not Path(accelerate_config).is_file():
            raise ConfigError(f"accelerate config {accelerate_config} does not exist", hint="see recipes/accelerate/")
        cmd += ["--config_file", str(accelerate_config)]
        if num_processes is not None:
            cmd += ["--num_processes", str(num_processes)]
    else:
        n = num_processes or max(1, torch.cuda.device_count())
        # --multi_gpu selects accelerate's torchrun launcher, which starts the N processes; its `--cpu` flag would
        # pick the single-process launcher (multi-CPU there means mpirun). The CPU is chosen through the env below.
        cmd += ["--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if n > 1:
            cmd += ["--multi_gpu", "--main_process_port", str(_free_port())]
        if cpu:
            threads = max(1, (os.cpu_count() or 1) // n)
            cmd += ["--num_cpu_threads_per_process", str(threads)]
    if cpu:
        # Read by TrainingArguments: PartialState(cpu=True) → MULTI_CPU with the gloo backend.
        env["ACCELERATE_USE_CPU"] = "true"
    cmd += ["-m", "tailorlm.cli.main", *worker_args]
    return cmd, env


def launch_sft(
    source: Path,
    overrides: Sequence[str],
    recipe: Any,
    *,
    resume: Path | None,
    runs_root: Path,
    num_processes: int | None,
    accelerate_config: Path | None,
    cpu: bool | None,
) -> Run:
    """Create (or reopen) the run, start the workers under ``accelerate launch``, end the run by their exit code."""
    import torch

    if num_processes is not None and num_processes < 1:
        raise ConfigError("--num-processes must be at least 1")
    if recipe.strategy.method == "qlora":
        from tailorlm.train.quantized import require_qlora

        require_qlora()  # here, before N processes start only to refuse
    # Without a GPU, DDP must be told to use the CPU: otherwise every process trains alone, as rank 0 of 1.
    cpu = bool(cpu) or not torch.cuda.is_available()
    if resume is not None:
        run = Run.reopen(resume)
    else:
        run = Run.create(
            recipe.name, root=runs_root, config=recipe, seed=recipe.training.seed, parent=recipe.system, kind="sft"
        )
    worker_args = ["train", "sft", str(source), *overrides, "--run-dir", str(run.path)]
    if resume is not None:
        worker_args += ["--resume", str(resume)]
    with run:
        cmd, env = accelerate_command(
            worker_args, num_processes=num_processes, accelerate_config=accelerate_config, cpu=cpu
        )
        run.logger.info("launching: %s", " ".join(cmd))
        code = subprocess.run(cmd, env=env, check=False).returncode
        # Rank 0 recorded the datasets in run.json; keep them when this process writes the final status.
        fresh = json.loads((run.path / "run.json").read_text(encoding="utf-8"))
        run.meta["datasets"] = fresh.get("datasets", run.meta["datasets"])
        if code != 0:
            raise TailorError(
                f"accelerate launch exited with code {code}; run {run.path} is marked failed",
                hint=f"see the workers' errors above and {run.path / 'logs' / 'run.log'}; resume with "
                f"`tailor train sft --resume {run.path} --launcher accelerate`",
            )
    return run
