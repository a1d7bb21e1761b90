"""The trampoline :meth:`portlease.Lease.popen` starts: it waits until its lease is its
own, then puts the passed sockets at descriptors 3, 4, ..., sets ``LISTEN_*`` and execs
the command, which keeps its pid (the one the lease records).

Run as ``python -I -S -c SOURCE GATE_FD N FD... NAME... -- COMMAND...`` (the source of
this module, so that the trampoline imports nothing, portlease included). The gate is
a pipe: the parent writes ``G`` once the lease is this process's. End-of-file instead
means the parent died (or gave up) before the hand-over: the trampoline then exits with
code 125 without running the command, so that no command runs on a port leased to no
living process. ``N`` of ``-1`` means no sockets, and no ``LISTEN_*`` variables.
"""

import os
import sys

#: The exit code when the parent died before handing over the lease (as the library's
#: ``PARENT_GONE_EXIT``).
PARENT_GONE_EXIT = 125


def main(argv: "list[str]") -> None:
    """Waits on the gate, places the sockets, sets ``LISTEN_*``, execs the command."""
    gate = int(argv[0])
    count = int(argv[1])
    fds = [int(fd) for fd in argv[2 : 2 + max(count, 0)]]
    names = argv[2 + max(count, 0) : 2 + 2 * max(count, 0)]
    command = argv[2 + 2 * max(count, 0) + 1 :]
    try:
        go = os.read(gate, 1)
    except OSError:
        go = b""
    if go != b"G":
        os._exit(PARENT_GONE_EXIT)
    os.close(gate)
    if count >= 0:
        import fcntl

        # First every socket above the target range, then each to its place.
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + count) for fd in fds]
        for fd in fds:
            os.close(fd)
        for i, fd in enumerate(moved):
            os.dup2(fd, 3 + i, inheritable=True)
            os.close(fd)
        os.environ["LISTEN_FDS"] = str(count)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDNAMES"] = ":".join(names)
    try:
        os.execvp(command[0], command)
    except OSError as e:
        sys.stderr.write(f"portlease: error: cannot run {command[0]!r}: {e.strerror}\n")
        os._exit(127 if isinstance(e, FileNotFoundError) else 126)


if __name__ == "__main__":
    main(sys.argv[1:])
