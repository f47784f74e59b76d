#!/usr/bin/env python3
"""Hostile HTTP clients for the connection-deadline drills (loopback only).

flood  holds up to N half-open connections (a request line and half a header, then one more
       header byte every few seconds, never the blank line), reopening each one the server
       closes or resets, from the given loopback source addresses, for a bounded time and at a
       bounded connect rate. Prints JSON: attempts, refused/reset/closed counts, the most open
       at once as the client saw it.
probe  sends GET PATH on a fresh connection every INTERVAL seconds from one source address and
       prints JSON with the latencies (p50/p99/max ms) and failures.
write  POSTs one knowledge item and prints the server's answer (status, body).
trickle-head  sends a request head one byte per second; prints when and how the server ended it.
idle   sends one request on a kept-alive connection, reads the answer, then waits; prints when
       the server closed the connection.
slow-body  POSTs a knowledge item whose body arrives at --rate bytes/s; prints the status and
       when the answer came.
stall  opens --connections event streams (GET /api/v1/events, Last-Event-ID 0) with a small
       receive buffer, reads their heads, then reads nothing for --seconds; prints how many the
       server had closed by then (their bytes end in EOF or a reset when drained).
"""
import argparse
import asyncio
import json
import resource
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = 24


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def status_of(reply):
    """The status code of an HTTP/1.1 reply's first line (0 when there is none)."""
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def header(reply, name):
    """The value of header `name` (lower case, bytes) in the head of `reply`, or None."""
    end = reply.find(b"\r\n\r\n")
    for line in reply[:end if end >= 0 else len(reply)].split(b"\r\n"):
        if line.lower().startswith(name + b":"):
            return line.split(b":", 1)[1].strip()
    return None


def connect_from(host, port, source, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect((host, port))
    return s


async def flood(args):
    limit = raise_nofile()
    target = min(args.connections, limit - 64)
    sources = args.sources.split(",")
    stats = {"target": target, "attempts": 0, "connectFailed": 0, "reset": 0, "closed": 0, "open": 0, "maxOpen": 0, "firstBytes": {}}
    deadline = time.monotonic() + args.seconds
    slots = asyncio.Semaphore(target)
    interval = 1.0 / args.rate
    loop = asyncio.get_running_loop()

    async def one(source):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            await asyncio.wait_for(loop.sock_connect(sock, (args.host, args.port)), 5)
        except Exception:
            stats["connectFailed"] += 1
            sock.close()
            return
        stats["open"] += 1
        stats["maxOpen"] = max(stats["maxOpen"], stats["open"])
        try:
            await loop.sock_sendall(sock, b"GET /health HTTP/1.1\r\nHost:")
            while time.monotonic() < deadline:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 256), args.every)
                except asyncio.TimeoutError:
                    await loop.sock_sendall(sock, b"a")
                    continue
                if not data:
                    stats["closed"] += 1
                    return
                key = data.split(b"\r\n", 1)[0].decode("latin-1")[:40]
                stats["firstBytes"][key] = stats["firstBytes"].get(key, 0) + 1
        except (ConnectionResetError, BrokenPipeError, OSError):
            stats["reset"] += 1
        finally:
            stats["open"] -= 1
            sock.close()

    async def runner(source):
        try:
            await one(source)
        finally:
            slots.release()

    tasks = set()
    i = 0
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        await slots.acquire()
        now = time.monotonic()
        if now >= deadline:
            slots.release()
            break
        if next_at > now:
            await asyncio.sleep(next_at - now)
        next_at = max(next_at + interval, time.monotonic() - 1)
        stats["attempts"] += 1
        t = asyncio.ensure_future(runner(sources[i % len(sources)]))
        i += 1
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(stats))


def request(args, source, method, path, body=None):
    start = time.monotonic()
    s = connect_from(args.host, args.port, source, args.timeout)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nConnection: close\r\n"
        if args.token:
            head += f"Authorization: Bearer {args.token}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n" + (body or b""))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    status = status_of(data)
    return status, data.split(b"\r\n\r\n", 1)[-1], (time.monotonic() - start) * 1000


def probe(args):
    latencies, failures, statuses = [], [], {}
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        t = time.monotonic()
        try:
            status, _, ms = request(args, args.source, "GET", args.path)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(ms)
            else:
                failures.append(f"status {status}")
        except Exception as e:
            failures.append(type(e).__name__ + ": " + str(e)[:80])
        rest = args.interval - (time.monotonic() - t)
        if rest > 0:
            time.sleep(rest)
    latencies.sort()

    def pct(p):
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2)

    print(json.dumps({"count": len(latencies), "p50": pct(0.5), "p99": pct(0.99), "max": round(latencies[-1], 2) if latencies else None,
                      "failures": len(failures), "firstFailures": failures[:5], "statuses": {str(k): v for k, v in statuses.items()}}))


def write(args):
    created = 0
    for i in range(args.count):
        text = args.text if args.count == 1 else f"{args.text} {i} " + "filler words " * 20
        fields = {"text": text, "tags": ["drill"]}
        if args.count > 1:
            fields["title"] = f"drill item {i} " + "t" * 200  # bulk for the event stream
        body = json.dumps(fields).encode()
        status, data, ms = request(args, args.source, "POST", "/api/v1/knowledge", body)
        if status != 201:
            break
        created += 1
    print(json.dumps({"status": status, "created": created, "body": data.decode("utf-8", "replace")[:2000], "ms": round(ms, 2)}))


def until_closed(sock, limit):
    """Reads until EOF/reset or `limit` seconds; returns (seconds, bytes, how)."""
    start = time.monotonic()
    how, got = send_slowly(sock, lambda: b"", 0.2, start, limit)
    return time.monotonic() - start, got, how


def send_slowly(s, piece, pause, start, seconds, answered=None):
    """Sends piece() (nothing when it is empty) and then reads for up to `pause` seconds, over and
    over until `seconds` after `start`, the server ends the connection, or answered(bytes read)
    holds. Returns (how, bytes read): how is "open", "eof", "reset" or "answered"."""
    got = b""
    s.settimeout(pause)
    while time.monotonic() - start < seconds:
        data = piece()
        if data:
            try:
                s.sendall(data)
            except socket.timeout:
                pass  # the server is not reading: still open
            except (BrokenPipeError, ConnectionResetError, OSError):
                return "reset", got
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, OSError):
            return "reset", got
        if not chunk:
            return "eof", got
        got += chunk
        if answered and answered(got):
            return "answered", got
    return "open", got


def trickle_head(args):
    s = connect_from(args.host, args.port, args.source, args.timeout)
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nX-Slow: " + "a" * 200
    sent = 0

    def next_byte():
        # The head, then more of the last header's value: never a complete head.
        nonlocal sent
        sent += 1
        return (head[sent - 1] if sent <= len(head) else "a").encode()

    start = time.monotonic()
    how, got = send_slowly(s, next_byte, args.byte_every, start, args.seconds)
    print(json.dumps({"seconds": round(time.monotonic() - start, 2), "sent": sent, "how": how,
                      "reply": got.decode("latin-1")[:200]}))


def idle(args):
    s = connect_from(args.host, args.port, args.source, args.timeout)
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
    if args.token:
        head += f"Authorization: Bearer {args.token}\r\n"
    s.sendall((head + "\r\n").encode())
    s.settimeout(5)
    first = s.recv(65536)
    seconds, got, how = until_closed(s, args.seconds)
    print(json.dumps({"status": status_of(first),
                      "seconds": round(seconds, 2), "how": how, "extra": len(got)}))


def slow_body(args):
    s = connect_from(args.host, args.port, args.source, args.timeout)
    body = json.dumps({"text": "x" * args.size}).encode()
    head = f"POST /api/v1/knowledge HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if args.token:
        head += f"Authorization: Bearer {args.token}\r\n"
    s.sendall((head + "\r\n").encode())
    start = time.monotonic()
    step = max(1, int(args.rate // 10))
    sent = 0

    def next_step():
        # A tenth of a second's worth of the body (the pause between sends).
        nonlocal sent
        if sent >= len(body):
            return b""
        sent += step
        return body[sent - step:sent]

    how, got = send_slowly(s, next_step, 0.1, start, args.seconds, answered=lambda got: b"\r\n\r\n" in got)
    status = status_of(got)
    answered_at = round(time.monotonic() - start, 2)
    closed_after = None
    if args.linger and how == "answered":
        # Keep sending at the same pace: when does the server stop taking the body?
        ended, _ = send_slowly(s, next_step, 0.1, start, args.seconds)
        if ended != "open":
            closed_after = round(time.monotonic() - start, 2)
    print(json.dumps({"status": status, "seconds": answered_at, "sent": sent, "how": how, "closedAfter": closed_after,
                      "reply": got.decode("latin-1")[:400]}))


def stall(args):
    socks = []
    statuses = {}
    for _ in range(args.connections):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind((args.source, 0))
        s.settimeout(10)
        s.connect((args.host, args.port))
        head = f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nLast-Event-ID: 0\r\n"
        if args.token:
            head += f"Authorization: Bearer {args.token}\r\n"
        s.sendall((head + "\r\n").encode())
        first = s.recv(512)
        status = status_of(first)
        statuses[status] = statuses.get(status, 0) + 1
        socks.append(s)
    before, retry_after = extra_stream(args)
    time.sleep(args.seconds)
    closed = 0
    for s in socks:
        _, _, how = until_closed(s, 20)
        if how != "open":
            closed += 1
        s.close()
    after, _ = extra_stream(args)
    print(json.dumps({"statuses": {str(k): v for k, v in statuses.items()}, "closed": closed, "opened": len(socks),
                      "extraBefore": before, "retryAfter": retry_after, "extraAfter": after}))


def extra_stream(args):
    """Opens one more event stream; returns its status and Retry-After header."""
    s = connect_from(args.host, args.port, args.source, args.timeout)
    try:
        head = f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
        if args.token:
            head += f"Authorization: Bearer {args.token}\r\n"
        s.sendall((head + "\r\n").encode())
        first = s.recv(4096)
    finally:
        s.close()
    retry = header(first, b"retry-after")
    return status_of(first), retry.decode() if retry is not None else None


def slow_read(args):
    """GET PATH with a small receive buffer, reading --rate bytes/s; reports what arrived."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind((args.source, 0))
    s.settimeout(args.timeout)
    s.connect((args.host, args.port))
    head = f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
    if args.token:
        head += f"Authorization: Bearer {args.token}\r\n"
    s.sendall((head + "\r\n").encode())
    start = time.monotonic()
    got = b""
    how = "open"
    step = max(1, int(args.rate // 10))
    while time.monotonic() - start < args.seconds:
        try:
            chunk = s.recv(step)
        except socket.timeout:
            how = "timeout"
            break
        except (ConnectionResetError, OSError):
            how = "reset"
            break
        if not chunk:
            how = "eof"
            break
        got += chunk
        head_end = got.find(b"\r\n\r\n")
        length = header(got, b"content-length") if head_end > 0 else None
        if length is not None and len(got) - head_end - 4 >= int(length):
            how = "complete"
            break
        time.sleep(0.1)
    head_end = got.find(b"\r\n\r\n")
    length = header(got, b"content-length") if head_end > 0 else None
    length = int(length) if length is not None else None
    print(json.dumps({"how": how, "seconds": round(time.monotonic() - start, 2), "contentLength": length,
                      "body": len(got) - head_end - 4 if head_end > 0 else 0}))


def upgrade(args):
    """A request asking to upgrade the connection, then a steady stream of junk."""
    s = connect_from(args.host, args.port, args.source, args.timeout)
    head = (f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
            + (f"Authorization: Bearer {args.token}\r\n" if args.token else "") + "\r\n")
    s.sendall(head.encode())
    start = time.monotonic()
    sent, how = 0, "open"
    junk = b"j" * 65536
    s.settimeout(0.5)
    while time.monotonic() - start < args.seconds:
        try:
            sent += s.send(junk)
        except socket.timeout:
            pass
        except (BrokenPipeError, ConnectionResetError, OSError):
            how = "closed"
            break
        time.sleep(0.05)
    print(json.dumps({"how": how, "seconds": round(time.monotonic() - start, 2), "sent": sent}))


def pipelined_body(args):
    """GET /health and a POST whose body follows at --rate bytes/s, pipelined; both answers."""
    s = connect_from(args.host, args.port, args.source, args.timeout)
    auth = f"Authorization: Bearer {args.token}\r\n" if args.token else ""
    body = json.dumps({"text": "pipelined " + "y" * args.size}).encode()
    first = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n{auth}\r\n"
    second = (f"POST /api/v1/knowledge HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n{auth}"
              f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    s.sendall((first + second).encode())
    step = max(1, int(args.rate // 10))
    sent, got = 0, b""
    s.settimeout(0.01)
    start = time.monotonic()
    while time.monotonic() - start < args.seconds and got.count(b"HTTP/1.1 ") < 2:
        if sent < len(body):
            s.sendall(body[sent:sent + step])
            sent += step
        try:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        except socket.timeout:
            pass
        except (ConnectionResetError, OSError):
            break
        time.sleep(0.09)
    statuses = [int(part.split(b" ", 1)[0]) for part in got.split(b"HTTP/1.1 ")[1:] if part[:3].isdigit()]
    print(json.dumps({"statuses": statuses, "seconds": round(time.monotonic() - start, 2), "sent": sent}))


def main():
    p = argparse.ArgumentParser()
    modes = {"flood": lambda a: asyncio.run(flood(a)), "probe": probe, "write": write, "trickle-head": trickle_head, "idle": idle,
             "slow-body": slow_body, "stall": stall, "slow-read": slow_read, "upgrade": upgrade, "pipelined-body": pipelined_body}
    p.add_argument("mode", choices=list(modes))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token")
    p.add_argument("--connections", type=int, default=3072)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--rate", type=float, default=2000, help="flood: connects per second at most")
    p.add_argument("--every", type=float, default=5, help="flood: seconds between header bytes")
    p.add_argument("--sources", default="127.0.0.2")
    p.add_argument("--source", default="127.0.0.1")
    p.add_argument("--path", default="/health")
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--text", default="written during the drill")
    p.add_argument("--linger", action="store_true", help="slow-body: after the answer, keep sending; report when the server closed")
    p.add_argument("--count", type=int, default=1, help="write: items to write, one request each")
    p.add_argument("--size", type=int, default=2000, help="slow-body: characters of text")
    p.add_argument("--byte-every", type=float, default=1.0, help="trickle-head: seconds between bytes")
    args = p.parse_args()
    modes[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
