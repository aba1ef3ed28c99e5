"""Fault injection on the embedded workflow store: does anything get lost, duplicated, or end in a traceback?

Repeats, at random (fixed seed), until ``--injections`` faults have been injected:

- parallel ``submit``s (2-4 at once, default options, some of them repeats of earlier submissions);
- SIGKILL of ``run`` at a random moment, and between writing a temporary file and renaming it;
- SIGKILL of ``submit`` at a random moment, and between writing a temporary file and renaming it;
- Ctrl-C (SIGINT) of ``run``: exit 130, one line, the interrupted job READY again;
- damaged files (``launchpad.json``, ``jobs.json``, ``data.json`` truncated, random bytes, empty, ``[]``,
  ``null``, ``{}``, deleted): ``status``, ``results``, ``submit`` and ``run`` must each refuse in one line and
  leave the file as it is; then ``cryspnet-gen restore`` puts the backup back;
- deleting ``holder.json`` while ``run`` holds the store, then ``submit`` (it must wait and succeed);
- two ``run``s at once; moving the store folder with ``mv``.

After every injection the store is read (when it is whole) and checked: every workflow a ``submit`` reported as
added is there (else *workflow lost*), every job output ever seen is still in ``jobs.json`` and every COMPLETED
job has one (else *output lost*), no workflow key or (job uuid, index) appears twice (*duplicate*), and no
command printed a traceback. At the end a last ``run`` finishes everything and every workflow must be
COMPLETED with ``results`` exiting 0.

Every command is the real ``cryspnet-gen`` command-line entry point (``cryspnet_gen.workflows.cli.main``) in a
process of its own, forked from this one after the heavy imports so that each starts in milliseconds. The
workflows are real (shipped model, ``-k 1 --space-group 225 --steps 2``, CHGNet, one torch thread).

    python bench/store_faults.py --injections 200 --seed 0          # ~20-30 min on 2 busy cores
    python bench/store_faults.py --injections 20 --seed 1           # a quick look
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMULAS = ["NaCl", "KCl", "LiF", "NaF", "KBr", "LiCl"]
SEEDS = range(6)  # 36 distinct submissions at most: repeats exercise "already submitted"
SUBMIT_OPTIONS = ["-k", "1", "--space-group", "225", "--steps", "2"]
STORE_FILES = ("launchpad.json", "jobs.json", "data.json")
ADDED = re.compile(r"^added\s+(\S+): fireworks \[[^]]*\] \(key (\w+)\)", re.M)
ALREADY = re.compile(r"^already\s+(\S+): .*key (\w+)\); not added again", re.M)


def damage(kind: str, raw: bytes, rng: random.Random) -> bytes | None:
    """The damaged content of a file (``None``: delete it)."""
    return {
        "truncated": lambda: raw[: rng.randrange(1, max(len(raw) - 1, 2))],
        "random bytes": lambda: rng.randbytes(rng.randrange(1, 400)),
        "empty": lambda: b"",
        "list": lambda: b"[]",
        "null": lambda: b"null",
        "empty object": lambda: b"{}",
        "deleted": lambda: None,
    }[kind]()


DAMAGE_KINDS = ("truncated", "random bytes", "empty", "list", "null", "empty object", "deleted")


# ----------------------------------------------------------------------------------------------------------
# children


@dataclass
class Child:
    """A forked command-line process."""

    pid: int
    argv: list[str]
    log: Path
    code: int | None = None

    def poll(self) -> int | None:
        if self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def wait(self, timeout: float = 600) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
            time.sleep(0.05)
        assert self.code is not None
        return self.code

    def signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def fork_cli(argv: list[str], log: Path, *, kill_at_replace: int | None = None) -> Child:
    """Run ``cryspnet-gen ARGV`` in a forked process, its output into ``log``.

    ``kill_at_replace=n``: the process SIGKILLs itself at its n-th ``os.replace`` (a temporary file written,
    not yet renamed).
    """
    pid = os.fork()
    if pid:
        return Child(pid, argv, log)
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if kill_at_replace is not None:
            real, calls = os.replace, [0]

            def replace(src: Any, dst: Any) -> None:
                calls[0] += 1
                if calls[0] >= kill_at_replace:
                    os.kill(os.getpid(), signal.SIGKILL)
                real(src, dst)

            os.replace = replace  # type: ignore[assignment]
        from cryspnet_gen.workflows.cli import main

        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# ----------------------------------------------------------------------------------------------------------
# the ledger and the checks


@dataclass
class Ledger:
    """What must never be lost."""

    added: dict[str, str] = field(default_factory=dict)  # workflow key -> formula, as submit reported
    outputs: set[tuple[str, int]] = field(default_factory=set)  # outputs of COMPLETED jobs ever seen
    lost_workflows: set[str] = field(default_factory=set)
    lost_outputs: set[tuple[str, int]] = field(default_factory=set)
    duplicates: int = 0
    tracebacks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_store(
    folder: Path,
) -> tuple[collections.Counter[str], set[tuple[str, int]], collections.Counter[Any]]:
    """(workflow keys, (uuid, index) of COMPLETED jobs, (uuid, index) of outputs in jobs.json)."""
    from cryspnet_gen.workflows.store import open_store

    with open_store(folder, readonly=True) as h:
        lpad = h.launchpad
        keys = collections.Counter(
            wf["metadata"]["cryspnet"]["key"] for wf in lpad.workflows.find({}, {"metadata": 1})
        )
        done = set()
        for fw in lpad.fireworks.find({"state": "COMPLETED"}, {"spec._tasks": 1}):
            job = fw["spec"]["_tasks"][0]["job"]
            done.add((job["uuid"], int(job["index"])))
    docs = json.loads((folder / "jobs.json").read_bytes())
    outputs = collections.Counter((d["uuid"], int(d["index"])) for d in docs)
    return keys, done, outputs


def check(folder: Path, ledger: Ledger) -> list[str]:
    """Check the invariants; the problems found (also added to the ledger)."""
    from cryspnet_gen.workflows.store import StoreError

    try:
        keys, done, outputs = read_store(folder)
    except StoreError as exc:  # a fault left the store unreadable: a failure of its own
        ledger.problems.append(f"store refused after a fault: {exc}")
        return [ledger.problems[-1]]
    found = []
    lost = {k for k in ledger.added if keys[k] == 0} - ledger.lost_workflows
    if lost:
        found.append(f"workflows lost: {sorted(lost)}")
        ledger.lost_workflows |= lost
    gone = ((ledger.outputs | done) - set(outputs)) - ledger.lost_outputs
    if gone:
        found.append(f"job outputs lost: {sorted(gone)}")
        ledger.lost_outputs |= gone
    # An output whose job is not COMPLETED yet (killed before its state was saved) is redone by the next run.
    dups = sum(c - 1 for c in keys.values() if c > 1) + sum(c - 1 for c in outputs.values() if c > 1)
    if dups > ledger.duplicates:
        found.append(f"duplicates: {dups}")
        ledger.duplicates = dups
    ledger.outputs |= done & set(outputs)
    ledger.problems += found
    return found


# ----------------------------------------------------------------------------------------------------------
# the scenarios


class Stress:
    """The store, the random choices and the scenarios (each returns whether it behaved as it must)."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.store = root / "store-0"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger()
        self.n = 0
        self.moves = 0
        self.harmless = 0  # damage that left a valid, consistent store: nothing to refuse

    # helpers ------------------------------------------------------------------------------------------

    def cli(self, *argv: str, kill_at_replace: int | None = None) -> Child:
        self.n += 1
        log = self.logs / f"{self.n:04d}-{argv[0]}.log"
        return fork_cli([*argv, "--store", str(self.store)], log, kill_at_replace=kill_at_replace)

    def submission(self) -> list[str]:
        picks = {(self.rng.choice(FORMULAS), self.rng.choice(SEEDS)) for _ in range(self.rng.randint(1, 2))}
        formula, seed = sorted(picks)[0]
        return ["submit", formula, *SUBMIT_OPTIONS, "--seed", str(seed)]

    def note(self, child: Child, *, expect: tuple[int, ...] | None = None) -> bool:
        """Record a finished child's outcome; whether its exit code is one of ``expect``."""
        text = child.text
        if "Traceback" in text:
            self.ledger.tracebacks.append(f"{child.log.name}: {child.argv}")
        if child.code == 0 or child.code == 1:
            for _, key in ADDED.findall(text):
                self.ledger.added[key] = child.argv[1]
        for formula, key in ALREADY.findall(text):
            if key not in self.ledger.added and child.code in (0, 1):
                self.ledger.added[key] = formula  # it was there: it must stay
        return expect is None or child.code in expect

    def ready_jobs(self) -> int:
        from cryspnet_gen.workflows.store import open_store

        with open_store(self.store, readonly=True) as h:
            return int(h.launchpad.fireworks.count_documents({"state": {"$in": ["READY", "RUNNING"]}}))

    def ensure_work(self) -> None:
        if self.ready_jobs() == 0:
            child = self.cli(*self.submission())
            child.wait()
            self.note(child, expect=(0,))

    def wait_holder(self, child: Child, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and child.poll() is None:
            if (self.store / "holder.json").exists():
                return True
            time.sleep(0.02)
        return False

    # scenarios ----------------------------------------------------------------------------------------

    def parallel_submit(self) -> bool:
        children = [self.cli(*self.submission()) for _ in range(self.rng.randint(2, 4))]
        for c in children:
            c.wait()
        return all([self.note(c, expect=(0,)) for c in children])

    def kill_run(self, *, at_rename: bool = False) -> bool:
        """SIGKILL ``run`` at a random moment, or (``at_rename``) at one of its first renames."""
        self.ensure_work()
        return self._kill(("run", "-q"), at_rename=at_rename, renames=12, wait=(0.3, 6.0))

    def kill_submit(self) -> bool:
        at_rename = self.rng.random() < 0.5
        return self._kill(self.submission(), at_rename=at_rename, renames=3, wait=(0.0, 1.5))

    def _kill(self, argv: Sequence[str], *, at_rename: bool, renames: int, wait: tuple[float, float]) -> bool:
        """SIGKILL a command after a random wait, or at one of its first ``renames`` renames."""
        child = self.cli(*argv, kill_at_replace=self.rng.randint(1, renames) if at_rename else None)
        if not at_rename:
            time.sleep(self.rng.uniform(*wait))
            child.signal(signal.SIGKILL)
        child.wait()
        return self.note(child, expect=(0, -signal.SIGKILL))

    def sigint_run(self) -> bool:
        self.ensure_work()
        child = self.cli("run", "-q")
        time.sleep(self.rng.uniform(0.5, 6.0))
        child.signal(signal.SIGINT)
        child.wait()
        ok = self.note(child, expect=(0, 130))
        if child.code == 130:
            lines = [line for line in child.text.splitlines() if "interrupted" in line]
            ok = ok and len(lines) == 1 and "KeyboardInterrupt" not in child.text
        return ok and self.no_interrupt_fizzles()

    def no_interrupt_fizzles(self) -> bool:
        from cryspnet_gen.workflows.manage import firework_error
        from cryspnet_gen.workflows.store import open_store

        with open_store(self.store, readonly=True) as h:
            fizzled = [fw["fw_id"] for fw in h.launchpad.fireworks.find({"state": "FIZZLED"}, {"fw_id": 1})]
            errors = [firework_error(h.launchpad, i) or "" for i in fizzled]
        return not any("KeyboardInterrupt" in e for e in errors)

    def damage_file(self) -> bool:
        name = self.rng.choice(STORE_FILES)
        kind = self.rng.choice(DAMAGE_KINDS)
        path = self.store / name
        new = damage(kind, path.read_bytes(), self.rng)
        if new is None:
            path.unlink()
        else:
            path.write_bytes(new)
        before = path.read_bytes() if path.exists() else None
        ok, refused = True, []
        commands = [["status"], ["results", "NaCl"], self.submission(), ["run", "-q", "--max-jobs", "1"]]
        for argv in commands:
            child = self.cli(*argv)
            child.wait()
            ok = self.note(child) and ok
            refused.append(child.code == 2)
            if child.code == 2:  # refused: in one line naming the file, which is left as it was
                lines = [line for line in child.text.splitlines() if line.strip()]
                ok = ok and len(lines) == 1 and str(path) in lines[0]
                ok = ok and (path.read_bytes() if path.exists() else None) == before
        if not any(refused):  # still a valid, consistent store (e.g. "[]" for a data.json that nothing needs)
            self.harmless += 1
            return ok
        child = self.cli("restore")
        child.wait()
        return self.note(child, expect=(0,)) and ok and all(refused)

    def lock_removal(self) -> bool:
        self.ensure_work()
        run = self.cli("run", "-q", "--max-jobs", "2")
        held = self.wait_holder(run)
        with_wait = None
        if held:
            (self.store / "holder.json").unlink(missing_ok=True)
            refused = self.cli(*self.submission(), "--wait", "0")
            refused.wait()
            ok_refused = refused.code in (0, 2) and self.note(refused)  # 0 if run had just finished
            with_wait = self.cli(*self.submission())
        run.wait()
        ok = self.note(run, expect=(0, 1))
        if with_wait is not None:
            with_wait.wait()
            ok = self.note(with_wait, expect=(0,)) and ok_refused and ok
        return ok

    def parallel_runs(self) -> bool:
        self.ensure_work()
        runs = [self.cli("run", "-q", "--max-jobs", "2") for _ in range(2)]
        for r in runs:
            r.wait()
        return all([self.note(r, expect=(0,)) for r in runs])

    def move_store(self) -> bool:
        self.moves += 1
        target = self.root / f"store-{self.moves}"
        os.rename(self.store, target)
        self.store = target
        child = self.cli("status", "-q")
        child.wait()
        return self.note(child, expect=(0,))


SCENARIOS = {
    "parallel submits": (Stress.parallel_submit, 2.0),
    "SIGKILL run (random moment)": (Stress.kill_run, 3.0),
    "SIGKILL run (temp file written, not renamed)": (lambda s: s.kill_run(at_rename=True), 2.0),
    "SIGKILL submit (random moment or at rename)": (Stress.kill_submit, 2.0),
    "Ctrl-C run": (Stress.sigint_run, 2.0),
    "damaged or deleted file": (Stress.damage_file, 3.0),
    "holder record deleted while run holds the store": (Stress.lock_removal, 1.0),
    "two runs at once": (Stress.parallel_runs, 1.0),
    "store moved (mv)": (Stress.move_store, 0.5),
}


def finish(stress: Stress) -> bool:
    """Run everything that is left; every workflow must complete and give results."""
    run = stress.cli("run", "-q")
    run.wait(timeout=3600)
    ok = stress.note(run, expect=(0,))
    check(stress.store, stress.ledger)
    keys, done, _ = read_store(stress.store)
    from cryspnet_gen.workflows.manage import workflow_status
    from cryspnet_gen.workflows.store import open_store

    with open_store(stress.store, readonly=True) as h:
        states = collections.Counter(r.state for r in workflow_status(h.launchpad))
    print(f"final: {sum(keys.values())} workflows {dict(states)}, {len(done)} jobs COMPLETED", flush=True)
    formulas = sorted(set(stress.ledger.added.values()))
    child = stress.cli("results", *formulas, "-q")
    child.wait()
    return stress.note(child, expect=(0,)) and ok and set(states) == {"COMPLETED"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--injections", type=int, default=200, help="faults to inject")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the store and logs here")
    args = parser.parse_args(argv)

    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    os.environ.pop("MONGOMOCK_SERVERSTORE_FILE", None)
    import atomate2.forcefields.jobs  # noqa: F401 - imported once here, not in every forked command
    import chgnet.model  # noqa: F401

    import cryspnet_gen.workflows.cli
    import cryspnet_gen.workflows.makers  # noqa: F401

    root = args.workdir or Path(tempfile.mkdtemp(prefix="store-faults-"))
    rng = random.Random(args.seed)
    stress = Stress(root, rng)
    tried: collections.Counter[str] = collections.Counter()
    survived: collections.Counter[str] = collections.Counter()
    t0 = time.perf_counter()
    child = stress.cli(*stress.submission())
    child.wait()
    stress.note(child, expect=(0,))
    names, weights = list(SCENARIOS), [w for _, w in SCENARIOS.values()]
    for i in range(args.injections):
        name = rng.choices(names, weights)[0]
        behaved = SCENARIOS[name][0](stress)
        problems = check(stress.store, stress.ledger)
        tried[name] += 1
        survived[name] += bool(behaved and not problems)
        flag = "ok" if behaved and not problems else f"FAILED {problems}"
        print(f"{i + 1:4d} {time.perf_counter() - t0:7.0f} s  {name}: {flag}", flush=True)
    final_ok = finish(stress)
    seconds = time.perf_counter() - t0
    led = stress.ledger
    print("\n| fault | tried | survived |\n|---|---:|---:|")
    for name in names:
        if tried[name]:
            print(f"| {name} | {tried[name]} | {survived[name]} |")
    print(
        f"\ninjections {sum(tried.values())}, survived {sum(survived.values())}; workflows submitted "
        f"{len(led.added)}, workflows lost {len(led.lost_workflows)}, job outputs checked {len(led.outputs)}, "
        f"job outputs lost {len(led.lost_outputs)}, duplicates {led.duplicates}, tracebacks "
        f"{len(led.tracebacks)}; final run and results {'ok' if final_ok else 'FAILED'}; {seconds:.0f} s"
    )
    print(
        f"(damage that left a valid, consistent store, so that nothing had to be refused: {stress.harmless})"
    )
    for line in led.problems + led.tracebacks:
        print("  ", line)
    if args.workdir is None and final_ok and not led.problems and not led.tracebacks:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"store and logs: {root}")
    bad = led.lost_workflows or led.lost_outputs or led.duplicates or led.tracebacks or not final_ok
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
