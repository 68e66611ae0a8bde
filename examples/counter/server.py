"""A tiny TCP counter server: the example app mig keeps a hot standby of.

Each line a client sends (``incr NAME`` or ``get NAME``) is answered with the counter's
value; ``dump PATH`` writes every counter to the file PATH (relative to the server's
folder). Its state lives only in memory, so only a replaying backup can preserve it.
"""

import selectors
import socket
import sys

counters: dict[str, int] = {}


def handle(line: str) -> str:
    parts = line.split()
    if len(parts) == 2 and parts[0] == "incr":
        counters[parts[1]] = counters.get(parts[1], 0) + 1
        return str(counters[parts[1]])
    if len(parts) == 2 and parts[0] == "get":
        return str(counters.get(parts[1], 0))
    if len(parts) == 2 and parts[0] == "dump":
        with open(parts[1], "w") as out:
            for name in sorted(counters):
                out.write(f"{name} {counters[name]}\n")
        return f"dumped {len(counters)}"
    return "error: expected 'incr NAME', 'get NAME' or 'dump PATH'"


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 7000
    sel = selectors.DefaultSelector()
    server = socket.create_server(("0.0.0.0", port), reuse_port=False)
    sel.register(server, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is server:
                conn, _ = server.accept()
                sel.register(conn, selectors.EVENT_READ)
                buffers[conn] = b""
                continue
            data = sock.recv(4096)
            if not data:
                sel.unregister(sock)
                sock.close()
                buffers.pop(sock, None)
                continue
            buffers[sock] += data
            while b"\n" in buffers[sock]:
                line, buffers[sock] = buffers[sock].split(b"\n", 1)
                sock.sendall(handle(line.decode(errors="replace")).encode() + b"\n")


if __name__ == "__main__":
    main()
