"""``xdt logs``'s reading of instance logs: merged by time, raw lines kept, no spoofing."""

from __future__ import annotations

from pathlib import Path

from xdt._util.logs import stamp
from xdt.cli.logs import LogFollower


def test_logs_merge_by_time_and_keep_raw_lines_with_their_instance(tmp_path: Path) -> None:
    (tmp_path / "a-1.log").write_text(
        stamp("a-1", "r1", "first", now=100.0) + "\n"
        + "a raw line\n"
        + stamp("a-1/sidecar", None, "third", now=300.0) + "\n"
    )  # fmt: skip
    (tmp_path / "b-2.log").write_text(stamp("b-2", "r2", "second", now=200.0) + "\n")
    (tmp_path / "not-a-log.txt").write_text("ignored\n")
    follower = LogFollower(tmp_path)
    lines = follower.look()
    assert [(line.instance, line.text) for line in lines] == [
        ("a-1", "first"), ("a-1", "a raw line"), ("b-2", "second"), ("a-1/sidecar", "third"),
    ]  # fmt: skip
    assert lines[1].time == lines[0].time  # a raw line goes with the stamped one before it
    assert follower.look() == []  # nothing new
    with open(tmp_path / "b-2.log", "a") as log:
        log.write(stamp("b-2", None, "later", now=400.0) + "\npartial")
    assert [line.text for line in follower.look()] == ["later"]  # the partial line waits
    assert [line.text for line in LogFollower(tmp_path, "b").look()] == ["second", "later"]


def test_a_line_stamped_as_another_instance_is_shown_as_its_own_logs(tmp_path: Path) -> None:
    forged = stamp("victim-1", "their-request", "I am the victim", now=100.0)
    (tmp_path / "evil-1.log").write_text(forged + "\n")
    (line,) = LogFollower(tmp_path).look()
    assert line.instance == "evil-1" and line.request_id is None and line.text == forged
