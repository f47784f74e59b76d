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
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
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
    body = json.dumps({"text": args.text, "tags": ["drill"]}).encode()
    status, data, ms = request(args, args.source, "POST", "/api/v1/knowledge", body)
    print(json.dumps({"status": status, "body": data.decode("utf-8", "replace")[:2000], "ms": round(ms, 2)}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["flood", "probe", "write"])
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
    args = p.parse_args()
    if args.mode == "flood":
        asyncio.run(flood(args))
    elif args.mode == "probe":
        probe(args)
    else:
        write(args)


if __name__ == "__main__":
    sys.exit(main())
