"""Distributed runs: the unfinished items of a run (or of each arm of an experiment) go to a task
queue in chunks, and ``reconciler worker`` processes on any host take them, over one PostgreSQL
database.

- ``chunks``: how items are cut into chunks (pure).
- ``store``: the chunks' rows, results written exactly once, the run's lock (no queue here).
- ``queue``: the task engine (procrastinate): its app, the chunk task, deferring, stalled jobs.
- ``enqueue``: ``reconciler run NAME --distribute``: claim the run (experiment), cut it, defer the chunks.
- ``worker``: ``reconciler worker``: take chunks, run their items, finish the run (experiment).

Only ``queue``, ``enqueue`` and ``worker`` import procrastinate, and only the ``run --distribute``
and ``worker`` commands import them: plan, apply and a local run never load the engine.
"""
