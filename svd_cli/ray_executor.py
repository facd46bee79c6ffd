"""Making a batch's videos on Ray: one actor per GPU (or N CPU actors), each loading the model once.

The driver (the `svd animate` process) plans the batch and makes the resume decisions as always; this
executor only makes the videos that are left. Each actor builds its own `Session` from the same request
and runs the same `batch.run_one` -> `make_video` as a single process, so a video made here is the same
file, with the same sidecar and the same atomic temp-then-rename, as one made without Ray. Outputs are
written by the actor that made them, so the output folder must be on a filesystem every node shares (at
the same path as on the driver).

The driver keeps one job in flight per actor and hands out the next as soon as one comes back, so a fast
worker is never idle behind a slow one, and reports results in the order they finish. Faults:

- an actor that dies (its process killed, its node lost) is restarted by Ray (`max_restarts`). A failed
  call alone does not say whether the worker died: Ray also refuses calls while it restarts one, and a lost
  link fails a call of a live one. So the driver asks the worker for its pid until it answers: a new pid is
  one death (one line), the video goes to another worker (or to the restarted one, if it is the only one),
  and the restarted worker gets work again. A worker Ray will not restart any more is dropped; the run ends
  only when none is left. A video whose worker died `MAX_ATTEMPTS` times fails with a line;
- an input that fails by itself (a broken image) is a failed result, reported once and not retried;
- Ctrl-C on the driver asks the actors to stop at their next step (they remove their temporary files),
  kills them after a grace period, removes any temporary file left by a killed one, and stops a local
  Ray instance: nothing half-written stays, and a rerun makes what is missing.

Ray is an optional dependency: nothing here imports it until a run asks for it.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .batch import FileHashes, JobResult, Maker, Summary, run_one
from .errors import ANSI_CODE, SvdError, first_line, ref
from .io.safety import remove_dead_claim, remove_dead_partials
from .jobs import Job
from .progress import Progress
from .session import Session

INSTALL = 'pip install "svd-cli[ray]"'
MAX_RESTARTS = 3  # Ray restarts a dead actor this many times (then the driver stops using it)
MAX_ATTEMPTS = 3  # a video whose worker died this many times while making it fails
STOP_GRACE = 10.0  # seconds the actors get to stop cleanly after Ctrl-C before they are killed
WAIT_TICK = 1.0  # seconds between checks of the queue (and of Ctrl-C) while videos are in flight
PING_PAUSE = 0.5  # seconds between two pings of a worker that Ray is restarting
RESTART_WAIT = 120.0  # seconds a worker whose call failed gets to answer again before it is dropped


class RayUnavailableError(SvdError):
    """Ray is not installed, or its cluster cannot be reached or cannot host the workers."""


def import_ray(local: bool = False):
    """Ray, configured to send nothing anywhere (no usage statistics), or one line saying how to install it.

    `local`: this process will start a single-machine instance: every Ray process then listens on the loopback
    address only (Ray's single-node mode, read when Ray is imported; otherwise a Linux node advertises the
    address of its network interface).
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if local:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if "RAY_AUTH_MODE" not in os.environ:
            # Ray protects a new instance with a token; one made for this run, handed to our own processes
            # through the environment, instead of one Ray would save under ~/.ray for good.
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            f"{ref('ray')}: Ray is not installed in this environment; install it with: {INSTALL}"
        ) from None
    return ray


# --- the worker (a Ray actor) ------------------------------------------------------------------------------


class _Stop(BaseException):
    """Raised inside a worker's video when the driver asked it to stop (unwinds like Ctrl-C would)."""


class _WorkerProgress(Progress):
    """Collects a worker's notes for the driver to print, and stops the video in progress when asked to."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.stopping = False

    def note(self, message: str) -> None:
        self.notes.append(message)

    def start(self, stage: str, total: int | None = None) -> None:
        if self.stopping:
            raise _Stop

    def advance(self, amount: int = 1) -> None:
        if self.stopping:
            raise _Stop

    def take(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes


class VideoWorker:
    """One Ray actor: a `Session` (so one model load) that makes job after job.

    Runs with two threads of its own (`max_concurrency=2`) so that `stop` is heard while `make` computes.
    """

    def __init__(self, request, cwd: str, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)

        self.where = {"node": socket.gethostname(), "pid": os.getpid()}
        self.missing_cwd = None
        try:
            os.chdir(cwd)  # inputs and outputs may be relative to the driver's working folder
        except OSError:
            self.missing_cwd = cwd
        self.progress = _WorkerProgress()
        self.session = Session(request, self.progress)
        self.hashes = FileHashes()

    def stop(self) -> None:
        self.progress.stopping = True

    def ping(self) -> dict:
        """{"node", "pid"}: a cheap call that tells a restarted worker (a new pid) from one that lived on."""
        return self.where

    def make(self, job: Job, reraise_unexpected: bool = False, make: Maker | None = None) -> dict:
        """One video: {"result": JobResult} or {"fatal": (exit code, message)} or {"stopped": True}, and notes.
        `make`: how a job becomes a video (`batch.run_one`, svd animate's, unless given)."""
        outcome: dict = {"where": self.where}
        try:
            if self.missing_cwd is not None:
                raise SvdError(
                    f"the working folder {self.missing_cwd} does not exist on the Ray node {self.where['node']}: "
                    "svd on a cluster needs the inputs and outputs on a filesystem every node mounts at the same "
                    "path"
                )
            if self.session.source is None:
                self.session.resolve()
            outcome["result"] = (make or run_one)(self.session, job, self.hashes, reraise_unexpected)
        except _Stop:
            outcome["stopped"] = True
        except SvdError as exc:  # one that dooms every job (the model cannot be loaded): the run ends
            outcome["fatal"] = (exc.exit_code, exc.marked())
        outcome["notes"] = self.progress.take()
        return outcome


# --- the driver side ---------------------------------------------------------------------------------------


class _RayMessages(io.TextIOBase):
    """Where the driver's Ray prints its own messages while the workers run (it prints on `sys.stdout`).

    A dead worker makes Ray print some 900 characters with colour codes; svd says the same in one line of its
    own, so Ray's are kept only under --debug, on stderr (stdout carries only data), in colour only on a
    terminal.
    """

    def __init__(self, debug: bool) -> None:
        self.debug = debug

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.debug:
            sys.stderr.write(text if sys.stderr.isatty() else ANSI_CODE.sub("", text))
        return len(text)

    def flush(self) -> None:
        if self.debug:
            sys.stderr.flush()


@dataclass
class _Slot:
    """One actor as the driver sees it."""

    id: str
    actor: object
    pid: int | None = None  # of its process, from its last answer (None until the first one)
    lost: Job | None = None  # the video of a failed call, held until the worker answers or is dropped
    why: str = ""  # the failed call's reason, first line
    lost_at: float = 0.0  # when that call failed
    ping_at: float = 0.0  # when to ping it next


class _Queue:
    """The driver's side of a batch on Ray: the videos waiting, in flight or held for a worker that failed,
    and what to do on each event (a result, a failed call, the answer to a ping)."""

    def __init__(self, ray, progress, todo: list[Job], summary: Summary, on_result, reraise_unexpected: bool,
                 make: Maker | None):  # fmt: skip
        self.ray, self.progress, self.make = ray, progress, make
        self.total = len(todo)
        self.summary, self.on_result, self.reraise_unexpected = summary, on_result, reraise_unexpected
        self.pending: deque[Job] = deque(todo)
        self.attempts: dict[int, int] = {}
        self.avoid: dict[int, str] = {}  # job index -> the worker it died on (retried on another if there is one)
        self.inflight: dict = {}  # ObjectRef of a `make` call -> (slot, job)
        self.pings: dict = {}  # ObjectRef of a `ping` call -> the slot whose call failed
        self.lost_outputs: set[Path] = set()  # outputs whose worker died: a dead process's lock may be left there
        self.started = time.monotonic()
        self.finished = 0
        self.slots: list[_Slot] = []
        self.busy: set[str] = set()  # ids of the slots with a `make` call in flight

    # --- the loop ---

    def run_to_end(self) -> None:
        """Hand out videos and take their results until every video is made, failed, or has no worker left."""
        while self.pending or self.inflight or self._holding():
            self.hand_out()
            wait = self.ping_due()
            if not self.inflight and not self.pings:
                if not self._holding():
                    missing = len(self.pending)
                    raise RayUnavailableError(
                        f"Every Ray worker died; {missing} video{'s were' if missing > 1 else ' was'} not made. "
                        "Run the same command again to make them."
                    )
                time.sleep(wait)  # only workers being restarted, and their next ping is not due yet
                continue
            ready, _ = self.ray.wait([*self.inflight, *self.pings], num_returns=1, timeout=wait)
            outcomes = self._collect(ready)
            self.hand_out()  # the workers go on while the driver reports
            for slot, outcome, job in outcomes:
                self.take(slot, outcome, job)

    def _holding(self) -> bool:
        """Whether a video is held for a worker whose call failed."""
        return any(slot.lost is not None for slot in self.slots)

    def _collect(self, ready: list) -> list[tuple[_Slot, dict, Job]]:
        """The outcomes of the finished `make` calls among `ready` (pings answered on the way)."""
        ray, outcomes = self.ray, []
        for ref_ in ready:
            if ref_ in self.pings:
                self.answered(self.pings.pop(ref_), ref_)
                continue
            slot, job = self.inflight.pop(ref_)
            self.busy.discard(slot.id)
            try:
                outcome = ray.get(ref_)
            except ray.exceptions.RayActorError as exc:
                self.call_failed(slot, job, exc)
                continue
            except ray.exceptions.RayTaskError as exc:  # a bug's traceback, in debug mode
                raise exc.as_instanceof_cause() from None
            slot.pid = outcome["where"]["pid"]
            outcomes.append((slot, outcome, job))
        return outcomes

    def hand_out(self) -> None:
        """Give each idle worker its next video."""
        for slot in list(self.slots):
            if slot.id in self.busy or slot.lost is not None or not self.pending:
                continue
            job = self.next_job(slot)
            if job is not None:
                self.inflight[slot.actor.make.remote(job, self.reraise_unexpected, self.make)] = (slot, job)
                self.busy.add(slot.id)

    def next_job(self, slot: _Slot) -> Job | None:
        # A video whose worker died goes to another one, unless every other one is being asked after too.
        others = any(s is not slot and s.lost is None for s in self.slots)
        for i, job in enumerate(self.pending):
            if self.avoid.get(job.index) != slot.id or not others:
                del self.pending[i]
                return job
            if i > 2 * len(self.slots):  # only retried jobs are avoided; they wait at the front
                break
        return None

    # --- results ---

    def report(self, result: JobResult) -> None:
        self.finished += 1
        self.summary.results.append(result)
        self.on_result(result)
        self.progress.overall(self.finished, self.total, time.monotonic() - self.started)

    def take(self, slot: _Slot, outcome: dict, job: Job) -> None:
        for note in outcome.get("notes", []):
            self.progress.note(f"{slot.id}: {note}")
        if "fatal" in outcome:
            code, message = outcome["fatal"]
            error = SvdError(message)
            error.exit_code = code
            raise error
        if "result" in outcome:
            result: JobResult = outcome["result"]
            result.job = job  # the driver's own job (the worker's is a copy)
            result.worker = {"id": slot.id, **outcome["where"]}
            if result.status == "ok":
                self.summary.workers[slot.id] = self.summary.workers.get(slot.id, 0) + 1
            self.report(result)

    # --- failed calls ---

    def call_failed(self, slot: _Slot, job: Job, exc: Exception) -> None:
        """The worker died, or Ray is restarting it, or the link to it broke: hold the video, ask the worker."""
        now = time.monotonic()
        slot.lost, slot.why, slot.lost_at, slot.ping_at = job, first_line(exc, type(exc).__name__), now, now
        self.lost_outputs.add(Path(job.output))

    def again(self, slot: _Slot, job: Job, what: str) -> None:
        """Queue `job` again after its call on `slot` failed (`what` happened), or fail it after the last try."""
        self.attempts[job.index] = self.attempts.get(job.index, 0) + 1
        if self.attempts[job.index] >= MAX_ATTEMPTS:
            self.progress.note(f"Ray worker {slot.id} {what}")
            reason = f"{job.input}: the Ray worker making it died {self.attempts[job.index]} times (last: {slot.why})"
            self.report(JobResult(job, "failed", reason=reason))
            return
        self.summary.retried += 1
        self.avoid[job.index] = slot.id
        self.pending.appendleft(job)
        self.progress.note(f"Ray worker {slot.id} {what}; the video is made again")

    def drop(self, slot: _Slot, why: str) -> None:
        """Stop using `slot` (Ray will not restart it, or it never came back) and queue its video again."""
        self.slots.remove(slot)
        with contextlib.suppress(Exception):  # one that would come back late must not make videos unasked
            self.ray.kill(slot.actor, no_restart=True)
        job, slot.lost = slot.lost, None
        left = f"{len(self.slots)} worker{'s' * (len(self.slots) != 1)} left"
        self.again(slot, job, f"died while making {job.output} and {why} ({left})")

    def answered(self, slot: _Slot, ref_) -> None:
        """The outcome of a ping of `slot`, whose last call failed."""
        ray = self.ray
        try:
            where = ray.get(ref_)
        except ray.exceptions.ActorUnavailableError:  # Ray is still restarting it: ask again shortly
            slot.ping_at = time.monotonic() + PING_PAUSE
            return
        except ray.exceptions.RayActorError:  # its restarts are used up (or its node is gone for good)
            self.drop(slot, "Ray will not restart it again")
            return
        job, slot.lost = slot.lost, None
        if where["pid"] == slot.pid:  # it lived on: only the call was lost (a broken link)
            self.again(slot, job, f"did not answer while making {job.output} ({slot.why})")
            return
        was = f" (pid {slot.pid})" if slot.pid else ""
        slot.pid = where["pid"]
        self.again(slot, job, f"died while making {job.output}{was}; Ray restarted it (pid {slot.pid})")

    def ping_due(self) -> float:
        """Ping the workers whose call failed and whose pause is over; return the seconds to the next ping."""
        now, wait = time.monotonic(), WAIT_TICK
        asked = set(map(id, self.pings.values()))
        for slot in [s for s in self.slots if s.lost is not None]:
            if now - slot.lost_at > RESTART_WAIT:
                for ref_ in [r for r, s in self.pings.items() if s is slot]:
                    del self.pings[ref_]
                self.drop(slot, f"did not answer for {RESTART_WAIT:.0f} s")
            elif id(slot) not in asked:
                if slot.ping_at <= now:
                    self.pings[slot.actor.ping.remote()] = slot
                else:
                    wait = min(wait, slot.ping_at - now)
        return wait


class RayExecutor:
    """Makes the videos on Ray workers; the same interface as `batch.LocalExecutor`.

    `address`: None starts a local Ray instance for this run (stopped at the end), else the address of a
    running cluster (`auto`, `HOST:PORT`, `ray://HOST:10001`). `workers`: how many actors; by default one
    per GPU of the cluster, or one CPU worker if it has none. `threads`: torch threads of each CPU worker
    (by default its share of the cores of a local instance, 1 on a cluster); results on the CPU are
    bit-identical to a single process only with the same number of threads.
    """

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        debug: bool = False,
        threads: int | None = None,
        address_origin: str | None = None,
    ):
        self.address = address
        self.address_origin = address_origin  # where the address was set, when not by the caller (a file, a variable)
        self.workers = workers
        self.threads = threads  # torch threads per CPU worker; None: its share of a local machine's cores
        self.debug = debug
        self.ray = import_ray(local=address is None)
        self.started_local = False

    # --- 1. Ray and the actors ------------------------------------------------------------------------

    def _check_answers(self, timeout: float = 10.0) -> None:
        """Refuse a HOST:PORT where nothing answers, in seconds: Ray itself retries for minutes before it gives up."""
        target = self.address.split("://", 1)[-1]
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():  # "auto", or a form Ray checks itself
            return
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except OSError as exc:
            why = exc.strerror or f"no answer within {timeout:g} s"
            where = f" (set by {self.address_origin})" if self.address_origin else ""
            raise RayUnavailableError(
                f"{ref('ray_address')} {self.address}{where}: nothing answers there ({why}); start a Ray head "
                "node on that machine, or correct the address.",
                option="ray_address",
            ) from None

    def _connect(self, device: str) -> tuple[int, dict, int | None]:
        """Start or join Ray; return how many workers to run, the Ray resources of each, its torch threads."""
        import logging

        ray = self.ray
        keep_sigterm = signal.getsignal(signal.SIGTERM)  # ray.init installs its own SIGTERM handler
        common = {"logging_level": logging.ERROR, "log_to_driver": self.debug, "include_dashboard": False}
        if self.address is not None:
            self._check_answers()
        try:
            if self.address is None:
                cpus = os.cpu_count() or 1
                # "local" always starts a new instance (None would join one found on the machine), bound to
                # the loopback address only.
                ray.init(address="local", num_cpus=max(cpus, self.workers or 1), _node_ip_address="127.0.0.1",
                         **common)  # fmt: skip
                self.started_local = True
            else:
                ray.init(address=self.address, **common)
        except Exception as exc:  # ConnectionError, ValueError (a bad address), RuntimeError
            where = "start a local Ray instance" if self.address is None else f"join the Ray cluster at {self.address}"
            raise RayUnavailableError(f"Could not {where}: {first_line(exc, type(exc).__name__)}") from None
        finally:
            if keep_sigterm is not None:
                signal.signal(signal.SIGTERM, keep_sigterm)

        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if device == "cuda" and not gpus:
            raise RayUnavailableError(f"{ref('device')} cuda: the Ray cluster has no GPU.")
        if gpus and device in ("auto", "cuda"):
            workers = self.workers or gpus
            if workers > gpus:
                raise RayUnavailableError(
                    f"{ref('workers')} {workers}: the Ray cluster has {gpus} GPU{'s' * (gpus > 1)} and each worker "
                    "takes one."
                )
            return workers, {"num_gpus": 1, "num_cpus": 1}, None
        workers = self.workers or 1
        if workers > max(cpus, 1):
            raise RayUnavailableError(
                f"{ref('workers')} {workers}: the Ray cluster has {cpus} CPUs and each CPU worker takes one."
            )
        # CPU workers share the machine: each gets its share of the cores as torch threads (1 per worker here
        # when there are as many workers as cores). A local instance knows its cores; on a cluster, one each.
        threads = self.threads or (max(1, (os.cpu_count() or 1) // workers) if self.started_local else 1)
        return workers, {"num_cpus": min(threads, max(cpus // workers, 1))}, threads

    def _start_workers(self, session) -> list[_Slot]:
        req = session.request
        count, resources, threads = self._connect(req.device)
        remote = self.ray.remote(VideoWorker).options(
            max_restarts=MAX_RESTARTS, max_task_retries=0, max_concurrency=2, **resources
        )
        return [_Slot(f"w{i + 1}", remote.remote(req, os.getcwd(), threads)) for i in range(count)]

    # --- 2. the queue ---------------------------------------------------------------------------------

    def run(self, session, todo: list[Job], **kw) -> None:
        """Make `todo` on the workers, reporting each result through `on_result` as it finishes."""
        with contextlib.redirect_stdout(_RayMessages(self.debug)):
            self._run(session, todo, **kw)

    def _run(
        self,
        session,
        todo: list[Job],
        *,
        total: int,
        summary: Summary,
        on_result: Callable[[JobResult], None],
        sha256=None,
        reraise_unexpected: bool = False,
        make: Maker | None = None,
    ) -> None:
        progress = session.progress
        summary.workers = {}
        queue = _Queue(self.ray, progress, todo, summary, on_result, reraise_unexpected, make)
        try:
            queue.slots = self._start_workers(session)
            summary.workers = {slot.id: 0 for slot in queue.slots}
            progress.note(f"Ray: {len(queue.slots)} worker{'s' * (len(queue.slots) > 1)} for {len(todo)} videos")
            progress.overall(0, len(todo), 0.0)
            queue.run_to_end()
        except BaseException:
            self._stop(queue.slots, queue.inflight, queue.take)
            raise
        finally:
            unfinished = [Path(job.output) for _, job in queue.inflight.values()]
            unfinished += [Path(slot.lost.output) for slot in queue.slots if slot.lost is not None]
            self._shutdown(queue.slots, unfinished, queue.lost_outputs)

    # --- 3. stopping ----------------------------------------------------------------------------------

    def _stop(self, slots: list[_Slot], inflight: dict, take) -> None:
        """Ask every worker to stop at its next step and collect what still finishes, for a short while."""
        ray = self.ray
        for slot in slots:
            with contextlib.suppress(Exception):  # a dead actor needs no stopping
                slot.actor.stop.remote()
        deadline = time.monotonic() + STOP_GRACE
        while inflight and time.monotonic() < deadline:
            ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=deadline - time.monotonic())
            for ref_ in ready:
                slot, job = inflight.pop(ref_)
                with contextlib.suppress(Exception):  # stopped, died or failed: nothing more to report
                    take(slot, ray.get(ref_), job)  # a video that was finished is reported, not lost
            if not ready:
                break

    def _shutdown(self, slots: list[_Slot], unfinished: list[Path], lost: set[Path]) -> None:
        """Kill the actors and leave Ray, then clean up after dead workers.

        `unfinished`: outputs still being made; `lost`: outputs whose worker died while making them (made
        again since, or not). A killed worker cannot remove its temporary files or its lock; whichever of
        those belongs to a process that is gone is removed (never a live process's, another run's).
        """
        ray = self.ray
        if not ray.is_initialized():
            return
        for slot in slots:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(slot.actor, no_restart=True)
        # A local instance stops, its worker processes with it; a cluster is left, our actors (owned by this
        # driver) going with us.
        ray.shutdown()
        time.sleep(0.2)
        for output in {*unfinished, *lost}:
            remove_dead_partials(output)
            remove_dead_claim(output)
