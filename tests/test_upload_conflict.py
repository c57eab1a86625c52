"""A batch id the endpoint already stored with other data: 409, rejected/, an ERROR; the rest goes on.

How two different batches can carry one id in real life: a spool copied
(an SD card cloned, a backup restored) and then changed before it was sent.
The test does just that, through the uploader's public arguments only:

1. with the endpoint down, an uploader spools a batch (it keeps retrying);
2. the spool directory is copied and, in the copy, the batch's text is
   changed (same length, so whatever the spool's format it stays valid);
3. the endpoint comes up and the first spool delivers its batch;
4. an uploader on the copy sends the changed batch under the same id: the
   endpoint answers 409, the uploader moves it to ``rejected/`` with an ERROR
   naming 409, and the batches queued after it are delivered.
"""

from __future__ import annotations

import logging
import queue
import shutil
from pathlib import Path

import pytest

from keilib.uploader import HttpPostUploader
from phpserver import PHP, PhpServer
from support import REPO, wait_for

pytestmark = pytest.mark.skipif(PHP is None, reason="php not found: apt-get install php-cli")

KEY = "conflict-test-key-3b9c7a"
FIRST = "2026/11/23 10:00,U1,T1,ORIGINAL\n"
CHANGED = FIRST.replace("ORIGINAL", "CHANGED!")


def spooled_files(spool_dir: Path) -> list:
    """The spool's own files (not rejected/, not half-written temporaries)."""
    return [p for p in spool_dir.iterdir()
            if p.is_file() and not p.name.startswith(".")]


def content(data_dir: Path, name: str) -> str:
    path = data_dir / name
    return path.read_text() if path.exists() else ""


def run_uploader(url: str, spool_dir: Path) -> "tuple[HttpPostUploader, queue.Queue]":
    upload_que: queue.Queue = queue.Queue()
    uploader = HttpPostUploader(upload_que=upload_que, target_url=url, upload_key=KEY,
                                spool_dir=spool_dir)
    uploader.start()
    return uploader, upload_que


def test_a_known_id_with_other_data_goes_to_rejected_with_an_error(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    first_spool = tmp_path / "spool-a"
    copied_spool = tmp_path / "spool-b"
    server = PhpServer(REPO / "php", env={"KEI_DATA_DIR": str(data_dir), "KEI_UPLOAD_KEY": KEY,
                                          "KEI_MIN_INTERVAL": "0"})
    uploaders = []
    try:
        # 1. Endpoint down (its port reserved, nothing listening): the batch stays spooled.
        uploader, upload_que = run_uploader(server.url("upload.php"), first_spool)
        uploaders.append(uploader)
        upload_que.put(["day.txt", FIRST])
        wait_for(lambda: first_spool.is_dir() and any(
            "ORIGINAL" in p.read_text(errors="replace") for p in spooled_files(first_spool)),
            message="the batch in the spool")
        wait_for(lambda: uploader.failed_attempts >= 1, message="a failed first attempt")
        assert uploader.stop(10)

        # 2. A copy of the spool whose batch says something else.
        shutil.copytree(first_spool, copied_spool)
        changed = 0
        for path in spooled_files(copied_spool):
            text = path.read_bytes()
            if b"ORIGINAL" in text:
                path.write_bytes(text.replace(b"ORIGINAL", b"CHANGED!"))
                changed += 1
        assert changed == 1

        # 3. The endpoint comes up; the first spool delivers.
        server.start()
        uploader, _ = run_uploader(server.url("upload.php"), first_spool)
        uploaders.append(uploader)
        wait_for(lambda: content(data_dir, "day.txt") == FIRST, timeout=20, message="first batch")
        wait_for(lambda: uploader.sent_batches == 1, message="first batch confirmed")
        assert uploader.stop(10)
        caplog.clear()

        # 4. The copy: its batch has the same id and other data.
        uploader, upload_que = run_uploader(server.url("upload.php"), copied_spool)
        uploaders.append(uploader)
        later = "2026/11/23 10:10,U1,T1,21.5\n"
        upload_que.put(["day.txt", later])
        upload_que.put(["other.txt", "2026/11/23 10:10,U2,T2,7\n"])
        wait_for(lambda: content(data_dir, "other.txt") != "" and content(data_dir, "day.txt") != FIRST,
                 timeout=20, message="the later batches delivered")
        assert content(data_dir, "day.txt") == FIRST + later        # CHANGED! never stored
        assert content(data_dir, "other.txt") == "2026/11/23 10:10,U2,T2,7\n"
        rejected = list((copied_spool / "rejected").iterdir())
        assert len(rejected) == 1
        assert "CHANGED!" in rejected[0].read_text()
        assert uploader.rejected_batches == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "409" in errors[0], errors
        assert "day.txt" in errors[0]
        assert KEY not in caplog.text
        assert not [p for p in spooled_files(copied_spool)
                    if "CHANGED!" in p.read_text(errors="replace")]
        assert not server.php_errors()
    finally:
        for one in uploaders:
            one.stop(10)
        server.close()
