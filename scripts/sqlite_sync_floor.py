#!/usr/bin/env python3
"""The SQLite floor of storing a synced ledger: the same statements the store runs per block.

Copies the schema (tables, indexes, the FTS5 index; no triggers) from a real kiana database and
replays, through Python's sqlite3 module (the C library, no Swift, no Ed25519, no CBOR), what
`LedgerStore.importBatch` writes for a chain of single-entry blocks: block, entry, blockEntry,
the equivocation lookup, chain, history-tree nodes, the knowledge item and its full-text row,
one transaction per `--batch` blocks, with the node's pragmas (WAL, synchronous FULL, 32 MiB
cache, foreign keys). Prints microseconds per block, the part spent in COMMIT, and Python's own
per-statement overhead measured on an empty statement, so the figure can be set beside
`kiana bench sync`'s "store" part (docs/benchmarks.md, "Initial sync: where the bound is").

usage: sqlite_sync_floor.py KIANA_DB [--blocks 100000] [--batch 1000] [--runs 2]
"""
import argparse
import hashlib
import os
import sqlite3
import statistics
import tempfile
import time


def schema(source):
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    rows = src.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND type IN ('table', 'index') ORDER BY rowid"
    ).fetchall()
    src.close()
    # FTS5's shadow tables are created by the virtual table itself.
    fts = {name for (_, name, sql) in rows if "VIRTUAL TABLE" in sql.upper()}
    out = []
    for kind, name, sql in rows:
        if any(name.startswith(f + "_") for f in fts) or name in ("grdb_migrations", "sqlite_sequence"):
            continue
        out.append(sql)
    return out


def run(statements, blocks, batch):
    d = tempfile.mkdtemp(prefix="kiana-floor-")
    path = os.path.join(d, "floor.sqlite")
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = FULL", "cache_size = -32768", "foreign_keys = ON"):
        db.execute("PRAGMA " + pragma)
    for sql in statements:
        db.execute(sql)
    ex = db.execute
    signer = os.urandom(32)
    header, raw, state = os.urandom(150), os.urandom(260), os.urandom(120)
    text = "knowledge " * 12
    parent = os.urandom(32)
    ex("INSERT INTO block (hash, height, parent, signer, time, signedHeader) VALUES (?, 0, ?, ?, 0, ?)", (parent, parent, signer, header))
    ex("INSERT INTO chain (height, hash) VALUES (0, ?)", (parent,))
    ex("INSERT OR REPLACE INTO historyNode (level, idx, hash) VALUES (0, 0, ?)", (parent,))
    commit = 0.0
    start = time.perf_counter()
    ex("BEGIN")
    for i in range(1, blocks + 1):
        h = hashlib.sha256(parent + i.to_bytes(8, "big")).digest()
        eid = hashlib.sha256(h).digest()
        item = os.urandom(16)
        ex("SELECT EXISTS(SELECT 1 FROM block WHERE hash = ?)", (h,)).fetchone()
        ex("INSERT INTO block (hash, height, parent, signer, time, signedHeader) VALUES (?, ?, ?, ?, ?, ?)", (h, i, parent, signer, i, header))
        ex("INSERT OR IGNORE INTO entry (id, author, seq, kind, hlcWall, hlcLogical, raw) VALUES (?, ?, ?, ?, ?, ?, ?)",
           (eid, signer, i, "knowledge.put", i, 0, raw))
        ex("INSERT INTO blockEntry (blockHash, position, entryId) VALUES (?, 0, ?)", (h, eid))
        ex("SELECT id FROM entry WHERE author = ? AND seq = ? AND id != ?", (signer, i, eid)).fetchall()
        ex("INSERT INTO chain (height, hash) VALUES (?, ?)", (i, h))
        level, idx, node = 0, i, h
        ex("INSERT OR REPLACE INTO historyNode (level, idx, hash) VALUES (?, ?, ?)", (0, idx, node))
        while idx % 2 == 1:
            left = ex("SELECT hash FROM historyNode WHERE level = ? AND idx = ?", (level, idx - 1)).fetchone()[0]
            node = hashlib.sha256(b"\x01" + left + node).digest()
            level, idx = level + 1, idx // 2
            ex("INSERT OR REPLACE INTO historyNode (level, idx, hash) VALUES (?, ?, ?)", (level, idx, node))
        ex("SELECT rowid, title, text, deleted, state FROM item WHERE id = ?", (item,)).fetchone()
        cur = ex("INSERT INTO item (title, text, tags, source, createdWall, updatedWall, deleted, state, id) VALUES (?, ?, NULL, NULL, ?, ?, 0, ?, ?)",
                 (f"note {i}", text, i, i, state, item))
        ex("INSERT INTO itemSearch (rowid, title, text) VALUES (?, ?, ?)", (cur.lastrowid, f"note {i}", text))
        parent = h
        if i % batch == 0 or i == blocks:
            ex("INSERT OR REPLACE INTO setting (key, value) VALUES ('hlc', ?)", (os.urandom(12),))
            c = time.perf_counter()
            ex("COMMIT")
            commit += time.perf_counter() - c
            if i < blocks:
                ex("BEGIN")
    total = time.perf_counter() - start
    # Python's own cost per statement, on a statement SQLite answers without touching a page.
    t = time.perf_counter()
    for _ in range(100_000):
        ex("SELECT ?", (1,)).fetchone()
    per_statement = (time.perf_counter() - t) / 100_000
    db.close()
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    os.rmdir(d)
    return total, commit, per_statement


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("database", help="a kiana database whose schema is copied (e.g. DATA_DIR/kiana.sqlite)")
    ap.add_argument("--blocks", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="blocks per transaction (a sync batch is at most 1,000)")
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    if not os.path.exists(a.database):
        ap.error(f"{a.database}: no such database")
    if a.blocks < 1 or a.batch < 1 or a.runs < 1:
        ap.error("--blocks, --batch and --runs must be positive")
    statements = schema(a.database)
    per_block = []
    for r in range(a.runs):
        total, commit, stmt = run(statements, a.blocks, a.batch)
        per_block.append(total / a.blocks * 1e6)
        print(f"run {r + 1}: {a.blocks} single-entry blocks, {a.batch} per transaction: {total:.1f} s, "
              f"{total / a.blocks * 1e6:.0f} us per block ({commit / a.blocks * 1e6:.0f} us of it in COMMIT); "
              f"Python's own cost {stmt * 1e6:.1f} us per statement (about 14 statements per block)")
    if a.runs > 1:
        print(f"per block: median {statistics.median(per_block):.0f} us, spread {min(per_block):.0f}-{max(per_block):.0f} us")


if __name__ == "__main__":
    main()
