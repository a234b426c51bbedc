"""Start a leased workload inside its limits, then become it (``exec``).

    python -m agora.market.sandbox --cpus 2 --mem-mib 2048 --cgroup /sys/fs/cgroup/x -- argv...

Run by the provider agent as the workload's first process, in the lease's working directory and
its own session (process group), so that stopping the lease kills everything it started. Before
``exec`` it applies, in its own process (no ``preexec_fn`` in a threaded agent):

- CPU: pins the process to ``--cpus`` cores (``sched_setaffinity``), and in a cgroup v2 (when the
  agent could create one) ``cpu.max`` caps it at that many cores' worth of time;
- memory: ``RLIMIT_DATA`` (private writable memory: the heap and anonymous mappings, since
  Linux 4.7) at the leased MiB, and ``memory.max`` in the cgroup. Not ``RLIMIT_AS``: shared
  mappings (a Ray object store maps gigabytes of ``/dev/shm``) would count against it;
- files: ``RLIMIT_FSIZE`` (largest file it may write), ``RLIMIT_NOFILE`` (open files),
  ``RLIMIT_CORE`` 0.

No Docker and no root needed; the cgroup is used only when the agent's user may write one
(``--cgroup`` is then the directory to join). It is an isolation of resources, not a security
boundary against a hostile tenant: run providers as a dedicated user.

Imports only the standard library, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys

__all__ = ["apply_limits", "main"]


def apply_limits(cpus: int, mem_mib: int, fsize_mib: int, nofile: int) -> list[str]:
    """Apply the limits to this process; returns notes about any that could not be applied."""
    notes: list[str] = []
    try:
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, available[: max(1, cpus)])
    except (AttributeError, OSError) as error:
        notes.append(f"cpu affinity not set: {error}")
    limits = {
        resource.RLIMIT_DATA: mem_mib * 1024 * 1024,
        resource.RLIMIT_FSIZE: fsize_mib * 1024 * 1024,
        resource.RLIMIT_NOFILE: nofile,
        resource.RLIMIT_CORE: 0,
    }
    for which, value in limits.items():
        try:
            _soft, hard = resource.getrlimit(which)
            capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (capped, capped))
        except (ValueError, OSError) as error:
            notes.append(f"rlimit {which} not set: {error}")
    return notes


def join_cgroup(path: str) -> str | None:
    """Move this process into the cgroup at ``path``; a note if that failed."""
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    except OSError as error:
        return f"cgroup {path} not joined: {error}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agora.market.sandbox")
    parser.add_argument("--cpus", type=int, required=True)
    parser.add_argument("--mem-mib", type=int, required=True)
    parser.add_argument("--fsize-mib", type=int, default=4096)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--cgroup", default="")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the workload's command after --")
    notes = [join_cgroup(args.cgroup)] if args.cgroup else []
    notes += apply_limits(args.cpus, args.mem_mib, args.fsize_mib, args.nofile)
    for note in notes:
        if note:
            print(f"[agora sandbox] {note}", file=sys.stderr, flush=True)
    try:
        os.execvp(command[0], command)
    except OSError as error:
        print(f"[agora sandbox] cannot start {command[0]!r}: {error}", file=sys.stderr)
        return 127
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
