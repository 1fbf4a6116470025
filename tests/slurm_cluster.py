"""A real single-node Slurm for the tests: munged, slurmctld and slurmd on localhost.

Debian's ``slurm-wlm`` and ``munge`` (installed by ``make test``'s Slurm stamp rule) run as root
with a generated ``slurm.conf`` whose state, spool, log and socket paths all lie in a temporary
folder, on free ports, so nothing outside that folder is touched. :func:`local_slurm` starts the
three daemons, waits until the node takes jobs and stops them at the end; clients (``sbatch``,
``squeue``, ``scancel``, and submitit through them) find the cluster through ``SLURM_CONF``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SLURM_CONF = """\
ClusterName=captest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MinJobAge=600
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")


def missing_programs() -> list[str]:
    return [name for name in DAEMONS if shutil.which(name) is None]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait(what: str, ready, timeout: float, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log is not None and log.is_file() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s\n{tail}")


def _stop(pid_file: Path) -> None:
    if not pid_file.is_file():
        return
    pid = int(pid_file.read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _node_idle(env: dict) -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() in {"idle", "mix", "alloc"}


@contextlib.contextmanager
def local_slurm(root: Path, cpus: int = 2):
    """Run a single-node Slurm with ``cpus`` CPUs under ``root``; yield the environment its
    clients need (``SLURM_CONF``)."""
    root = Path(root)
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ctld_port, slurmd_port = _free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(root=root, ctld_port=ctld_port, slurmd_port=slurmd_port, cpus=cpus))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge = root / "munged.pid"
    try:
        subprocess.run(["munged", "--force", f"--socket={root}/munge.socket", f"--pid-file={munge}",
                        f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed"], check=True,
                       capture_output=True, text=True)
        subprocess.run(["slurmctld", "-i", "-f", str(conf)], env=env, check=True, capture_output=True, text=True)
        subprocess.run(["slurmd", "-f", str(conf), "-N", "localhost"], env=env, check=True, capture_output=True,
                       text=True)
        _wait("the Slurm node", lambda: _node_idle(env), 60, root / "slurmd.log")
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--quiet", "-u", "root"], env=env, capture_output=True)
        _stop(root / "slurmd.pid")
        _stop(root / "slurmctld.pid")
        _stop(munge)
