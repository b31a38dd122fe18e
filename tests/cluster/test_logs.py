"""Library output goes to the log file, xalign's own output and the progress bars stay on the console, and
everything is put back afterwards: on a real embedded Ray cluster."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

from cluster.logs import active, library_output_to
from cluster.ray_session import ray_session


def _wait_for(path: Path, text: str, timeout_s: float = 120.0) -> str:
    """The file's text once it holds `text` (Ray forwards worker output asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.5)
    raise AssertionError(f"{text!r} never reached {path}:\n{content}")


def test_library_output_goes_to_the_log_file(tmp_path, capfd):
    import ray
    from ray._private import worker as ray_worker

    def worker_chatter() -> int:
        """Library-style output on a worker's stdout and stderr, and a distributed progress bar. Defined here so
        that it travels by value: workers cannot import the test module."""
        from ray.experimental.tqdm_ray import tqdm

        print("hello from a worker")
        print("a worker deprecation notice", file=sys.stderr)
        for _ in tqdm(range(3), desc="xalign-progress"):
            pass
        return 3

    early = logging.getLogger("xalign-test.early-library")  # a library imported before the run
    early_console = logging.StreamHandler(sys.stderr)
    early.addHandler(early_console)
    early.propagate = False
    printer = ray_worker.print_to_stdstream
    path = tmp_path / "logs" / "run.log"
    try:
        with library_output_to(path) as log:
            assert active() is log and early_console not in early.handlers
            early.warning("early library warning")
            late = logging.getLogger("xalign-test.late-library")  # one configured mid-run (e.g. by ray.init)
            late.addHandler(logging.StreamHandler(sys.stdout))
            late.propagate = False
            late.warning("late library warning")
            warnings.warn("a deprecated call", DeprecationWarning, stacklevel=1)
            print("xalign's own line")
            with ray_session(num_cpus=1):
                assert ray.get(ray.remote(worker_chatter).remote()) == 3
                content = _wait_for(path, "a worker deprecation notice")
            log.switch(tmp_path / "logs" / "next.log")
            early.warning("after the switch")
        assert active() is None and early_console in early.handlers  # put back
    finally:
        early.removeHandler(early_console)
    out, err = capfd.readouterr()
    console = out + err
    for line in ("early library warning", "late library warning", "a deprecated call", "hello from a worker",
                 "a worker deprecation notice", "after the switch"):
        assert line not in console, line
    assert "xalign's own line" in console and "xalign-progress" in console  # ours, and the progress bar
    for line in ("WARNING xalign-test.early-library: early library warning", "late library warning",
                 "DeprecationWarning: a deprecated call", "pid=", "hello from a worker"):
        assert line in content, line
    assert "xalign-progress" not in content and "after the switch" not in content
    assert "after the switch" in (tmp_path / "logs" / "next.log").read_text()

    # Everything else is back where it was too.
    assert late.handlers and all(isinstance(h, logging.StreamHandler) and h.stream is sys.stdout
                                 for h in late.handlers)
    assert ray_worker.print_to_stdstream is printer
    late.warning("late library, after")
    assert "late library, after" in capfd.readouterr().out


def test_verbose_changes_nothing(tmp_path):
    handlers = list(logging.getLogger().handlers)
    with library_output_to(None) as log:
        assert log is None and active() is None and logging.getLogger().handlers == handlers
