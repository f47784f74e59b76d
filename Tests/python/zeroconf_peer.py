"""An independent mDNS/DNS-SD peer built on python-zeroconf, bound to one IPv4 interface address.
Meant to run inside a lab namespace (Tests/netns/lab.sh exec PREFIX NS python3 zeroconf_peer.py ...).
Every event is one JSON line on stdout, flushed; diagnostics go to stderr.

usage:
  zeroconf_peer.py browse --ip IP [--type _kiana._tcp.local.] [--timeout S] [--count N]
      {"event":"resolved","name":FULLNAME,"instance":..,"host":..,"port":..,"addresses":[..],
       "txt":{k:v},"t":seconds_since_start}            first resolution of a service (or first
                                                       after a removal)
      {"event":"updated", ...same fields...}           a later change (e.g. new TXT); identical
                                                       re-resolutions are not printed
      {"event":"removed","name":..,"instance":..,"t":..} goodbye / expiry
      Exits 0 after --timeout seconds (default 10), or as soon as --count distinct services have
      resolved; exits 2 if --count was given and not reached before the timeout.
  zeroconf_peer.py publish --ip IP --name INSTANCE --port P [--txt k=v ...] [--seconds S]
                           [--type _kiana._tcp.local.] [--host HOST.local.]
      Registers INSTANCE.<type> with address IP (host defaults to zc-<ip with dashes>.local.),
      prints {"event":"published","name":..,"host":..,"t":..} once probing/announcing finished,
      stays S seconds (default 10; SIGTERM/SIGINT end it early), unregisters (sends goodbye),
      prints {"event":"unpublished",...} and exits 0. Exit 3 if the name is already taken.
TXT values are decoded as UTF-8 (invalid bytes replaced); a key without '=' maps to null; an empty
TXT (a single empty string, as avahi sends) gives {}.
"""
import argparse
import asyncio
import json
import signal
import socket
import sys
import time

from zeroconf import IPVersion, NonUniqueNameException, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

T0 = time.monotonic()


def emit(event, **fields):
    fields = {"event": event, **fields, "t": round(time.monotonic() - T0, 3)}
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def instance_of(name, type_):
    suffix = "." + type_
    return name[: -len(suffix)] if name.endswith(suffix) else name


def decode_txt(props):
    out = {}
    for k, v in (props or {}).items():
        key = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
        if not key:  # a lone empty string is RFC 6763's "empty TXT" (what avahi sends for none)
            continue
        out[key] = None if v is None else (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
    return out


def make_zc(ip):
    return AsyncZeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)


async def browse(args):
    aiozc = make_zc(args.ip)
    done = asyncio.Event()
    last = {}  # name -> fields last emitted (duplicates suppressed)
    resolved = set()
    tasks = set()

    async def resolve(name, type_):
        info = AsyncServiceInfo(type_, name)
        # Retry a few times: the first answer may lack SRV/A if packets were lost.
        ok = False
        for _ in range(3):
            ok = await info.async_request(aiozc.zeroconf, 3000)
            if ok and info.parsed_addresses(IPVersion.V4Only):
                break
        if not ok:
            print(f"zeroconf_peer: could not resolve {name}", file=sys.stderr, flush=True)
            return
        fields = dict(
            name=name,
            instance=instance_of(name, type_),
            host=info.server,
            port=info.port,
            addresses=sorted(info.parsed_addresses(IPVersion.V4Only)),
            txt=decode_txt(info.properties),
        )
        if last.get(name) == fields:
            return
        first = name not in last
        last[name] = fields
        emit("resolved" if first else "updated", **fields)
        if first:
            resolved.add(name)
            if args.count and len(resolved) >= args.count:
                done.set()

    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Removed:
            last.pop(name, None)
            emit("removed", name=name, instance=instance_of(name, service_type))
            return
        task = asyncio.ensure_future(resolve(name, service_type))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    browser = AsyncServiceBrowser(aiozc.zeroconf, [args.type], handlers=[on_change])
    try:
        await asyncio.wait_for(done.wait(), timeout=args.timeout)
        rc = 0
    except asyncio.TimeoutError:
        rc = 2 if args.count else 0
    await browser.async_cancel()
    for task in list(tasks):
        task.cancel()
    await aiozc.async_close()
    return rc


async def publish(args):
    txt = {}
    for item in args.txt:
        k, sep, v = item.partition("=")
        txt[k] = v if sep else None
    host = args.host or "zc-" + args.ip.replace(".", "-") + ".local."
    if not host.endswith("."):
        host += "."
    name = f"{args.name}.{args.type}"
    info = AsyncServiceInfo(
        args.type,
        name,
        addresses=[socket.inet_aton(args.ip)],
        port=args.port,
        properties=txt,
        server=host,
    )
    aiozc = make_zc(args.ip)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await (await aiozc.async_register_service(info))
    except NonUniqueNameException:
        print(f"zeroconf_peer: name already in use: {name}", file=sys.stderr, flush=True)
        await aiozc.async_close()
        return 3
    emit("published", name=name, host=host)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.seconds)
    except asyncio.TimeoutError:
        pass
    await (await aiozc.async_unregister_service(info))
    emit("unpublished", name=name)
    await aiozc.async_close()
    return 0


def main():
    ap = argparse.ArgumentParser(description="python-zeroconf mDNS peer for interop tests")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("browse")
    b.add_argument("--ip", required=True)
    b.add_argument("--type", default="_kiana._tcp.local.")
    b.add_argument("--timeout", type=float, default=10.0)
    b.add_argument("--count", type=int, default=0)
    p = sub.add_parser("publish")
    p.add_argument("--ip", required=True)
    p.add_argument("--type", default="_kiana._tcp.local.")
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--txt", action="append", default=[], metavar="K=V")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--host")
    args = ap.parse_args()
    if not args.type.endswith("."):
        args.type += "."
    sys.exit(asyncio.run(browse(args) if args.cmd == "browse" else publish(args)))


if __name__ == "__main__":
    main()
