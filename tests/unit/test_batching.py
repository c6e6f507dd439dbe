"""CommitBatcher: when the lake commits, and that nothing is lost, doubled or reordered."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from eddyline.streams.worker.batching import CommitBatcher, FlushPolicy

POLICY = FlushPolicy(max_messages=4, max_rows=1_000, max_wait_s=1.0, idle_s=0.2, idle_min_rows=50)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _noop(batch: list[str]) -> None:
    return None


def _batcher(clock: Clock, policy: FlushPolicy = POLICY) -> CommitBatcher[str]:
    return CommitBatcher(_noop, policy, clock=clock)


# -- when a batch is due (the decision alone, on a hand-moved clock) -----------------------


def test_nothing_pending_is_never_due() -> None:
    assert _batcher(Clock())._due_in() == float("inf")


def test_a_full_batch_is_due_at_once() -> None:
    clock = Clock()
    by_count, by_rows = _batcher(clock), _batcher(clock)

    async def fill() -> None:
        for i in range(3):
            await by_count.add(f"e{i}", rows=1)
        await by_rows.add("big", rows=999)

    asyncio.run(fill())
    assert by_count._due_in() > 0 and by_rows._due_in() > 0
    asyncio.run(by_count.add("e3", rows=1))  # the 4th envelope
    asyncio.run(by_rows.add("one more row", rows=1))  # the 1,000th row
    assert by_count._due_in() == 0 and by_rows._due_in() == 0


def test_a_trickle_waits_for_the_age_bound_from_its_oldest_envelope() -> None:
    clock = Clock()
    batcher = _batcher(clock)
    asyncio.run(batcher.add("a", rows=10))  # under idle_min_rows: the quiet rule is off
    clock.now += 0.7
    asyncio.run(batcher.add("b", rows=10))
    assert batcher._due_in() == pytest.approx(0.3)  # 1.0 s after "a", not after "b"
    clock.now += 0.3
    assert batcher._due_in() == 0


def test_a_sizable_batch_goes_once_the_input_is_quiet() -> None:
    clock = Clock()
    batcher = _batcher(clock)
    asyncio.run(batcher.add("a", rows=40))
    clock.now += 0.1
    asyncio.run(batcher.add("b", rows=40))  # 80 rows >= idle_min_rows
    assert batcher._due_in() == pytest.approx(0.2)  # quiet for idle_s after "b"
    clock.now += 0.15
    asyncio.run(batcher.add("c", rows=1))  # still arriving: the quiet clock restarts
    assert batcher._due_in() == pytest.approx(0.2)
    clock.now += 0.2
    assert batcher._due_in() == 0


def test_the_quiet_rule_can_be_turned_off() -> None:
    clock = Clock()
    batcher = _batcher(clock, replace(POLICY, idle_s=0.0))
    asyncio.run(batcher.add("a", rows=500))
    clock.now += 0.5
    assert batcher._due_in() == pytest.approx(0.5)  # only the age bound


# -- the run loop, with real commits ------------------------------------------------------


def test_envelopes_gather_while_a_commit_runs_and_go_in_order_exactly_once() -> None:
    policy = replace(POLICY, max_messages=3, max_rows=10**6, max_wait_s=0.05, idle_s=0.0)

    async def scenario() -> list[list[int]]:
        commits: list[list[int]] = []
        release = asyncio.Event()

        async def commit(batch: list[int]) -> None:
            commits.append(batch)
            if len(commits) == 1:
                await release.wait()  # a slow first commit

        batcher: CommitBatcher[int] = CommitBatcher(commit, policy)
        runner = asyncio.ensure_future(batcher.run())
        for i in range(3):
            await batcher.add(i, rows=1)
        await asyncio.sleep(0.01)
        assert commits == [[0, 1, 2]]
        for i in range(3, 8):  # arrive during the first commit (up to twice the limit)
            await batcher.add(i, rows=1)
        assert batcher.pending == 5 and len(commits) == 1
        release.set()
        await asyncio.sleep(0.2)  # the rest is due (full, then by age)
        runner.cancel()
        return commits

    commits = asyncio.run(scenario())
    assert commits[0] == [0, 1, 2]
    assert commits[1] == [3, 4, 5, 6, 7]  # all that gathered, in one commit
    assert [i for batch in commits for i in batch] == list(range(8))


def test_add_waits_while_twice_the_limit_is_pending() -> None:
    policy = replace(POLICY, max_messages=2, max_rows=10**6, max_wait_s=0.01, idle_s=0.0)

    async def scenario() -> tuple[int, bool, list[list[int]]]:
        commits: list[list[int]] = []
        release = asyncio.Event()

        async def commit(batch: list[int]) -> None:
            commits.append(batch)
            await release.wait()

        batcher: CommitBatcher[int] = CommitBatcher(commit, policy)
        runner = asyncio.ensure_future(batcher.run())
        await batcher.add(0, rows=1)
        await batcher.add(1, rows=1)
        await asyncio.sleep(0.01)  # [0, 1] is committing, and hangs
        for i in (2, 3, 4, 5):
            await batcher.add(i, rows=1)
        blocked = asyncio.ensure_future(batcher.add(6, rows=1))
        await asyncio.sleep(0.05)
        waited = not blocked.done()  # four pending (twice the limit): the fifth waits
        release.set()
        await asyncio.sleep(0.05)
        await blocked
        await asyncio.sleep(0.05)
        runner.cancel()
        return batcher.pending, waited, commits

    pending, waited, commits = asyncio.run(scenario())
    assert waited
    assert [i for batch in commits for i in batch] == list(range(7)) and pending == 0


def test_a_failing_commit_stops_the_loop_with_its_error() -> None:
    async def scenario() -> BaseException | None:
        async def commit(batch: list[int]) -> None:
            raise OSError("disk full")

        batcher: CommitBatcher[int] = CommitBatcher(commit, replace(POLICY, max_messages=1))
        runner = asyncio.ensure_future(batcher.run())
        await batcher.add(1, rows=1)
        await asyncio.wait([runner], timeout=1.0)
        return runner.exception() if runner.done() else None

    assert isinstance(asyncio.run(scenario()), OSError)  # the agent re-raises it: no drop


def test_close_commits_what_is_pending_after_the_commit_in_flight_then_run_returns() -> None:
    policy = replace(POLICY, max_messages=2, max_rows=10**6, max_wait_s=60.0, idle_s=0.0)

    async def scenario() -> tuple[list[list[int]], bool]:
        commits: list[list[int]] = []
        release = asyncio.Event()

        async def commit(batch: list[int]) -> None:
            commits.append(batch)
            if len(commits) == 1:
                await release.wait()

        batcher: CommitBatcher[int] = CommitBatcher(commit, policy)
        runner = asyncio.ensure_future(batcher.run())
        await batcher.add(0, rows=1)
        await batcher.add(1, rows=1)  # due: committing, and hangs
        await asyncio.sleep(0.01)
        await batcher.add(2, rows=1)  # would wait a minute for its age bound
        batcher.close()
        await asyncio.sleep(0.01)
        in_order = commits == [[0, 1]]  # nothing overtakes the commit in flight
        release.set()
        await asyncio.wait_for(runner, 1.0)  # returns once [2] is committed
        return commits, in_order

    commits, in_order = asyncio.run(scenario())
    assert in_order and commits == [[0, 1], [2]]
