"""Ctrl-C heard at once during a long training step, not when the step ends.

Python runs a signal's handler between bytecodes of the main thread, and a backward pass is one call into
PyTorch's engine: a Ctrl-C that lands in a long step (a 256-px DiffusionAD step on a CPU takes minutes) went
unanswered until the step ended. A thread woken by the signal's wakeup descriptor says at once what happens
next; a second Ctrl-C (or SIGTERM) ends the process at once, keeping the checkpoints already saved
(they are written under a temporary name and renamed, so none is left half-written).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

QUIT_AT_ONCE_EXIT = 130
"""The exit status of a process ended by a second interrupt (128 + SIGINT, as a shell reports Ctrl-C)."""
_HEARD = (signal.SIGINT, signal.SIGTERM)


def _watch(receiver: socket.socket, stop: threading.Event, name: str) -> None:
    heard = 0
    while not stop.is_set():
        if not select.select([receiver], [], [], 0.2)[0]:
            continue
        try:
            data = receiver.recv(64)
        except OSError:
            return
        for signum in data:
            if signum not in _HEARD:
                continue
            heard += 1
            if heard == 1:
                sys.stderr.write(
                    f"\n{name}: stopping once the step in hand ends, then saving a checkpoint "
                    "(interrupt again to quit at once: the checkpoints saved so far are kept)\n"
                )
                sys.stderr.flush()
            else:
                sys.stderr.write(f"\n{name}: quitting at once; the last saved checkpoint is kept\n")
                sys.stderr.flush()
                os._exit(QUIT_AT_ONCE_EXIT)


@contextmanager
def heard_at_once(name: str) -> Iterator[None]:
    """Inside the block, the first Ctrl-C/SIGTERM is acknowledged at once (the loop still stops after its step and
    saves), the second ends the process at once. Outside the main thread: nothing (signals reach only it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    receiver, sender = socket.socketpair()
    sender.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main interpreter
        receiver.close()
        sender.close()
        yield
        return
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(receiver, stop, name), name="edgead-interrupt", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        stop.set()
        watcher.join()
        receiver.close()
        sender.close()
