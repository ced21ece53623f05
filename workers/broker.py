"""What the broker holds: the task ids of the messages waiting in the job queues or delivered to a worker and not
yet acknowledged. The reconciliation (``webapp.jobs.worker_services.jobs_reconcile``) re-sends a queued job whose
message is in neither place (a Redis restart without persistence, a task that gave up on a database error).

Only the Redis transport is read (kombu keeps a queue as a list per priority and unacknowledged messages in one
hash); for another transport this answers None and the reconciliation is skipped.
"""

from __future__ import annotations

import json


def _task_id(raw: bytes | str) -> str | None:
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, list) and message:  # unacked entries: [message, exchange, routing_key]
        message = message[0]
    headers = message.get("headers") if isinstance(message, dict) else None
    return headers.get("id") if isinstance(headers, dict) else None


def broker_pending_task_ids(app, *, queues: list[str]) -> set[str] | None:
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        if not hasattr(channel, "_q_for_pri") or not hasattr(channel, "unacked_key"):
            return None
        client = channel.client
        raws = []
        for queue in queues:
            for priority in channel.priority_steps:
                raws.extend(client.lrange(channel._q_for_pri(queue, priority), 0, -1))
        raws.extend(client.hvals(channel.unacked_key))
    return {task_id for task_id in map(_task_id, raws) if task_id}
