#!/usr/bin/env python3
"""Backs up and restores a generated dataset of SIZE GiB through a running
`vaultline serve`, and fails when a vaultline process's peak RSS exceeds the
limit. Also prints throughput and, with an S3 repository, S3 requests per GiB.
Driven by scripts/memory-check.sh, which starts the stack."""
import argparse
import json
import os
import re
import shutil
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from bench import du, proc_peak_mib, reset_peak, run  # noqa: E402

MIB = 1 << 20


def generate(root, gib):
    """Half incompressible, half text, in 256 MiB files plus 2,000 small ones;
    deterministic for a given size, and kept for the next run."""
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "small"))
    total, i = gib << 30, 0
    rng = __import__("random").Random(gib)
    line = b"".join(b"%08d the quick brown fox jumps over the lazy dog\n" % n for n in range(4096))
    while total > 0:
        size = min(256 * MIB, total)
        with open(os.path.join(root, f"part-{i:03d}.bin"), "wb") as f:
            left = size
            while left > 0:
                n = min(8 * MIB, left)
                block = rng.randbytes(n) if i % 2 == 0 else (line * (n // len(line) + 1))[:n]
                if i % 2:
                    block = bytes([i % 251]) + block[1:]
                f.write(block)
                left -= n
        total -= size
        i += 1
    for n in range(2000):
        with open(os.path.join(root, "small", f"file-{n:04d}.txt"), "w") as f:
            f.write(f"small file {n}\n" * (n % 50 + 1))
    open(done, "w").close()


def generate_files(root, count):
    """COUNT entries: directories of 1,000 tiny files each (a mail spool, a
    node_modules): what restore's memory must not grow with."""
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return
    shutil.rmtree(root, ignore_errors=True)
    per_dir = 1000
    for d in range((count + per_dir) // (per_dir + 1)):
        folder = os.path.join(root, f"dir-{d:05d}")
        os.makedirs(folder)
        for n in range(per_dir):
            with open(os.path.join(folder, f"file-{n:04d}"), "w") as f:
                f.write(f"{d} {n}\n")
    open(done, "w").close()


def s3_requests(admin):
    try:
        body = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for m in re.finditer(r'^vaultline_s3_requests_total\{([^}]*)\} (\S+)$', body, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[labels["operation"]] = out.get(labels["operation"], 0) + float(m.group(2))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vl", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--serve-pid", type=int, required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("--gib", type=int, default=4)
    p.add_argument("--limit-mib", type=int, default=256)
    p.add_argument("--files", type=int, default=0,
                   help="instead of SIZE GiB, a tree of this many tiny files")
    a = p.parse_args()

    if a.files:
        data = os.path.join(a.work, f"data-{a.files}-files")
        print(f"==> dataset: {a.files} files in {data}")
        generate_files(data, a.files)
    else:
        data = os.path.join(a.work, f"data-{a.gib}g")
        print(f"==> dataset: {a.gib} GiB in {data}")
        generate(data, a.gib)
    size = du(data) - 0
    run([a.vl, "tenant", "create", "mem"])
    run([a.vl, "source", "add", "mem/data", "--path", data])

    before = s3_requests(a.admin)
    reset_peak(a.serve_pid)
    wall, _, cli_peak, out = run([a.vl, "backup", "mem/data", "--wait", "--timeout", "7200"])
    serve_peak = proc_peak_mib(a.serve_pid)
    snapshot = re.search(r"snapshot (\S+) verified", out).group(1)
    after = s3_requests(a.admin)
    requests = {k: after.get(k, 0) - before.get(k, 0) for k in after}

    target = os.path.join(a.work, "restored")
    shutil.rmtree(target, ignore_errors=True)
    r_wall, _, r_peak, _ = run([a.vl, "restore", snapshot, "--to", target])
    shutil.rmtree(target, ignore_errors=True)

    gib = size / (1 << 30)
    rows = [
        ("backup (vaultline serve, every stage)", wall, serve_peak),
        ("backup (vaultline backup --wait, the CLI)", wall, cli_peak),
        ("restore (vaultline restore)", r_wall, r_peak),
    ]
    what = f"{a.files} files, " if a.files else ""
    print(f"\n{what}{gib:.2f} GiB, limit {a.limit_mib} MiB per process")
    print(f"{'step':<45} {'wall s':>8} {'MiB/s':>8} {'peak MiB':>9}")
    for name, w, peak in rows:
        print(f"{name:<45} {w:>8.1f} {size / MIB / w:>8.0f} {peak:>9.0f}")
    if requests:
        per_gib = {k: round(v / gib, 1) for k, v in sorted(requests.items()) if v}
        print(f"S3 requests during the backup, per GiB: {json.dumps(per_gib)}"
              f" (total {sum(requests.values()) / gib:.0f}/GiB)")
    over = [(n, p) for n, _, p in rows if p > a.limit_mib]
    if over:
        sys.exit(f"FAIL: over {a.limit_mib} MiB: {over}")
    print("OK: every vaultline process stayed under the limit")


if __name__ == "__main__":
    main()
