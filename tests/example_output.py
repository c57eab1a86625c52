"""An output written against the base in a few lines: proof that a new sink is small.

``JsonLinesOutput`` appends every Record it takes (readings or aggregates)
as one JSON object per line to a file, through the durable spool, batching
for ``batch_seconds``.  ``fail_first`` makes its first deliveries fail, so a
test can watch the base retry; a batch holding the word ``poison`` is
rejected for good.
"""

from __future__ import annotations

import json

from keilib.average import Aggregate
from keilib.output import Outcome, SpooledOutput
from keilib.record import Record


class JsonLinesOutput(SpooledOutput):
    """``{'class': JsonLinesOutput, 'args': {'record_que': record_que, 'path': 'out.jsonl'}}``"""

    def __init__(self, record_que, path, fail_first=0, **options):
        super().__init__(record_que, **options)
        self.path = path
        self.fail_first = fail_first

    @classmethod
    def claims(cls, args):
        return super().claims(args) + ["file %s" % args["path"]]

    def encode(self, item):
        if not isinstance(item, Record):
            return None
        fields = {"time": item.timestamp.isoformat(), "unit": item.unit, "sensor": item.sensor,
                  "value": item.value, "id": item.data_id}
        if isinstance(item, Aggregate):
            fields.update(count=item.count, min=item.minimum, max=item.maximum)
        return "all", json.dumps(fields) + "\n"

    def deliver(self, key, text, batch_id):
        if self.fail_first > 0:
            self.fail_first -= 1
            return Outcome.retry("not yet (fail_first)")
        if "poison" in text:
            return Outcome.reject("poison in the batch")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
        return Outcome.ok()
