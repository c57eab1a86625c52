"""MqttPublisher throughput: Records from its queue to a local mosquitto.

Starts mosquitto on 127.0.0.1 (a free port, a temporary config), runs one
MqttPublisher (QoS 1, discovery on) and a subscriber; puts ``--records``
Records over ``--entities`` sensors as fast as the queue takes them and stops
the clock when the subscriber has seen the last value of every entity.
Printed: records per second and the process's CPU seconds per 1,000 records.
A meter polled every 10 s plus a few sensors is well under 10 records/s.

    python3 bench/bench_mqtt.py [--records 20000] [--entities 10]
"""

from __future__ import annotations

import argparse
import datetime
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from keilib.mqtt import MqttPublisher  # noqa: E402
from keilib.record import Record  # noqa: E402
from mqttbroker import Broker, Subscriber  # noqa: E402


def run(records: int, entities: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        broker = Broker(Path(directory)).start()
        try:
            sub = Subscriber(broker.port, ["kei/bench/#"])
            que: "queue.Queue" = queue.Queue(1000)
            publisher = MqttPublisher(que, host="127.0.0.1", port=broker.port, node_id="bench")
            publisher.start()
            deadline = time.monotonic() + 10
            while sub.last("kei/bench/status") != "online" and time.monotonic() < deadline:
                time.sleep(0.01)
            stamp = datetime.datetime(2026, 12, 1)
            last = {}
            cpu, start = time.process_time(), time.monotonic()
            for n in range(records):
                sensor = "s%d" % (n % entities)
                que.put(Record(stamp, "B", sensor, n))
                last["kei/bench/B/" + sensor] = str(n)

            def done() -> bool:
                return all(sub.last(topic) == value for topic, value in last.items())
            while not done():
                time.sleep(0.005)
            elapsed, cpu = time.monotonic() - start, time.process_time() - cpu
            publisher.stop(10)
            sub.close()
            print("MqttPublisher -> mosquitto (QoS 1, %d entities): %d records in %.2f s: %.0f records/s, "
                  "%.3f CPU s per 1000 (publisher, broker client and subscriber in this process)"
                  % (entities, records, elapsed, records / elapsed, cpu * 1000 / records))
        finally:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--entities", type=int, default=10)
    args = parser.parse_args()
    run(args.records, args.entities)


if __name__ == "__main__":
    main()
