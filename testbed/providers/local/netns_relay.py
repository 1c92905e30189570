"""An SSH ProxyCommand into a node's network namespace (the local testbed's jump host).

Node addresses of the local testbed exist only inside the namespaces, as a cloud's
private addresses exist only behind its jump host. SSH (ansible) and paramiko (fabric)
reach a node's own sshd through this relay: it enters the namespace, connects to the
address and port, and copies bytes between its standard streams and the socket.

    ssh -o ProxyCommand='python -m testbed.providers.local.netns_relay NAMESPACE %h %p' root@ADDR

It imports nothing heavy, so starting it costs tens of milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import socket
import sys

CLONE_NEWNET = 0x40000000


def enter_namespace(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def relay(sock: socket.socket, stdin: int, stdout: int) -> None:
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, "in")
    selector.register(sock, selectors.EVENT_READ, "sock")
    open_ends = 2
    while open_ends:
        for key, _ in selector.select():
            if key.data == "in":
                data = os.read(stdin, 65536)
                if not data:
                    selector.unregister(stdin)
                    sock.shutdown(socket.SHUT_WR)
                    open_ends -= 1
                else:
                    sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    selector.unregister(sock)
                    open_ends -= 1
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(stdout, view) :]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        sys.stderr.write(
            "usage: python -m testbed.providers.local.netns_relay NAMESPACE HOST PORT\n"
        )
        return 2
    namespace, host, port = args
    try:
        enter_namespace(namespace)
        sock = socket.create_connection((host, int(port)), timeout=10)
    except OSError as error:
        sys.stderr.write(f"netns_relay: {namespace} {host}:{port}: {error}\n")
        return 1
    sock.settimeout(None)
    with sock:
        relay(sock, sys.stdin.fileno(), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
