"""The record writer: records survive a SIGKILL in the spool and reach the database from the next process; a
database outage (a real PostgreSQL server stopped, then started) delays only the writer, and every record arrives
afterwards; frames are archived as the retention policy says and pruned with it; the review policy sends
borderline records to the queue, whose frames are kept whatever the retention policy samples."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

from service.records.archive import FrameArchive, RetentionPolicy, sha256_hex
from service.records.database import open_database
from service.records.recorder import Recorder, RecorderSettings
from service.records.review import ReviewPolicy
from service.records.spool import Spool, read_segment
from service.records.store import RecordFilter
from tests.helpers.processes import REPO
from tests.service.records.rows import T0, row

KEEP_ALL = RetentionPolicy(keep_ng=True, keep_ok_every=1, days=30)


def spooled(n: int, **fields) -> dict:
    """Record n as the request path hands it to the recorder (JSON times, no frame or review columns)."""
    record = row(n, **fields)
    for key in ("frame_sha256", "frame_bytes", "frame_kept", "review"):
        record.pop(key)
    return json.loads(json.dumps(record, default=lambda t: t.isoformat()))


def recorder(engine, folder: Path, policy: RetentionPolicy = KEEP_ALL, max_bytes: int = 10**9) -> Recorder:
    settings = RecorderSettings(flush_s=3600, default_policy=policy, max_archive_bytes=max_bytes, prune_s=3600)
    return Recorder(engine, folder / "spool", FrameArchive(folder / "frames"), settings)


def all_ids(rec: Recorder) -> set[str]:
    rows, _ = rec.store.page(RecordFilter(), 1000)
    return {r["inspection_id"] for r in rows}


def test_records_of_a_killed_process_reach_the_database_from_the_next_one(database, tmp_path):
    records = tmp_path / "records.json"
    records.write_text(
        json.dumps([{**spooled(n), "frame_sha256": None, "frame_bytes": None, "frame_kept": False} for n in range(25)])
    )
    script = textwrap.dedent("""
        import json, os, signal, sys
        from pathlib import Path
        from service.records.spool import Spool
        spool = Spool(Path(sys.argv[1]))
        for n, record in enumerate(json.loads(Path(sys.argv[2]).read_text())):
            spool.append(record)
            if n == 9:
                spool.seal()  # one sealed segment, one open one
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path / "spool"), str(records)], cwd=REPO)
    assert killed.returncode == -signal.SIGKILL

    rec = recorder(database, tmp_path)
    rec.start()
    try:
        assert rec.spool.pending() == 25  # the dead process's segments, adopted
        assert rec.flush()
        assert all_ids(rec) == {row(n)["inspection_id"] for n in range(25)}
        assert rec.spool.pending() == 0 and not list((tmp_path / "spool").glob("*.jsonl"))[1:]
    finally:
        rec.stop()


def test_a_live_processs_spool_is_not_adopted(tmp_path):
    live = Spool(tmp_path / "spool")
    live.append({"n": 1})
    live.seal()
    other = Spool(tmp_path / "spool")
    try:
        assert other.sealed() == []  # the owner holds its lock: its segments are its own
    finally:
        other.close()
        live.close()
    assert [r["n"] for p in Spool(tmp_path / "spool").sealed() for r in read_segment(p)] == [1]


def test_frames_are_archived_as_the_policy_says_and_pruned_with_it(database, tmp_path):
    rec = recorder(database, tmp_path, policy=RetentionPolicy(keep_ng=True, keep_ok_every=3, days=10))
    rec.start()
    try:
        kept = [rec.record(spooled(n, anomalous=n == 1), frame=f"frame {n}".encode())["frame_kept"] for n in range(7)]
        assert kept == [True, True, False, False, True, False, False]  # NG always; OK 0, 3, 6 of the OK count
        rec.set_policy("q", RetentionPolicy(keep_ng=False, keep_ok_every=0, days=1))
        assert rec.record(spooled(7, product_id="q", anomalous=True), frame=b"q")["frame_kept"] is False
        assert rec.record(spooled(8, product_id="p"), frame=None)["frame_kept"] is False
        assert rec.flush()
        assert rec.archive.get(sha256_hex(b"frame 1")) == b"frame 1" and rec.archive.get(sha256_hex(b"frame 2")) is None
        # 20 days after T0: every frame of p is past its 10 days
        assert rec.prune(now=T0 + timedelta(days=20), grace_s=0) == 3
        assert rec.archive.get(sha256_hex(b"frame 1")) is None
        assert not any(r["frame_kept"] for r in rec.store.page(RecordFilter(), 100)[0])
    finally:
        rec.stop()


def test_borderline_records_go_to_the_queue_and_keep_their_frames(database, tmp_path):
    rec = recorder(database, tmp_path, policy=RetentionPolicy(keep_ng=False, keep_ok_every=0, days=1))
    rec.start()
    try:
        # threshold 0.5, default band ±10 %: 0.46 and 0.54 are borderline, 0.1 and 0.9 are not
        scores = {0: 0.46, 1: 0.54, 2: 0.1, 3: 0.9}
        made = [rec.record(spooled(n, score=s, anomalous=s > 0.5), frame=f"f{n}".encode()) for n, s in scores.items()]
        assert [r["review"] for r in made] == ["pending", "pending", None, None]
        assert [r["frame_kept"] for r in made] == [True, True, False, False]  # the policy keeps no frame but these
        rec.set_review_policy("p", ReviewPolicy(band=0.0, all_ng=True))
        later = [rec.record(spooled(n, score=s, anomalous=s > 0.5), frame=None) for n, s in [(4, 0.46), (5, 0.9)]]
        assert [r["review"] for r in later] == [None, "pending"]
        assert rec.flush()
        queue, _, pending = rec.store.review_queue("p", 10)
        assert [r["inspection_id"] for r in queue] == [row(n)["inspection_id"] for n in (0, 1, 5)] and pending == 3
        assert rec.prune(now=T0 + timedelta(days=20), grace_s=0) == 0  # past `days`, but waiting for a person
        assert rec.archive.has(sha256_hex(b"f0")) and rec.archive.has(sha256_hex(b"f1"))
        other = recorder(database, tmp_path / "other")  # another replica picks the policy up from the database
        other.start()
        try:
            assert other.flush()  # its writer reads the policies
            assert other.review_policy("p") == ReviewPolicy(band=0.0, all_ng=True)
            assert other.review_policy("q") == ReviewPolicy(band=0.1, all_ng=False)
        finally:
            other.stop()
    finally:
        rec.stop()


def test_the_size_cap_prunes_the_oldest_frames_first(database, tmp_path):
    rec = recorder(database, tmp_path, max_bytes=2 * len(b"frame 0"))
    rec.start()
    try:
        for n in range(4):
            rec.record(spooled(n, anomalous=True), frame=f"frame {n}".encode())
        assert rec.flush()
        assert rec.prune(now=T0, grace_s=0) == 2
        assert [rec.archive.has(sha256_hex(f"frame {n}".encode())) for n in range(4)] == [False, False, True, True]
    finally:
        rec.stop()


def test_a_database_outage_delays_only_the_writer_and_every_record_arrives(postgres_server, tmp_path):
    engine = open_database(postgres_server.url)
    rec = recorder(engine, tmp_path)
    rec.start()
    try:
        rec.record(spooled(1), frame=b"before")
        assert rec.flush() and all_ids(rec) >= {row(1)["inspection_id"]}
        postgres_server.stop()
        try:
            for n in range(2, 12):
                rec.record(spooled(n, anomalous=True), frame=f"frame {n}".encode())  # never raises: spooled
            assert rec.flush() is False and rec.error is not None
            assert rec.spool.pending() == 10
            assert rec.frame(sha256_hex(b"frame 5")) == b"frame 5"  # archived meanwhile: feedback works
        finally:
            postgres_server.start()
        assert rec.flush() and rec.error is None
        assert all_ids(rec) >= {row(n)["inspection_id"] for n in range(1, 12)}
        assert rec.spool.pending() == 0
    finally:
        rec.stop()
        engine.dispose()


def test_a_record_the_database_refuses_is_set_aside_and_the_others_arrive(database, tmp_path):
    rec = recorder(database, tmp_path)
    rec.start()
    try:
        rec.record(spooled(1), frame=None)
        rec.record({**spooled(2), "score_scale": None}, frame=None)  # NOT NULL: refused
        rec.record(spooled(3), frame=None)
        assert rec.flush()
        assert all_ids(rec) == {row(1)["inspection_id"], row(3)["inspection_id"]}
        rejected = (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()
        assert [json.loads(line)["inspection_id"] for line in rejected] == [row(2)["inspection_id"]]
    finally:
        rec.stop()
