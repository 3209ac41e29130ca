"""The run journal: durable records of runs, their named steps and their traces, and the per-run view named
steps use.

``Journal`` is the storage interface (``SqliteJournal`` and ``PostgresJournal`` implement it).
``RunJournal`` is one run's view of a journal: it implements the DSL's
``StepJournal`` protocol, so ``RunContext(journal=run_journal)`` makes every named step durable::

    replay(path)   committed row?  -> the recorded value and state (the step does not run)
    begin(path)    a non-idempotent step: writes a 'begun' row (one transaction) before its code runs
    commit(path)   writes the 'committed' row with the JSON value and state (one transaction)
                   before the step's result is used by anything downstream

Exactly once. An idempotent step (the default) that began but did not commit is simply run again. A
step marked ``idempotent=False`` that is found 'begun' on resume may or may not have taken effect
before the crash, and nothing inside the process can tell which; it is therefore never re-run
automatically: ``begin`` refuses with a ``ResumeError`` that says how to settle it
(``resolve_step``: record the result it had, or allow one more attempt). Effects that must complete
without an operator use ``idempotency_key()``: a key stable across resumes (``run_id:path``) that the
effect's target uses to deduplicate (an ``Idempotency-Key`` header, a unique column, a marker in a
file); such a step is idempotent as a whole and is retried safely. ``bench/kill_resume.py`` uses both.

Divergence. A resumed run must reach the journaled steps in the order they were recorded. Every row
stores its *ordinal*, its position among the steps of its scope (the path up to its last ``/``); code
inside one scope runs sequentially, and parallel branches get their own scopes (``wf[0]``, ``wf[1]``).
A resumed run that reaches, as the k-th step of a scope, a different step than the journal recorded
there, or that finishes a scope without reaching a step the journal recorded in it, fails with a
``ResumeError`` naming the first divergent step. Only rows from earlier attempts are checked: a
``retry`` inside this attempt may legitimately take another route. Only recorded steps constrain a
resume, so a step that failed without recording anything may be fixed, or even renamed, before
resuming. What resume relies on: the code between named steps decides what to do from the inputs
and the steps' results only (anything read from the outside world goes through a step).

Leases. A run is executed by one holder at a time, within a process and across processes and
machines. ``claim_run`` takes the run's *lease* in the same transaction that reads the run: a random
token, the holder (host and process id) and an expiry ``lease_s`` seconds ahead. ``agentflow.run``
renews it every ``lease_s / 3`` seconds while the run is live and releases it in ``finish_run``. A
second claim of a held run is refused with a ``ResumeError`` (``agentflow.run`` with the same run id
and journal, in this process or another). A lease is *free* when it was released, when it expired
(its holder stopped renewing: killed, stopped, partitioned), or when its holder is a process on this
host that no longer exists (so a SIGKILLed run is resumed at once, not after the expiry). Every write
of an attempt is *fenced* by its token: once another holder took the run over, the old holder's writes
(a step's begin or commit, the run's end) fail with ``ResumeError`` instead of landing, and its renewal
fails too, which cancels what it still runs. Operator writes (``resolve_step``, an interrupt's answer)
carry no lease and are refused while a live holder holds the run.

Traces. Each attempt of a run stores its trace (the run's typed events, ``agentflow.dsl.Event``) with
the run, written in the transaction of ``finish_run`` as the attempt ends: completed, failed, suspended,
or cancelled (Ctrl-C; then whatever events were recorded until then). A trace is bounded: past the
journal's ``max_trace_bytes`` the events in the middle are left out, and the record says how many
(``TraceRecord.dropped``) and holds a ``trace.cut`` log event where they were. An attempt that lost its
lease, or a process that was killed, records no trace: its steps are in the journal all the same.

Redaction. Every text column written through a ``RunJournal`` or ``agentflow.run`` (step values and
states, begun rows' states, interrupt prompts, the run's inputs, result and error, traces) passes through
``agentflow.secrets.redact`` first: a value revealed by a secret never reaches the journal.
"""

from __future__ import annotations

import abc
import os
import secrets as _tokens
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agentflow.dsl import AgentflowError, Ok, State
from agentflow.errors import ConfigError, JournalError, ResumeError
from agentflow.secrets import redact

from ._serialize import decode_state, decode_value, encode_state, encode_value

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_TRACE_BYTES",
    "RUN_KEYS",
    "STEP_KEYS",
    "TRACE_KEYS",
    "Claim",
    "Journal",
    "Lease",
    "LeaseRow",
    "RunJournal",
    "RunRecord",
    "RunStatus",
    "StepRecord",
    "StepStatus",
    "TraceRecord",
    "check_trace_cap",
    "check_writer",
    "decode_row",
    "decode_steps",
    "lease_refusal",
    "lost_lease",
    "new_lease_token",
    "new_run_record",
    "redact_step",
    "scope_of",
]

DEFAULT_LEASE_S = 30.0
"""How long a run's lease lasts without renewal (renewed every third of it while the run is live)."""

DEFAULT_MAX_TRACE_BYTES = 8 * 1024 * 1024
"""Most bytes of events one attempt's stored trace holds (the rest is left out, and counted)."""

RunStatus = Literal["running", "suspended", "completed", "failed"]
StepStatus = Literal["begun", "committed", "waiting", "answered", "rerun"]


class RunRecord(BaseModel):
    """One stored run.

    Attributes:
        run_id: The run's id.
        status: ``running`` (or crashed while running), ``suspended`` (waiting at an ``interrupt``),
            ``completed`` or ``failed``.
        workflow: How to import the workflow again (``module:qualname`` or ``/path/file.py:qualname``),
            when it is an importable function.
        inputs: The workflow inputs as JSON text.
        state_type: How to import the initial state's model (``module:qualname``), if it had one.
        state: The initial state as JSON text.
        result: The final value as JSON text (completed runs).
        error: The final error message (failed and suspended runs).
        owner_host: Host of the process that last ran it (the lease holder while it runs).
        owner_pid: Process id of the process that last ran it (cleared when it ends).
        lease_expires: When the current lease expires (the journal's clock); ``None`` when no lease
            is held.
        attempts: How many times the run was started or resumed (each claim counts one).
        created_at: Unix time the run started.
        updated_at: Unix time of the last change.
    """

    model_config = ConfigDict(frozen=True)

    run_id: str
    status: RunStatus
    workflow: str | None = None
    inputs: str | None = None
    state_type: str | None = None
    state: str | None = None
    result: str | None = None
    error: str | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    lease_expires: float | None = None
    attempts: int = 1
    created_at: float
    updated_at: float


class StepRecord(BaseModel):
    """One stored named step of a run.

    Attributes:
        run_id: The run.
        path: The step path (``research/[1]/search[2]``).
        identity: The step's identity (its name) as the code gave it.
        scope: The path of the scope it ran in (``path`` up to the last ``/``).
        ordinal: Its position among the steps of its scope (0-based).
        idempotent: Whether it may be re-run after a crash.
        status: ``begun``, ``committed``, ``waiting`` (an interrupt), ``answered`` (an interrupt with an
            answer), ``rerun`` (an operator allowed one more attempt).
        value: The result (or answer) as JSON text.
        kind: How ``value`` was encoded (``typed``, or a plain-JSON kind such as ``tuple``).
        state: The state after the step, as JSON text.
        prompt: An interrupt's question.
        answer_schema: An interrupt's answer schema (JSON Schema text).
        attempts: How many times the step has begun.
        created_at: Unix time it first began.
        updated_at: Unix time of the last change.
    """

    model_config = ConfigDict(frozen=True)

    run_id: str
    path: str
    identity: str
    scope: str
    ordinal: int
    idempotent: bool = True
    status: StepStatus
    value: str | None = None
    kind: str | None = None
    state: str | None = None
    prompt: str | None = None
    answer_schema: str | None = None
    attempts: int = 1
    created_at: float
    updated_at: float


class TraceRecord(BaseModel):
    """One attempt's stored trace.

    Attributes:
        run_id: The run.
        attempt: Which attempt of the run it is (``RunRecord.attempts`` when it was claimed; 1-based).
        status: How the attempt ended (``completed``, ``failed``, ``suspended``).
        name: The workflow's (or plan's) name.
        engine: The engine's name, if the run had one.
        format: The event encoding's version (``agentflow.dsl.EVENT_FORMAT`` when written).
        events: The events, one ``event_to_json`` object per line, redacted of revealed secrets.
        count: How many events ``events`` holds.
        dropped: How many events were left out to keep the trace under the journal's byte cap (0: none).
        started: Unix time the attempt started.
        finished: Unix time it ended.
    """

    model_config = ConfigDict(frozen=True)

    run_id: str
    attempt: int
    status: RunStatus
    name: str = ""
    engine: str = ""
    format: int
    events: str
    count: int
    dropped: int = 0
    started: float
    finished: float


def scope_of(path: str) -> str:
    """The scope a step path ran in: everything before its last ``/`` (``""`` at the root)."""
    return path.rpartition("/")[0]


@dataclass(frozen=True)
class Lease:
    """The right to execute one run, held by one attempt (see "Leases" in the module docstring).

    Attributes:
        run_id: The run.
        token: A random token naming this holding; every write of the attempt is fenced by it.
        host: The holder's host name.
        pid: The holder's process id.
        expires_at: When it expires unless renewed (the journal's clock).
        lease_s: Its length in seconds (renewed every third of it).
    """

    run_id: str
    token: str
    host: str
    pid: int
    expires_at: float
    lease_s: float


@dataclass(frozen=True)
class Claim:
    """What ``Journal.claim_run`` returns.

    Attributes:
        run: The run as stored before this claim (or as created).
        steps: Its steps as stored, in the order they first began.
        created: Whether this claim created the run.
        lease: The lease this attempt now holds.
        attempt: This attempt's number (1 for the claim that created the run).
    """

    run: RunRecord
    steps: list[StepRecord]
    created: bool
    lease: Lease
    attempt: int = 1


@dataclass(frozen=True)
class LeaseRow:
    """A run's lease columns as stored, read inside the transaction that decides on them."""

    status: str
    token: str | None
    host: str | None
    pid: int | None
    expires_at: float | None


def new_lease_token() -> str:
    """A fresh, unguessable lease token."""
    return _tokens.token_hex(16)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def lease_refusal(
    run_id: str,
    row: LeaseRow,
    now: float,
    *,
    pid_alive: Callable[[int], bool] = _pid_alive,
) -> ResumeError | None:
    """Why ``row``'s lease keeps another attempt from running ``run_id`` now, or ``None`` if it is free.

    Invariant: a lease is held while its token is set, it has not expired, and its holder is not a
    process of this host that has ended (a process elsewhere can only be judged by the expiry).
    """
    if row.token is None or row.status != "running" or row.expires_at is None or row.expires_at <= now:
        return None
    host, pid = socket.gethostname(), os.getpid()
    if row.host == host and row.pid is not None and row.pid != pid and not pid_alive(row.pid):
        return None
    left = row.expires_at - now
    if row.host == host and row.pid == pid:
        return ResumeError(
            f"run {run_id!r} is already being run in this process (another agentflow.run call holds its "
            "lease); wait for that call to finish, or use another run_id"
        )
    where = (
        f"process {row.pid} on this host" if row.host == host else f"process {row.pid} on host {row.host!r}"
    )
    return ResumeError(
        f"run {run_id!r} is being run by {where} (it holds the run's lease for {left:.0f} s more and "
        "renews it while it runs); wait for it to finish, or stop that process: its lease then frees "
        "at once on this host, or expires elsewhere"
    )


class Journal(abc.ABC):
    """Durable storage of runs and steps. Implementations must make every write one transaction that is
    durable when the method returns (a crash after it returns never loses it), and decide on a run's
    lease inside the transaction that writes under it (see "Leases" in the module docstring).

    Attributes:
        lease_s: How long a lease lasts without renewal.
        max_trace_bytes: Most bytes of events one attempt's stored trace holds.
    """

    lease_s: float = DEFAULT_LEASE_S
    max_trace_bytes: int = DEFAULT_MAX_TRACE_BYTES

    @abc.abstractmethod
    async def claim_run(
        self,
        run_id: str,
        *,
        workflow: str | None,
        inputs: str | None,
        state_type: str | None = None,
        state: str | None = None,
    ) -> Claim:
        """Create the run, or take over an existing one whose lease is free (status ``running``), and
        take its lease, in one transaction; the run's ``attempts`` counts this claim.

        Raises:
            ResumeError: another live holder has the lease (``lease_refusal`` says why).
        """

    @abc.abstractmethod
    async def renew_lease(self, lease: Lease) -> Lease | None:
        """Extend ``lease`` by ``lease.lease_s`` from now; ``None`` when it is no longer held (taken over)."""

    @abc.abstractmethod
    async def put_step(self, record: StepRecord, *, lease: Lease | None = None) -> None:
        """Insert or replace one step row.

        Args:
            record: The row.
            lease: The writing attempt's lease. ``None`` for an operator's write (resolving a step,
                answering an interrupt), refused while a live holder holds the run.

        Raises:
            ResumeError: ``lease`` is no longer held (another holder took the run over), or, without a
                lease, a live holder runs the run.
        """

    @abc.abstractmethod
    async def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        lease: Lease,
        result: str | None = None,
        error: str | None = None,
        trace: TraceRecord | None = None,
    ) -> None:
        """Set a run's final (or suspended) status, store the attempt's ``trace`` (replacing one stored
        for the same attempt) and release its lease, in one transaction.

        Raises:
            ResumeError: ``lease`` is no longer held (nothing is written).
        """

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None:
        """One run, or ``None``."""

    @abc.abstractmethod
    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs, most recently updated first."""

    @abc.abstractmethod
    async def get_steps(self, run_id: str) -> list[StepRecord]:
        """A run's steps in the order they first began."""

    @abc.abstractmethod
    async def get_traces(self, run_id: str) -> list[TraceRecord]:
        """A run's stored traces, one per attempt that recorded one, oldest attempt first."""

    @abc.abstractmethod
    async def delete_runs(self, *, updated_before: float, statuses: tuple[RunStatus, ...]) -> list[str]:
        """Delete runs (with their steps and traces) last updated before ``updated_before`` whose status is one of
        ``statuses`` and whose lease is free; reclaim storage nothing references any more. Returns the
        deleted run ids."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections."""

    @property
    def location(self) -> str | None:
        """What to pass as ``--journal`` on the command line to reach this journal, if anything."""
        return None

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class RunJournal:
    """One attempt's view of a run in a ``Journal``; the ``StepJournal`` the run's named steps use.

    Built by ``agentflow.run`` after ``Journal.claim_run``. Not shared between attempts.

    Args:
        journal: The store.
        run_id: The run.
        steps: The run's rows as stored when this attempt started.
        lease: The attempt's lease (its writes are fenced by it); ``None`` only in tests of the
            replay logic on an unleased run.
    """

    def __init__(
        self, journal: Journal, run_id: str, steps: list[StepRecord], lease: Lease | None = None
    ) -> None:
        self.journal = journal
        self.run_id = run_id
        self.lease = lease
        # Rows of earlier attempts, fixed for this attempt: what divergence is checked against.
        self._earlier: dict[str, StepRecord] = {s.path: s for s in steps}
        self._slots: dict[tuple[str, int], str] = {(s.scope, s.ordinal): s.path for s in steps}
        self._by_scope: dict[str, list[StepRecord]] = {}
        for s in steps:
            self._by_scope.setdefault(s.scope, []).append(s)
        # The current row of every step (earlier attempts + writes of this attempt); replay reads it.
        self._rows: dict[str, StepRecord] = dict(self._earlier)
        # The ordinal of each step reached in this attempt, and the next ordinal of each scope.
        self._reached: dict[str, int] = {}
        self._next: dict[str, int] = {}
        # Paths reached as steps, and scopes steps were reached in, in this attempt (path collisions).
        self._step_paths: set[str] = set()
        self._scopes: set[str] = set()
        # The state each step started from, between replay and begin (stored for non-idempotent steps,
        # so an operator resolving one has the state to continue from).
        self._input_state: dict[str, State] = {}

    # -- the StepJournal protocol -----------------------------------------------------------------
    async def replay(self, path: str, identity: str, result_type: object, state: State) -> Ok[Any] | None:
        """The recorded outcome of a committed (or answered) step; ``None`` when it must run.

        Raises:
            ResumeError: the code diverged from the journal at this step, or its record no longer decodes.
        """
        self._check_unambiguous(path, identity)
        ordinal = self._reach(path)
        self._check_slot(path, identity, ordinal)
        row = self._rows.get(path)
        if row is None or row.status not in ("committed", "answered"):
            self._input_state[path] = state
            return None
        if row.value is None or row.state is None:
            missing = "value" if row.value is None else "state"
            raise JournalError(
                f"journal {self.journal.location or self.journal!r}: step row ({self.run_id!r}, {path!r}) is "
                f"{row.status} but has no {missing} (the journal was damaged or edited by hand); restore "
                f"the journal from a backup, or settle the step with `agentflow runs resolve {self.run_id} "
                f"{path} --value JSON`",
                where=path,
            )
        try:
            value = decode_value(row.value, row.kind or "typed", result_type)
        except ValidationError as exc:
            if row.status == "answered":
                await self._put(row.model_copy(update={"status": "waiting", "value": None}))
                raise ResumeError(
                    f"the answer given to the interrupt at {path!r} does not match its schema "
                    f"({_first_error(exc)}); the run is waiting again: resume it with a valid answer",
                    where=path,
                ) from exc
            raise ResumeError(
                f"the journaled result of step {path!r} no longer fits its type ({_first_error(exc)}); the "
                f"code changed since run {self.run_id!r} was journaled: restore it or start a new run",
                where=path,
            ) from exc
        try:
            restored = decode_state(row.state, state)
        except (ValidationError, TypeError) as exc:
            raise ResumeError(
                f"the journaled state after step {path!r} does not fit the run's state "
                f"{type(state).__name__} ({exc}); the code changed since run {self.run_id!r} was journaled",
                where=path,
            ) from exc
        return Ok(value, restored)

    async def begin(self, path: str, identity: str, idempotent: bool) -> AgentflowError | None:
        """Record that the step starts; refuse a non-idempotent step that may already have run."""
        row = self._rows.get(path)
        earlier = self._earlier.get(path)
        if (
            earlier is not None
            and row is earlier
            and earlier.status == "begun"
            and not (idempotent and earlier.idempotent)
        ):
            return ResumeError(
                f"step {path!r} is not idempotent and began in an earlier attempt of run {self.run_id!r} "
                "without recording a result, so it may already have taken effect; it is not re-run "
                f"automatically. Check whether it took effect, then run `agentflow runs resolve {self.run_id} "
                f"{path}{self._journal_option()} --value JSON` to record the result it had, or `... --rerun` "
                "to allow one more attempt (Python: agentflow.runtime.resolve_step); to retry such a step safely, let its "
                "effect deduplicate with idempotency_key() and leave the step idempotent",
                where=path,
            )
        now = time.time()
        ordinal = self._reached[path]
        start_state = self._input_state.pop(path, None)
        record = StepRecord(
            run_id=self.run_id,
            path=path,
            identity=identity,
            scope=scope_of(path),
            ordinal=ordinal,
            idempotent=idempotent,
            status="begun",
            state=None if idempotent else encode_state(start_state),
            attempts=(row.attempts + 1) if row is not None else 1,
            created_at=row.created_at if row is not None else now,
            updated_at=now,
        )
        if idempotent:
            # Nothing depends on an idempotent step's 'begun' mark (after a crash it simply runs
            # again), so it is written together with the result, saving one durable write per step.
            self._rows[path] = record
        else:
            await self._put(record)
        return None

    async def commit(
        self, path: str, identity: str, value: object, state: State, result_type: object
    ) -> None:
        """Record the step's result and state durably.

        Raises:
            SerializationError: the value or state cannot be journaled (the error names the bad value).
            ResumeError: the step finished without reaching a step the journal recorded inside it.
        """
        text, kind = encode_value(value, result_type)
        state_text = encode_state(state)
        self.check_scope_complete(path)
        row = self._rows[path]
        await self._put(
            row.model_copy(
                update={
                    "status": "committed",
                    "value": text,
                    "kind": kind,
                    "state": state_text,
                    "updated_at": time.time(),
                }
            )
        )

    # -- interrupts -------------------------------------------------------------------------------
    async def suspend(self, path: str, prompt: str, answer_schema: str, state: State) -> None:
        """Record that the (already begun) interrupt step at ``path`` waits for an answer."""
        row = self._rows[path]
        await self._put(
            row.model_copy(
                update={
                    "status": "waiting",
                    "prompt": prompt,
                    "answer_schema": answer_schema,
                    "state": encode_state(state),
                    "value": None,
                    "updated_at": time.time(),
                }
            )
        )

    # -- checks -----------------------------------------------------------------------------------
    def check_scope_complete(self, scope: str) -> None:
        """Raise ``ResumeError`` if an earlier attempt recorded a step in ``scope`` that this attempt
        finished the scope without reaching (called when a step commits, and for the root at the end)."""
        reached = self._next.get(scope, 0)
        missing = [s for s in self._by_scope.get(scope, ()) if s.ordinal >= reached]
        if missing:
            first = min(missing, key=lambda s: s.ordinal)
            where = repr(scope) if scope else "the workflow's top level"
            raise ResumeError(
                f"resumed code diverged from the journal at {first.path!r}: run {self.run_id!r} recorded it "
                f"as step {first.ordinal + 1} of {where}, but the code now finishes {where} after "
                f"{reached} step(s) without reaching it; the workflow's code or inputs changed. Restore "
                "them, or start a new run (a new run_id)",
                where=first.path,
            )

    def _check_unambiguous(self, path: str, identity: str) -> None:
        """Refuse a step whose path already served as a parallel branch's scope in this attempt.

        The DSL writes the n-th repeat of step ``x`` as ``x[n]`` and branch n of a ``par`` inside ``x``
        also as ``x[n]``: a repeated step after one that ran ``par`` would read its children's journal
        records from the branches. A scope is entered before any step in it, so a step path that is
        already a scope (and was not reached as a step first) can only be such a collision.
        """
        if path in self._scopes and path not in self._step_paths:
            raise ConfigError(
                f"step {identity!r} at {path!r} has the same path as a parallel branch inside an earlier "
                f"{identity!r} step, so their journal records would mix; give the repeated step its own name "
                f"(e.g. named('{identity}_2', ...) or @step(name=...))"
            )
        self._step_paths.add(path)
        self._scopes.add(scope_of(path))

    def _reach(self, path: str) -> int:
        """Give ``path`` its ordinal in its scope for this attempt.

        Invariant: code inside one scope reaches its steps one after another; reaching a step a second
        time in one attempt means its scope restarted (a ``retry``), so counting resumes after it.
        """
        scope = scope_of(path)
        seen = self._reached.get(path)
        if seen is not None:
            self._next[scope] = seen + 1
            return seen
        ordinal = self._next.get(scope, 0)
        self._next[scope] = ordinal + 1
        self._reached[path] = ordinal
        return ordinal

    def _check_slot(self, path: str, identity: str, ordinal: int) -> None:
        scope = scope_of(path)
        where = repr(scope) if scope else "the workflow's top level"
        recorded = self._slots.get((scope, ordinal))
        if recorded is not None and recorded != path:
            raise ResumeError(
                f"resumed code diverged from the journal at {path!r}: run {self.run_id!r} recorded "
                f"{recorded!r} as step {ordinal + 1} of {where}, but the code now reaches {path!r} there; "
                "the workflow's code or inputs changed. Restore them, or start a new run (a new run_id)",
                where=path,
            )
        earlier = self._earlier.get(path)
        if earlier is None:
            return
        if earlier.identity != identity:
            raise ResumeError(
                f"resumed code diverged from the journal at {path!r}: run {self.run_id!r} recorded step "
                f"{earlier.identity!r} there, the code now runs {identity!r}; restore the code or start a "
                "new run",
                where=path,
            )
        if earlier.ordinal != ordinal:
            raise ResumeError(
                f"resumed code diverged from the journal at {path!r}: run {self.run_id!r} recorded it as "
                f"step {earlier.ordinal + 1} of {where}, the code now reaches it as step {ordinal + 1}; "
                "restore the code or start a new run",
                where=path,
            )

    def _journal_option(self) -> str:
        location = self.journal.location
        return f" --journal {location}" if location else ""

    async def _put(self, record: StepRecord) -> None:
        # Secret values never reach the journal, even if a step returned one or put it in the state.
        record = redact_step(record)
        await self.journal.put_step(record, lease=self.lease)
        self._rows[record.path] = record

    def waiting(self) -> list[StepRecord]:
        """Interrupts of this run that wait for an answer."""
        return [r for r in self._rows.values() if r.status == "waiting"]


def redact_step(record: StepRecord) -> StepRecord:
    """``record`` with tainted secret values redacted from its text columns."""
    update = {
        name: redact(text)
        for name in ("value", "state", "prompt", "answer_schema")
        if isinstance(text := getattr(record, name), str)
    }
    changed = {k: v for k, v in update.items() if v != getattr(record, k)}
    return record.model_copy(update=changed) if changed else record


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    return f"{loc}: {e['msg']}" if loc else str(e["msg"])


M = TypeVar("M", bound=BaseModel)


def decode_row(model: type[M], data: dict[str, object], where: str, journal: str) -> M:
    """A stored row as ``model``; a row that does not fit names the journal, the row and the column."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        column = ".".join(str(p) for p in first["loc"]) or "?"
        raise JournalError(
            f"journal {journal!r}: {where} has {column}={data.get(column)!r}, which is not valid "
            f"({first['msg']}); the row was damaged or edited by hand: restore the journal from a backup, "
            "or fix or delete the row"
        ) from exc


def lost_lease(lease: Lease, row: LeaseRow | None) -> ResumeError:
    """The error of a write whose lease another holder took over."""
    if row is None:
        now_held = "the run was deleted"
    elif row.token is None:
        now_held = f"the run is now {row.status}"
    else:
        now_held = f"process {row.pid} on host {row.host!r} holds it now"
    return ResumeError(
        f"this attempt of run {lease.run_id!r} lost its lease ({now_held}): it did not renew the lease within "
        f"{lease.lease_s:g} s (stopped, suspended or overloaded) and another holder took the run over; "
        "nothing more is recorded by this attempt, the new holder continues the run"
    )


RUN_KEYS = tuple(RunRecord.model_fields)
"""The columns of a stored run, in ``RunRecord``'s order (what backends select)."""

STEP_KEYS = tuple(StepRecord.model_fields)
"""The columns of a stored step, in ``StepRecord``'s order (what backends select)."""

TRACE_KEYS = tuple(TraceRecord.model_fields)
"""The columns of a stored trace, in ``TraceRecord``'s order (what backends select)."""


def new_run_record(
    lease: Lease,
    *,
    workflow: str | None,
    inputs: str | None,
    state_type: str | None,
    state: str | None,
    now: float,
) -> RunRecord:
    """The record of a run a claim just created, held by ``lease``."""
    return RunRecord(
        run_id=lease.run_id,
        status="running",
        workflow=workflow,
        inputs=inputs,
        state_type=state_type,
        state=state,
        owner_host=lease.host,
        owner_pid=lease.pid,
        lease_expires=lease.expires_at,
        created_at=now,
        updated_at=now,
    )


def check_trace_cap(max_trace_bytes: int) -> int:
    """``max_trace_bytes`` if it is a usable cap on a stored trace.

    Raises:
        ConfigError: it is not a whole number of at least 1024 bytes.
    """
    if isinstance(max_trace_bytes, bool) or not isinstance(max_trace_bytes, int) or max_trace_bytes < 1024:
        raise ConfigError(
            f"max_trace_bytes must be a whole number of bytes, at least 1024, got {max_trace_bytes!r}"
        )
    return max_trace_bytes


def check_writer(run_id: str, row: LeaseRow | None, lease: Lease | None, now: Callable[[], float]) -> None:
    """Inside a write transaction, with ``row`` read there: refuse a write whose ``lease`` another holder
    took over, or an operator's write (no lease) while a live holder runs the run.

    Raises:
        ResumeError: why the write may not happen.
    """
    if lease is not None:
        if row is None or row.token != lease.token:
            raise lost_lease(lease, row)
    elif row is not None:
        refusal = lease_refusal(run_id, row, now())
        if refusal is not None:
            raise refusal


def decode_steps(rows: list[tuple[object, ...]], journal: str) -> list[StepRecord]:
    """Stored step rows (``STEP_KEYS`` with the state's JSON in place of its hash, then the hash) as
    records; a row whose state is missing or a column that does not fit is a ``JournalError``."""
    out = []
    n = len(STEP_KEYS)
    for r in rows:
        where = f"step row ({r[0]!r}, {r[1]!r})"
        if r[n] is not None and r[STEP_KEYS.index("state")] is None:
            raise JournalError(
                f"journal {journal!r}: {where} refers to state {r[n]!r}, which is not in the states table "
                "(the journal was damaged or edited by hand); restore it from a backup"
            )
        out.append(decode_row(StepRecord, dict(zip(STEP_KEYS, r[:n], strict=True)), where, journal))
    return out
