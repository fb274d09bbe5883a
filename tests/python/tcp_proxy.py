"""A TCP proxy on 127.0.0.1 that injects faults into the first connections it forwards, for the
S3 fault tests: it stands between ckpt and the real gateway.

usage: tcp_proxy.py TARGET_PORT PORT_FILE --fault reset|stall|corrupt [--connections N]
                    [--after BYTES]

It listens on a free port, writes the port to PORT_FILE, and forwards every connection to
127.0.0.1:TARGET_PORT. The first N connections (default 1) that carry more than BYTES request
bytes (default 4096) get the fault once they have: `reset` closes both sides with a TCP reset,
`stall` stops forwarding in both directions and holds the connection open, `corrupt` flips one
request byte there (in the body) and forwards the rest. Later connections pass untouched.
Each fault is logged on stdout. Stops on SIGTERM.
"""
import argparse
import signal
import socket
import struct
import sys
import threading

parser = argparse.ArgumentParser()
parser.add_argument("target_port", type=int)
parser.add_argument("port_file")
parser.add_argument("--fault", choices=["reset", "stall", "corrupt"], required=True)
parser.add_argument("--connections", type=int, default=1)
parser.add_argument("--after", type=int, default=4096)
args = parser.parse_args()

lock = threading.Lock()
faults_left = args.connections
stalled = []  # sockets held open on purpose


def take_fault():
    global faults_left
    with lock:
        if faults_left <= 0:
            return False
        faults_left -= 1
        return True


def reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def pump(src, dst, upstream, state):
    seen = 0
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if upstream and not state["done"] and seen + len(data) > args.after:
                if take_fault():
                    state["done"] = True
                    print(f"proxy: {args.fault} after {args.after} request bytes", flush=True)
                    if args.fault == "reset":
                        reset(src)
                        reset(dst)
                        return
                    if args.fault == "stall":
                        state["stalled"] = True
                        stalled.extend([src, dst])
                        return
                    at = args.after - seen
                    data = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]
                else:
                    state["done"] = True
            seen += len(data)
            if state.get("stalled"):
                return
            dst.sendall(data)
    except OSError:
        pass
    finally:
        if not state.get("stalled"):
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def serve(client):
    try:
        upstream = socket.create_connection(("127.0.0.1", args.target_port))
    except OSError:
        client.close()
        return
    state = {"done": False}
    threading.Thread(target=pump, args=(client, upstream, True, state), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client, False, state), daemon=True).start()


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(listener.getsockname()[1]))
import os
os.rename(args.port_file + ".tmp", args.port_file)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    conn, _ = listener.accept()
    serve(conn)
