"""The Lua scripts of the Redis backend, each with a typed wrapper.

Every state transition is one script. Each is a file of ``lua/`` in this
package, run as ``prelude.lua`` (the functions they share) followed by its own
file (``EVALSHA``), or as a function of one library holding the prelude once
(``FCALL``, see ``library``) where the server has functions. Its wrapper
class here names it, builds its call from typed arguments (``call``) and
turns its reply into a typed value (``reply``), decoding it once: the
backend never reads a reply by position.

Each script works on the keys of one queue, all under the queue's prefix
``{<namespace>:q:<queue>}:`` (so they share one cluster slot), passed as
``KEYS[1]``. ``claim`` alone takes several prefixes (``KEYS[1..n]``), which the
backend only groups together when they hash to the same slot.

Keys under a queue prefix ``P`` (layout version ``LAYOUT``):

``P j:<id>``         hash, one job (fields below)
``P all``            zset, every job, score 0: ordered by id (``ZRANGEBYLEX``)
``P n``              hash, state -> how many jobs of the queue are in it
``P prios``          zset, the priorities that have queued jobs, scored by priority
``P r:<priority>``   zset, queued jobs of one priority, scored by ``scheduled_at``
``P delayed``        zset, scheduled and failed jobs, and queued jobs held until a
                     time (``hu``), scored by ``scheduled_at``
``P active``         zset, active jobs, scored by lease expiry
``P f:<state>``      zset, completed, dead or cancelled jobs, scored by ``finished_at``
                     (``prune`` by retention and by count cap, ``purge``)
``P expires``        zset, completed jobs with a result TTL, scored by expiry (``prune``)
``P keys``           hash, idempotency key -> id of the job holding it
``P wake``           list, wake-up tokens for blocked claimers (bounded)
``P paused``         string, exists while the queue is paused
``P l:<slot>``       hash, a limit counter of the queue (flow control, see the prelude)
``P h:<slot>``       zset, queued jobs set aside on a limit slot, by ``scheduled_at``
``P limits``         set, the limit slots the queue has counters for (a keyed
                     counter's key expires once idle; ``prune`` forgets its slot)
``P cb:<name>``      hash, a circuit breaker's state in the queue (see the prelude)
``P circuits``       set, the circuits the queue has state for
``P ev``             stream, the queue's job events (``HasEvents``), one entry per
                     event, written by the script that makes the change; fields
                     ``k`` kind, ``j`` job id, ``n`` name, ``at``, and as the kind
                     has them ``a`` attempt, ``w`` worker, ``e`` error (JSON),
                     ``due``, ``pr`` progress, ``pd`` detail (JSON), ``dur``
                     duration, ``by``, ``ln`` a logged line (JSON, as in ``lg``).
                     Trimmed by ``prune`` (``prune_events``), never on the hot path
``P evcut``          list, "<last id> <count>" of each trim of ``ev``, newest first
                     (at most 1000): what a reader after an older id lost
``P done``           (a pub/sub channel, not a key) notices of finished jobs that
                     someone waits for, each carrying the job (see ``notify``);
                     a bare id for a job ``remove`` deleted

A job is in exactly one state index (``r:<priority>``, ``delayed``,
``active``, ``f:<state>``; a queued job held back by its limits in ``h:<slot>``
or ``delayed``) and counted once in ``n``. The indexes are what the
scripts need to find work; ``n`` answers ``stats``, and is changed once per
state and script call (a Lua table gathers the changes), not once per job.
Listing by state reads the state's index whole and sorts it by id when it is
small (dead and cancelled jobs among many completed ones), and otherwise walks
``all`` in id order, skipping the other states.

What a job costs, in Redis commands: an enqueue one ``HSET`` of the job,
plus per call one ``ZMSCORE`` (ids known already: a replayed call), one
``ZADD`` each to ``all`` and to the set of each priority, one ``HSET`` per
hash of the id index, the count and the wake list (a single job: ``ZADD NX``
on ``all`` instead of the ``ZMSCORE``); a claim 2 per job (one ``HMGET``, one
``HSET``) plus one ``ZPOPMIN`` and one ``ZADD`` of the ``active`` set per call;
a completion 2 per job (``HMGET``, ``HSET``) plus one ``ZREM``/``ZADD`` per
call for the indexes and one ``ZADD`` of ``expires``; a notice only for a job
waited for.

Job hash fields: ``d`` the record as enqueued (MessagePack; rewritten only by
a debounced enqueue, which puts the newer record there under the job's id),
``st`` state, ``p`` priority, ``n`` name, ``m`` max attempts, ``k`` key, ``t``
result TTL, ``att`` attempts, ``sa`` scheduled_at, ``sta`` started_at, ``fin``
finished_at, ``lx`` lease expiry, ``w`` worker, ``tok`` lease token, ``c`` "1"
when cancel is requested, ``pr`` progress, ``r`` result, ``e`` errors as
comma-separated JSON objects (the backend wraps them in brackets to decode),
``kt`` the key TTL (only for a job enqueued with one: see ``holds_key``),
``wt`` "1" once ``wait_finished`` waits for the job (or from the start, when
it was stored by ``enqueue_waited``): only then does its end publish a notice.
What a job carries besides its payload (see ``_annotations``), each field
present only once used: ``pd`` the progress detail (JSON), ``mt`` the
metadata's values as the text ``list`` matches (a JSON object of strings; the
metadata itself is in ``d``), ``lg`` the lines the handler logged, each a JSON
text ended by a newline, ``lc`` how many, ``ld`` how many older ones were
dropped. They live in the job's hash, so whatever deletes or expires the job
takes them with it.
Flow control, only on a job with limits: ``lim`` its limits as the scripts
read them (``codec.gates_text``; they are in ``d`` too), ``hb`` the limit slot
a queued job is set aside on (out of its ``r:<priority>`` set, in ``h:<slot>``),
``rp`` '1' once it booked its rate token; ``hu`` and ``ho`` on a queued job
held until a time (its booked token, its circuit: ``JobRecord.held_until``
and ``hold``), which waits in ``delayed`` till then, counted as queued, and
which the promotion of due jobs puts back in its ``r:<priority>`` set.
The lease fields ``lx``, ``w`` and ``tok`` mean something only while ``st`` is
``active``: an attempt that ends leaves them behind (one command fewer a job)
and the backend reads them as absent.

Outside the queues, under the namespace's own tag ``{<namespace>}``:
``{<namespace>}:cancel``   (a pub/sub channel, not a key) the ids of active jobs
                           whose cancel was just requested (``watch_cancels``)
``{<namespace>}:workers``  hash, worker id -> its ``WorkerInfo`` (MessagePack)
``{<namespace>}:workers:seen``     zset, worker id, scored by ``last_seen`` (``TIME``)
``{<namespace>}:workers:expires``  zset, worker id, scored by when its entry goes
The three worker keys share one slot; their scripts (``workers``) delete the
expired entries on every put and list.

Floats cross the Lua boundary as strings formatted with ``%.17g``: Lua's own
number-to-string conversion keeps 14 digits, which would move timestamps.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from importlib import resources
from typing import Any, ClassVar, NamedTuple

from msgspec.structs import replace

from ..._annotations import encode_line
from ..._records import (
    CircuitState,
    JobRecord,
    JobState,
    Lease,
    LimitState,
    LogLine,
    Outcome,
    QueueStats,
)
from ...exceptions import UnknownParent
from . import codec

__all__ = [
    "BODIES",
    "LAYOUT",
    "PRELUDE",
    "SCRIPTS",
    "Beat",
    "Call",
    "Claimed",
    "Page",
    "Peeked",
    "Settled",
    "SetAside",
    "Enqueue",
    "Claim",
    "Heartbeat",
    "Progress",
    "Log",
    "Settle",
    "SettleClaim",
    "Recover",
    "Watch",
    "Cancel",
    "Get",
    "RetryDead",
    "Prune",
    "PruneEvents",
    "PruneLimits",
    "Pruned",
    "Purge",
    "Remove",
    "SetPaused",
    "Stats",
    "Peek",
    "StateIds",
    "Fetch",
    "List",
]

#: The key layout above, kept in ``{<namespace>}:layout``: a backend refuses to
#: open a namespace written with another. Version 1 (no marker) kept a set per
#: state and a finished set per terminal state; stores are not migrated.
LAYOUT = 2

#: one script call: its name, its KEYS, its ARGV
Call = tuple[str, list[str], list[Any]]

#: name -> source (``prelude.lua``, then the script's own file), filled as the
#: wrappers below are defined; and ``<name>:quiet``, the same script writing no
#: job events, for a backend made with ``events=False`` (see ``quiet``)
SCRIPTS: dict[str, str] = {}

#: name -> the script's own file (without the prelude), and whether it only
#: reads; ``library`` makes the scripts one function library of them
BODIES: dict[str, tuple[str, bool]] = {}

#: The prelude's line that turns the job events on, and its quiet form.
_EVENTS_ON = "local EV = true\n"
_EVENTS_OFF = "local EV = false\n"


#: name -> the name of its variant that writes no job events (made once, not per call)
_QUIET: dict[str, str] = {}


def quiet(call: Call) -> Call:
    """``call`` made to the script's variant that writes no job events."""
    name, keys, args = call
    return (_QUIET[name], keys, args)


_FILES = resources.files(__name__.rpartition(".")[0]) / "lua"
#: the functions every script shares (``library`` loads it once for all)
PRELUDE = (_FILES / "prelude.lua").read_text(encoding="utf-8")
_STATES = [s.value for s in JobState]


class _Script:
    """A wrapper: ``name`` is its file in ``lua/`` (without ``.lua``); ``reads``
    true for a script that never writes (its function is flagged ``no-writes``)."""

    name: ClassVar[str]

    def __init_subclass__(cls, name: str, reads: bool = False) -> None:
        cls.name = name
        body = (_FILES / f"{name}.lua").read_text(encoding="utf-8")
        BODIES[name] = (body, reads)
        # The newlines around the prelude are part of each script's text: the
        # SHA1s that EVALSHA calls the scripts by stay those of earlier versions.
        SCRIPTS[name] = f"\n{PRELUDE}\n{body}"
        _QUIET[name] = f"{name}:quiet"
        SCRIPTS[_QUIET[name]] = f"\n{PRELUDE.replace(_EVENTS_ON, _EVENTS_OFF, 1)}\n{body}"


# -- typed replies ---------------------------------------------------------------------


def _ids(raw: Any) -> list[bytes]:
    """A reply that is a list of job ids."""
    ids: list[bytes] = raw
    return ids


class Claimed(NamedTuple):
    """What a claim handed out."""

    leases: list[Lease]
    #: when the queues' earliest delayed job is due (``time.monotonic()``), if the
    #: claim came up short and there is one
    earliest: float | None
    #: claimed jobs whose record does not decode, to take aside (``SetAside``)
    spoilt: Sequence[codec.Spoilt]


class Settled(NamedTuple):
    """What ``settle_claim`` did."""

    #: 1 (applied) or 0 per outcome, in the order of the call's groups
    applied: list[int]
    claimed: Claimed


class Beat(NamedTuple):
    """A heartbeat's reply."""

    #: ids of jobs whose lease this token no longer holds
    lost: list[bytes]
    #: ids of jobs whose cancellation was asked for
    cancel: list[bytes]


class Peeked(NamedTuple):
    """Whether a queue has work, and when it will."""

    ready: bool
    #: the earliest ``scheduled_at`` among its delayed jobs (server clock), if any
    earliest: float | None
    #: the server's time
    now: float


class Page(NamedTuple):
    """One page of ``list``."""

    jobs: list[JobRecord]
    #: the last id examined ('' if none): the next page starts after it
    cursor: str
    #: whether the walk reached the end of the queue
    exhausted: bool


def _claimed(raw: list[Any], worker: str, base: str) -> Claimed:
    """A ``claim_from`` reply: {now, lease expiry, earliest or '', 6 per job}."""
    earliest = raw[2]
    # Read before the leases are: the server's "now" as a local time.
    soonest = codec.local_time(earliest, raw[0]) if earliest else None
    leases, spoilt = codec.leases(raw, worker, base)
    return Claimed(leases, soonest, spoilt)


def _record_or_none(raw: list[bytes] | None, job_id: str, queue: str) -> JobRecord | None:
    """The job, its stand-in if its hash does not decode, or ``None``."""
    return None if raw is None else codec.readable(raw, job_id, queue)


# -- the scripts -----------------------------------------------------------------------


class Enqueue(_Script, name="enqueue"):
    """Store jobs of one queue; a batch of one queue up to a chunk is atomic.

    KEYS: the queue prefix; outside a cluster also the index buckets, then the
    queue registry. ARGV (maybe packed, see ``batch_args``): n, queue, flags
    ('w' if the caller waits for the jobs: they are stored marked, see
    ``Watch``; 'f' if their ids are fresh, see ``Backend.enqueue``; 'o' if
    some job has a ``key_ttl`` or a ``debounce``; 'p' if some job has parents),
    then 11 per job: id, key, priority, scheduled_at, record, max_attempts,
    ttl, name, the KEYS position of the job's index bucket (unused in a
    cluster), the metadata as ``list`` matches it (``codec.meta_texts``) or
    '', and the limits as the scripts read them (``codec.gates_text``) or '';
    with 'o', 13: also the ``key_ttl`` (or '') and '1' for a debounced enqueue
    (or ''). With 'p', after every job's fields, 2 per job: its parents
    ('\\n'-separated) and 'run' for ``after_failure="run"`` (else '').
    """

    @staticmethod
    def call(
        prefix: str,
        jobs: Sequence[JobRecord],
        chunk: list[int],
        waited: bool,
        fresh: bool,
        bucket: Callable[[str], str] | None,
        registry: str,
    ) -> Call:
        """The jobs at positions ``chunk`` (all of one queue).

        ``bucket`` names the index hash of a job id; ``None`` on a cluster,
        whose script cannot reach those slots: the caller writes the index.
        """
        queue = jobs[chunk[0]].queue
        keys = [prefix]
        where: dict[str, int] = {}
        # Only a chunk with a key_ttl or a debounce pays for their two arguments ('o').
        extra = any(jobs[i].key_ttl is not None or jobs[i].debounce is not None for i in chunk)
        deps = any(jobs[i].parents for i in chunk)
        flags = (
            ("w" if waited else "")
            + ("f" if fresh else "")
            + ("o" if extra else "")
            + ("p" if deps else "")
        )
        args: list[Any] = [len(chunk), queue, flags]
        for i in chunk:
            job = jobs[i]
            position = 0
            if bucket is not None:
                name = bucket(job.id)
                position = where.get(name, 0)
                if not position:
                    keys.append(name)
                    position = where[name] = len(keys)
            ttl = job.result_ttl
            args += (
                job.id,
                job.key if job.key is not None else "",
                job.priority,
                # '~': asked for now (see the enqueue script)
                f"~{float(job.scheduled_at)!r}"
                if job.scheduled_at <= job.enqueued_at
                else repr(float(job.scheduled_at)),
                codec.encode(job) if job.debounce is None else codec.encode(_undebounced(job)),
                job.max_attempts,
                "" if ttl is None else repr(float(ttl)),
                job.name,
                position,
                codec.meta_texts(job.meta) if job.meta else "",
                codec.gates_text(job.limits, job.circuit)
                if job.limits or job.circuit is not None
                else "",
            )
            if extra:
                args += (
                    "" if job.key_ttl is None else repr(float(job.key_ttl)),
                    "" if job.debounce is None else "1",
                )
        if deps:
            for i in chunk:
                job = jobs[i]
                args += ("\n".join(job.parents), "run" if job.after_failure == "run" else "")
        if bucket is not None:
            keys.append(registry)
        return ("enqueue", keys, args)

    @staticmethod
    def reply(raw: Any) -> list[bytes | list[bytes]]:
        """Per job: the state it was stored in (a key of ``codec.STORED``), or the
        id of the job holding its id or key followed by that job's ``HGETALL``
        (also of a job stored ``waiting``, or ended at once by its parents).

        Raises:
            UnknownParent: a parent is not a job of the queue; nothing was stored.
        """
        items: list[bytes | list[bytes]] = raw
        if items and items[0] == b"!":
            parent, child = (item.decode() for item in items[1:3] if isinstance(item, bytes))
            raise UnknownParent(parent, child, "")
        return items


def _undebounced(job: JobRecord) -> JobRecord:
    """``job`` as stored: ``debounce`` is an instruction to the script, not kept."""
    return replace(job, debounce=None)


class Claim(_Script, name="claim"):
    """Claim up to ``limit`` ready jobs from queues of one slot, in the order given.

    KEYS: the queue prefixes. ARGV: limit, worker, lease_for, token base. The
    reply is ``claim_from``'s (``prelude.lua``).
    """

    @staticmethod
    def call(prefixes: list[str], limit: int, worker: str, lease_for: float, base: str) -> Call:
        return ("claim", prefixes, [limit, worker, repr(float(lease_for)), base])

    #: (raw reply, worker, token base) -> the leases, and when to look again
    reply = staticmethod(_claimed)


class Heartbeat(_Script, name="heartbeat"):
    """Extend leases of one queue. ARGV: lease_for, then (id, token) pairs."""

    @staticmethod
    def call(prefix: str, lease_for: float, leases: Sequence[Lease]) -> Call:
        args: list[Any] = [repr(float(lease_for))]
        for lease in leases:
            args += (lease.job.id, codec.token(lease.token))
        return ("heartbeat", [prefix], args)

    @staticmethod
    def reply(raw: Any) -> Beat:
        lost, cancel = raw
        return Beat(lost, cancel)


class Progress(_Script, name="progress"):
    """Record a leased job's progress. ARGV: id, token, progress, detail (JSON, or '')."""

    @staticmethod
    def call(prefix: str, lease: Lease, value: float, detail: bytes | None = None) -> Call:
        return (
            "progress",
            [prefix],
            [lease.job.id, codec.token(lease.token), repr(float(value)), detail or b""],
        )

    @staticmethod
    def reply(raw: Any) -> bool:
        """Whether the lease still held."""
        return bool(raw)


class Log(_Script, name="log"):
    """Append lines to a leased job's logs, keeping the last ``cap``.

    ARGV: id, token, cap, then one line each (``_annotations.encode_line``).
    """

    @staticmethod
    def call(prefix: str, lease: Lease, lines: Sequence[LogLine], cap: int) -> Call:
        encoded = [encode_line(line) for line in lines]
        return ("log", [prefix], [lease.job.id, codec.token(lease.token), cap, *encoded])

    @staticmethod
    def reply(raw: Any) -> bool:
        """Whether the lease still held."""
        return bool(raw)


class Settle(_Script, name="settle"):
    """End attempts of one queue. ARGV (maybe packed): 7 per outcome, as
    ``settle_range`` reads them."""

    @staticmethod
    def call(prefix: str, outcomes: Sequence[Outcome], indexes: list[int]) -> Call:
        """The outcomes at positions ``indexes``."""
        return ("settle", [prefix], codec.settle_args(outcomes, indexes))

    @staticmethod
    def reply(raw: Any) -> list[int]:
        """1 (applied) or 0 per outcome."""
        applied: list[int] = raw
        return applied


class SettleClaim(_Script, name="settle_claim"):
    """``Settle``, then ``Claim``, in one call (not on a cluster).

    KEYS: the prefixes of the queues settled (one group of outcomes each), then
    those to claim from. ARGV (maybe packed): limit, worker, lease_for, token
    base, number of settled queues, then for each of them: its count of
    outcomes and 7 per outcome. Reply: {1 or 0 per outcome, ``claim_from``'s}.
    """

    @staticmethod
    def call(
        prefixes: list[str],
        outcomes: Sequence[Outcome],
        groups: Collection[list[int]],
        *,
        limit: int,
        worker: str,
        lease_for: float,
        base: str,
    ) -> Call:
        """``groups``: per queue settled, the positions of its outcomes in ``outcomes``;
        ``prefixes``: those queues' prefixes, then the prefixes of the queues to claim from."""
        args: list[Any] = [max(limit, 0), worker, repr(float(lease_for)), base, len(groups)]
        for indexes in groups:
            args.append(len(indexes))
            args += codec.settle_args(outcomes, indexes)
        return ("settle_claim", prefixes, args)

    @staticmethod
    def reply(raw: Any, worker: str, base: str) -> Settled:
        applied, claimed = raw
        return Settled(applied, _claimed(claimed, worker, base))


class SetAside(_Script, name="set_aside"):
    """Take aside claimed jobs of one queue whose record does not decode: dead,
    with the ``undecodable`` error, while the claim's lease still holds them."""

    @staticmethod
    def call(prefix: str, spoilt: Sequence[codec.Spoilt]) -> Call:
        args: list[Any] = []
        for job in spoilt:
            args += (job.job_id, job.token, job.error, "1" if job.errors_unreadable else "")
        return ("set_aside", [prefix], args)

    #: The ids taken aside.
    reply = staticmethod(_ids)


class Recover(_Script, name="recover"):
    """Release up to ``batch`` lapsed leases of one queue (retry, dead or cancelled)."""

    @staticmethod
    def call(prefix: str, batch: int) -> Call:
        return ("recover", [prefix], [batch])

    @staticmethod
    def reply(raw: Any) -> int:
        """How many it released."""
        return int(raw)


class Cancel(_Script, name="cancel"):
    """Cancel a job (a leased one: ask its worker, and publish its id on
    ``channel``). ``by``: who asked, for the ``cancelled`` event. Replies the
    job after the change (``reply``: the raw reply, the job's id and queue)."""

    @staticmethod
    def call(prefix: str, job_id: str, channel: str, by: str) -> Call:
        return ("cancel", [prefix], [job_id, channel, by])

    reply = staticmethod(_record_or_none)


class Get(_Script, name="get", reads=True):
    """A job, or ``None`` when unknown or its result expired (``reply``: the raw
    reply, the job's id and queue; a hash that does not decode: its stand-in)."""

    @staticmethod
    def call(prefix: str, job_id: str) -> Call:
        return ("get", [prefix], [job_id])

    reply = staticmethod(_record_or_none)


class Watch(_Script, name="watch"):
    """Read a job as ``Get`` does, marking it as waited for (``wt``) unless finished,
    so that its end publishes a notice that carries it."""

    @staticmethod
    def call(prefix: str, job_id: str) -> Call:
        return ("watch", [prefix], [job_id])

    reply = staticmethod(_record_or_none)


class RetryDead(_Script, name="retry_dead"):
    """Put dead jobs of one queue back (unless another holds their key)."""

    @staticmethod
    def call(prefix: str, job_ids: list[str]) -> Call:
        return ("retry_dead", [prefix], job_ids)

    #: The ids put back.
    reply = staticmethod(_ids)


class Pruned(NamedTuple):
    """What one ``prune`` script call deleted, and where the next call goes on."""

    #: the ids deleted
    ids: list[bytes]
    #: the store's time the prune decides by (given to its next calls)
    now: str
    #: completed jobs with a result TTL still to come that lead the range: the
    #: next call steps over them
    skip: int
    #: whether the batch was full: call again
    more: bool


class Prune(_Script, name="prune"):
    """Delete up to ``batch`` jobs of one queue that retention says are old.

    Completed jobs whose result TTL passed, then dead and cancelled jobs that
    finished more than their retention ago, then completed jobs without a TTL
    likewise. A prune of many calls decides by the time of its first (``now``).
    """

    @staticmethod
    def call(
        prefix: str,
        batch: int,
        keep: Sequence[float | None],
        skip: int = 0,
        now: str = "",
        most: Sequence[int | None] = (None, None, None),
    ) -> Call:
        """``keep``: seconds completed, dead and cancelled jobs are kept (``None``: for ever);
        ``most``: how many of each the queue keeps at most (``None``: no cap)."""
        kept = ["" if k is None else repr(float(k)) for k in keep]
        caps = ["" if m is None else str(int(m)) for m in most]
        return ("prune", [prefix], [batch, *kept, skip, now, *caps])

    @staticmethod
    def reply(raw: Any) -> Pruned:
        now, skip, more, *ids = raw
        return Pruned(ids, now.decode(), int(skip), bool(more))


class PruneLimits(_Script, name="prune_limits"):
    """Forget the slots of one queue whose keyed counter expired as idle, a page at a time."""

    @staticmethod
    def call(prefix: str, cursor: bytes | str, count: int) -> Call:
        return ("prune_limits", [prefix], [cursor, count])

    @staticmethod
    def reply(raw: Any) -> bytes | None:
        """The cursor to go on from, ``None`` once the set was walked through."""
        cursor, _ = raw
        return None if cursor in (b"0", "0") else bytes(cursor)


class PruneEvents(_Script, name="prune_events"):
    """Trim up to ``batch`` of one queue's job events that retention says are old."""

    @staticmethod
    def call(prefix: str, batch: int, keep: float | None, most: int | None) -> Call:
        """``keep``: seconds events are kept (``None``: for ever); ``most``: at most how many."""
        return (
            "prune_events",
            [prefix],
            [batch, "" if keep is None else repr(float(keep)), "" if most is None else str(most)],
        )

    @staticmethod
    def reply(raw: Any) -> tuple[int, bool]:
        """How many were trimmed, and whether to call again."""
        return int(raw[0]), bool(raw[1])


class Purge(_Script, name="purge"):
    """Delete up to ``limit`` jobs of one queue that ended in ``states`` before
    ``older_than``."""

    @staticmethod
    def call(prefix: str, older_than: float, limit: int, states: list[str]) -> Call:
        return ("purge", [prefix], [repr(float(older_than)), limit, *states])

    #: The ids deleted.
    reply = staticmethod(_ids)


class Remove(_Script, name="remove"):
    """Delete jobs of one queue in any state but active, telling their waiters."""

    @staticmethod
    def call(prefix: str, job_ids: list[str]) -> Call:
        return ("remove", [prefix], job_ids)

    @staticmethod
    def reply(raw: Any) -> list[JobState | None]:
        """Per id: the state it was in (``active``: left as it is), ``None``: no such job."""
        return [JobState(st.decode()) if st else None for st in raw]


class SetPaused(_Script, name="set_paused"):
    """Pause a queue, or resume it (waking its claimers)."""

    @staticmethod
    def call(prefix: str, paused: bool) -> Call:
        return ("set_paused", [prefix], ["1" if paused else "0"])


class Stats(_Script, name="stats"):
    """Counts by state of one queue (promoting due jobs first), whether it is
    paused, and its oldest ready job's ``scheduled_at``."""

    @staticmethod
    def call(prefix: str) -> Call:
        return ("stats", [prefix], list(_STATES))

    @staticmethod
    def reply(raw: Any, queue: str) -> QueueStats:
        counts = {JobState(s): int(n) for s, n in zip(_STATES, raw, strict=False)}
        oldest = raw[len(_STATES) + 1]
        return QueueStats(
            queue=queue,
            counts=counts,
            paused=bool(raw[len(_STATES)]),
            oldest_ready_at=float(oldest) if oldest else None,
        )


class LimitStates(_Script, name="limit_states", reads=True):
    """The flow-control counters of one queue (``Backend.limit_states``)."""

    @staticmethod
    def call(prefix: str) -> Call:
        return ("limit_states", [prefix], [])

    @staticmethod
    def reply(raw: Any, queue: str) -> list[LimitState]:
        out = []
        for slot, flat, held in raw:
            f = codec.fields(flat)

            def number(name: bytes, f: dict[bytes, bytes] = f) -> float | None:
                value = f.get(name)
                return float(value) if value else None

            concurrency = number(b"c")
            out.append(
                LimitState(
                    slot=slot.decode(),
                    name=f.get(b"name", slot).decode(),
                    key=f[b"key"].decode() if f.get(b"key") else None,
                    concurrency=None if concurrency is None else int(concurrency),
                    rate=number(b"r"),
                    per=number(b"per") or 1.0,
                    burst=number(b"b") or 1.0,
                    running=int(f.get(b"run", 0)),
                    tokens=number(b"tok") or 0.0,
                    refilled_at=number(b"at") or 0.0,
                    held=int(held),
                    queue=queue,
                )
            )
        return out


class Circuits(_Script, name="circuits"):
    """The circuits of one queue; an operator's open or close of one first."""

    @staticmethod
    def call(prefix: str, name: str | None = None, open_: bool = False) -> Call:
        args: list[Any] = [] if name is None else [name, "1" if open_ else "0"]
        return ("circuits", [prefix], args)

    @staticmethod
    def reply(raw: Any, queue: str) -> list[CircuitState]:
        out = []
        for name, flat in raw:
            f = codec.fields(flat)
            opened = f.get(b"oa")
            probe = f.get(b"pb")
            out.append(
                CircuitState(
                    name=name.decode(),
                    state=f.get(b"st", b"closed").decode(),
                    failures=tuple(float(t) for t in f.get(b"fl", b"").split(b",") if t),
                    opened_at=float(opened) if opened else None,
                    probe=probe.decode() if probe else None,
                    threshold=int(f.get(b"n", b"5")),
                    within=float(f.get(b"w", b"60")),
                    reset_after=float(f.get(b"r", b"30")),
                    queue=queue,
                )
            )
        return out


class Peek(_Script, name="peek"):
    """Whether a queue has ready work, and when its next delayed job is due.

    When nothing is ready, it drops the wake tokens left over: they are stale,
    and would spare the next blocked claimer nothing but empty wake-ups.
    """

    @staticmethod
    def call(prefix: str) -> Call:
        return ("peek", [prefix], [])

    @staticmethod
    def reply(raw: Any) -> Peeked:
        ready, earliest, now = raw
        return Peeked(bool(int(ready)), float(earliest) if earliest else None, float(now))


class StateIds(_Script, name="state_ids", reads=True):
    """The ids in the indexes of one state (scheduled and failed share one; queued
    jobs are in their ready sets, or held back on a limit or until a time)."""

    @staticmethod
    def call(prefix: str, state: JobState, most: int) -> Call:
        return ("state_ids", [prefix], [state.value, most])

    @staticmethod
    def reply(raw: Any) -> list[bytes] | None:
        """The ids, in no order; ``None`` when the index holds more than ``most``."""
        ids: list[bytes] | None = raw
        return ids


class Fetch(_Script, name="fetch", reads=True):
    """The jobs among ``job_ids`` in ``state`` and named ``name`` (either
    ``None``: any), leaving out expired results."""

    @staticmethod
    def call(prefix: str, state: JobState | None, name: str | None, job_ids: list[bytes]) -> Call:
        return ("fetch", [prefix], [state.value if state else "", name or "", *job_ids])

    @staticmethod
    def reply(raw: Any, queue: str) -> list[JobRecord]:
        """The jobs (id, then ``HGETALL``, each; stand-ins for those that do not decode)."""
        return codec.records(raw, queue)


class List(_Script, name="list", reads=True):
    """Up to ``limit`` jobs of one queue in id order after ``after``, in ``state``
    and named ``name`` (either ``None``: any), with each pair of ``meta`` in
    their metadata, examining at most ``budget`` ids."""

    @staticmethod
    def call(
        prefix: str,
        state: JobState | None,
        name: str | None,
        after: str,
        limit: int,
        budget: int,
        newest: bool = False,
        meta: Mapping[str, str] | None = None,
    ) -> Call:
        """``newest``: by id descending, ``after`` then meaning below it."""
        pairs = [part for pair in (meta or {}).items() for part in pair]
        args = [
            state.value if state else "",
            name or "",
            after,
            limit,
            budget,
            "1" if newest else "",
            *pairs,
        ]
        return ("list", [prefix], args)

    @staticmethod
    def reply(raw: Any, queue: str) -> Page:
        jobs, cursor, exhausted = raw
        return Page(codec.records(jobs, queue), cursor.decode(), bool(int(exhausted)))
