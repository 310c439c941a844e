"""A publishing agent for the SIGKILL test: publishes `count` scores round-robin over two streams.

Usage: publisher_child.py BOOTSTRAP TOPIC_PREFIX SPOOL_DIR COUNT. Prints "<stream key> <seq> <delivery>"
once each publish returned, then "drained <n>" after closing (COUNT=0 only drains the spool).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from kafka_factories import make_score
from kafka_helpers import kafka_settings, publish_settings

from agent.publish import Publisher
from core.types import StreamId


async def main(bootstrap: str, prefix: str, spool_dir: Path, count: int) -> None:
    publisher = Publisher(kafka_settings(bootstrap, prefix), publish_settings(spool_dir))
    await publisher.start()
    streams = [StreamId("call-k", "patient"), StreamId("call-k", "clinician")]
    for i in range(count):
        stream, seq = streams[i % 2], i // 2
        delivery = await publisher.publish_score(make_score(stream, seq))
        print(stream.key, seq, delivery, flush=True)
    drained = await publisher.wait_drained(30)
    await publisher.close()
    print("drained" if drained else "not-drained", publisher.stats.drained, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])))
