#!/usr/bin/env python3
"""The benchmark's dataset, deterministic from fixed seeds.

  dataset.py generate DIR --psql 'psql args' [--scale 1.0]
  dataset.py mutate DIR --psql 'psql args'

generate writes about 1 GiB (scale 1): dump.sql, a plain pg_dump of a generated
database (~45%); src/, ~20k small text files in nested directories (~30%); and
random.bin, incompressible bytes (~25%). mutate changes ~1% of it: rows
appended to the database and the dump redone, lines appended to 100 small
files, 3 MiB rewritten inside random.bin. It prints the bytes it changed.
"""
import argparse
import os
import random
import shlex
import subprocess
import sys

MiB = 1 << 20
WORDS = ("backup vault chunk pack index manifest tenant source snapshot verify "
         "restore retention schedule catalog stream consumer subject header "
         "stage packager uploader extractor auditor scheduler repository").split()


def psql(args, sql):
    subprocess.run(shlex.split(args) + ["-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True)


def dump(args, path):
    with open(path, "wb") as out:
        subprocess.run(["pg_dump" if not args.pg_dump else args.pg_dump]
                       + shlex.split(args.conn) + ["-Fp", "bench"], stdout=out, check=True)


def generate(args):
    root = args.dir
    os.makedirs(root, exist_ok=True)
    events = int(2_300_000 * args.scale)
    # The database: events (text rows), users, and a bytea table.
    psql(args.psql, "DROP DATABASE IF EXISTS bench")
    psql(args.psql, "CREATE DATABASE bench")
    db = args.psql + " -d bench"
    psql(db, f"""
        CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL, kind text NOT NULL, payload text NOT NULL);
        INSERT INTO events SELECT i, timestamptz '2026-01-01' + i * interval '1 second',
            (ARRAY['backup','restore','verify','expire'])[1 + i % 4],
            md5(i::text) || ' ' || md5((i * 7)::text) || ' ' || repeat(chr(97 + i % 26), 40 + i % 50)
          FROM generate_series(1, {events}) i;
        CREATE TABLE users (id int PRIMARY KEY, name text, email text, bio text);
        INSERT INTO users SELECT i, 'user ' || i, 'user' || i || '@example.com', repeat(md5(i::text), 4)
          FROM generate_series(1, {int(150_000 * args.scale)}) i;
        CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
        INSERT INTO blobs SELECT i, decode(repeat(md5(i::text), 32), 'hex')
          FROM generate_series(1, {int(20_000 * args.scale)}) i;
    """)
    if args.db_only:
        return
    dump(args, os.path.join(root, "dump.sql"))
    # Small files: 200 directories of 100 files, ~15 KiB of source-like text each.
    rng = random.Random(1)
    lines = [f"    let {rng.choice(WORDS)}_{i} = {rng.choice(WORDS)}({rng.randrange(10**6)}); // {' '.join(rng.choices(WORDS, k=6))}\n"
             for i in range(5000)]
    files = int(20_000 * args.scale)
    for n in range(files):
        d = os.path.join(root, "src", f"module{n // 1000:02d}", f"part{(n // 100) % 10}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"file{n:05d}.rs"), "w") as f:
            f.write("".join(rng.choices(lines, k=110 + n % 40)))
    # Incompressible bytes.
    with open(os.path.join(root, "random.bin"), "wb") as f:
        rng = random.Random(2)
        for _ in range(int(256 * args.scale)):
            f.write(rng.randbytes(MiB))


def mutate(args):
    root = args.dir
    changed = 0
    db = args.psql + " -d bench"
    before = os.path.getsize(os.path.join(root, "dump.sql"))
    psql(db, "DELETE FROM events WHERE id > 10000000")
    psql(db, """INSERT INTO events SELECT i, timestamptz '2026-06-01' + i * interval '1 second', 'mutation',
                  md5(i::text) || repeat('z', 60) FROM generate_series(10000001, 10020000) i""")
    dump(args, os.path.join(root, "dump.sql"))
    changed += os.path.getsize(os.path.join(root, "dump.sql")) - before
    rng = random.Random(3)
    src = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, "src")) for f in fs)
    for path in rng.sample(src, 100):
        text = "".join(f"// mutation {rng.randrange(10**9)} {' '.join(rng.choices(WORDS, k=8))}\n" for _ in range(20))
        with open(path, "a") as f:
            f.write(text)
        changed += len(text)
    with open(os.path.join(root, "random.bin"), "r+b") as f:
        f.seek(100 * MiB)
        f.write(random.Random(4).randbytes(3 * MiB))
        changed += 3 * MiB
    print(changed)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=["generate", "mutate"])
    p.add_argument("dir")
    p.add_argument("--psql", required=True, help="psql command with connection flags")
    p.add_argument("--conn", required=True, help="connection flags for pg_dump")
    p.add_argument("--pg-dump", default="")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--db-only", action="store_true", help="generate: only (re)create the database")
    args = p.parse_args()
    generate(args) if args.action == "generate" else mutate(args)


if __name__ == "__main__":
    sys.exit(main())
