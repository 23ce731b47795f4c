"""The agent's output reader: it ends when told to, even while someone (a daemon that left
the command's process group) keeps the pipe open, keeping what was already written."""

import os
import time

from agent.handlers import PipeReader


def test_a_reader_stops_while_the_pipe_is_still_held_open_keeping_what_was_written():
    read_end, write_end = os.pipe()
    got: list[bytes] = []
    try:
        reader = PipeReader(read_end, got.append)
        os.write(write_end, b"started\n")
        reader.wait(0.2)  # the pipe does not end: the writer holds it
        os.write(write_end, b"late\n")
        began = time.monotonic()
        reader.stop()
        assert time.monotonic() - began < 1.0
        assert b"".join(got) == b"started\nlate\n"
    finally:
        os.close(write_end)
        os.close(read_end)


def test_a_reader_ends_at_once_when_every_writer_has_closed_the_pipe():
    read_end, write_end = os.pipe()
    got: list[bytes] = []
    reader = PipeReader(read_end, got.append)
    os.write(write_end, b"x" * 200_000)  # more than a pipe holds: read while it is written
    os.close(write_end)
    began = time.monotonic()
    reader.wait(5)
    assert time.monotonic() - began < 1.0
    reader.stop()
    os.close(read_end)
    assert b"".join(got) == b"x" * 200_000
