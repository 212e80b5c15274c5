#!/usr/bin/env python3
"""Runs the benchmark: vaultline, restic, borg and the raw pipe on the same
dataset in the same run, and writes a markdown report. Driven by bench.sh,
which installs the tools and starts the single-node stack."""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def run(cmd, cwd=None, env=None, shell=False):
    """Runs a command; returns (wall s, cpu s, peak RSS MiB, stdout)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, shell=shell, stdout=subprocess.PIPE,
                         executable="/bin/bash" if shell else None)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({os.waitstatus_to_exitcode(status)}): {cmd}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.decode()


def proc_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_peak_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def stage_seconds(admin):
    """Sum of handler time per stage so far, from vaultline's /metrics."""
    import urllib.request
    body = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    out = {}
    for m in re.finditer(r'^vaultline_stage_handle_duration_seconds_sum\{([^}]*)\} (\S+)$', body, re.M):
        stage = re.search(r'stage="(\w+)"', m.group(1)).group(1)
        out[stage] = out.get(stage, 0.0) + float(m.group(2))
    return out


class FreshFilesystem:
    """Each restore goes into a newly made ext4 filesystem (a sparse image,
    loop-mounted), so no tool pays for the one before it: ext4 skips inodes
    freed in the last seconds one by one, and the tree every repetition
    deletes made whichever tool restored first after a deletion up to 3×
    slower (README, Benchmark). Needs root; otherwise a plain directory."""

    def __init__(self, work, dataset_bytes):
        self.image = os.path.join(work, "restore.img")
        self.target = os.path.join(work, "restore-target")
        self.size = 2 * dataset_bytes + (1 << 30)
        self.mounted = False
        self.available = os.geteuid() == 0 and shutil.which("mkfs.ext4") is not None

    def make(self):
        self.remove()
        os.makedirs(self.target)
        if not self.available:
            return self.target
        with open(self.image, "wb") as f:
            f.truncate(self.size)
        # Inode tables and journal written now, not by a kernel thread
        # during the restore.
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                        self.image], check=True)
        if subprocess.run(["mount", "-o", "loop", self.image, self.target]).returncode != 0:
            print("    cannot loop-mount; restoring into a plain directory", flush=True)
            self.available = False
            os.remove(self.image)
            return self.target
        self.mounted = True
        return self.target

    def remove(self):
        # Also a mount an interrupted run left behind.
        if self.mounted or os.path.ismount(self.target):
            subprocess.run(["umount", self.target], check=True)
            self.mounted = False
        if os.path.exists(self.image):
            os.remove(self.image)
        shutil.rmtree(self.target, ignore_errors=True)

    def describe(self):
        return ("into a new ext4 filesystem each time (a loop-mounted sparse image)" if self.available
                else "into an empty directory on the work filesystem (not root: no fresh filesystem)")


def du(path):
    total = 0
    for dp, _, fs in os.walk(path):
        for f in fs:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except FileNotFoundError:
                pass
    return total


class Vaultline:
    name = "vaultline"

    def __init__(self, a):
        self.a, self.vl = a, [a.vl, "--config", a.config]
        self.stages = []
        self.peaks = {"serve": [], "CLI (restore)": []}

    def measured(self, args):
        pid = self.a.serve_pid
        reset_peak(pid)
        cpu0 = proc_cpu(pid)
        before = stage_seconds(self.a.admin) if args[0] == "backup" else None
        wall, cpu, rss, out = run(self.vl + args)
        serve = proc_peak_mib(pid)
        self.peaks["serve"].append(serve)
        if args[0] == "restore":
            self.peaks["CLI (restore)"].append(rss)
        if before is not None:
            after = stage_seconds(self.a.admin)
            self.last_stages = {k: after[k] - before.get(k, 0.0) for k in after}
        print(f"    vaultline {args[0]}: CLI peak {rss:.0f} MiB, serve peak {serve:.0f} MiB", flush=True)
        return wall, cpu + proc_cpu(pid) - cpu0, max(rss, serve), out

    def setup(self, rep):
        self.tenant = f"bench{rep}-{int(time.time())}"
        run(self.vl + ["tenant", "create", self.tenant])
        run(self.vl + ["source", "add", f"{self.tenant}/data", "--path", self.a.data])

    def backup(self, label):
        measured = self.measured(["backup", f"{self.tenant}/data", "--wait", "--timeout", "3600"])
        if label == "full":
            self.stages.append(self.last_stages)
        return measured

    def restore(self, target):
        out = run(self.vl + ["snapshots", "--tenant", self.tenant, "--json"])[3]
        snap = json.loads(out)[0]["id"]
        return self.measured(["restore", snap, "--to", target])

    def size(self):
        return du(os.path.join(self.a.work, "repository", "tenants", self.tenant))


class Restic:
    name = "restic"

    def __init__(self, a):
        self.a = a

    def env(self):
        return dict(os.environ, RESTIC_REPOSITORY=self.repo, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=self.repo + "-cache")

    def setup(self, rep):
        self.repo = os.path.join(self.a.work, f"restic{rep}")
        shutil.rmtree(self.repo, ignore_errors=True)
        shutil.rmtree(self.repo + "-cache", ignore_errors=True)
        run(["restic", "init", "--quiet"], env=self.env())

    def backup(self, label):
        return run(["restic", "backup", "--quiet", "data"], cwd=self.a.work, env=self.env())

    def restore(self, target):
        return run(["restic", "restore", "latest", "--quiet", "--target", target], env=self.env())

    def size(self):
        return du(self.repo)


class Borg:
    name = "borg"

    def __init__(self, a):
        self.a = a

    def env(self):
        return dict(os.environ, BORG_PASSPHRASE="bench", BORG_BASE_DIR=self.repo + "-base",
                    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

    def setup(self, rep):
        self.repo = os.path.join(self.a.work, f"borg{rep}")
        shutil.rmtree(self.repo, ignore_errors=True)
        shutil.rmtree(self.repo + "-base", ignore_errors=True)
        run(["borg", "init", "--encryption", "repokey", self.repo], env=self.env())

    def backup(self, label):
        return run(["borg", "create", "--compression", "zstd,3", f"{self.repo}::{label}", "data"],
                   cwd=self.a.work, env=self.env())

    def restore(self, target):
        os.makedirs(target, exist_ok=True)
        return run(["borg", "extract", f"{self.repo}::incremental"], cwd=target, env=self.env())

    def size(self):
        return du(self.repo)


class RawPipe:
    """tar | zstd -3 -T0 | age: the physical limit (no dedup, no incremental)."""
    name = "raw pipe"

    def __init__(self, a):
        self.a = a
        self.key = os.path.join(a.work, "raw.key")
        if not os.path.exists(self.key):
            run(["age-keygen", "-o", self.key])
        self.recipient = run(["age-keygen", "-y", self.key])[3].strip()
        self.archive = os.path.join(a.work, "raw.tar.zst.age")

    def setup(self, rep):
        pass

    def backup(self, label):
        if label == "incremental":
            return None
        measured = run(f"tar -C {self.a.work} -cf - data | zstd -3 -T0 -q | age -r {self.recipient} | sha256sum",
                       shell=True)
        # The archive for the restore and the size, not timed.
        run(f"tar -C {self.a.work} -cf - data | zstd -3 -T0 -q | age -r {self.recipient} > {self.archive}",
            shell=True)
        return measured

    def restore(self, target):
        os.makedirs(target, exist_ok=True)
        return run(f"age -d -i {self.key} < {self.archive} | zstd -d -q | tar -x -C {target}", shell=True)

    def size(self):
        return os.path.getsize(self.archive)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--base", required=True, help="the generated dataset")
    p.add_argument("--vl", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--serve-pid", type=int, required=True)
    p.add_argument("--mutate", required=True, help="command that mutates $WORK/data, printing bytes changed")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", required=True)
    p.add_argument("--admin", required=True, help="vaultline's admin address, for /metrics")
    p.add_argument("--tools", default="",
                   help="comma-separated subset of raw,vaultline,restic,borg to run (default: all)")
    p.add_argument("--garage", action="store_true",
                   help="only full backups of vaultline (the stack's repository is Garage); appends to --out")
    a = p.parse_args()
    a.data = os.path.join(a.work, "data")
    if a.garage:
        return garage(a)
    tools = [RawPipe(a), Vaultline(a), Restic(a), Borg(a)]
    results = {t.name: {k: [] for k in ("full", "incremental", "restore", "size_full", "size_incr")} for t in tools}
    if a.tools:
        wanted = {"raw": "raw pipe"}
        names = {wanted.get(n, n) for n in a.tools.split(",")}
        tools = [t for t in tools if t.name in names]
    changed = []
    fresh = FreshFilesystem(a.work, du(a.base))
    a.restore_where = fresh.describe
    for rep in range(a.reps):
        shutil.rmtree(a.data, ignore_errors=True)
        subprocess.run(["cp", "-a", a.base, a.data], check=True)
        changed_this = None
        for tool in tools:
            # Each tool starts from the same pristine copy.
            if changed_this is not None:
                shutil.rmtree(a.data)
                subprocess.run(["cp", "-a", a.base, a.data], check=True)
            subprocess.run(f"cat $(find {a.data} -type f) > /dev/null", shell=True, check=True)
            tool.setup(rep)
            r = results[tool.name]
            r["full"].append(tool.backup("full"))
            r["size_full"].append(tool.size())
            out = subprocess.run(a.mutate, shell=True, check=True, capture_output=True, text=True).stdout
            changed_this = int(out.strip().splitlines()[-1])
            incr = tool.backup("incremental")
            if incr:
                r["incremental"].append(incr)
                r["size_incr"].append(tool.size())
            try:
                r["restore"].append(tool.restore(fresh.make()))
            finally:
                fresh.remove()
            print(f"rep {rep + 1} {tool.name}: " + ", ".join(
                f"{k} {v[-1][0]:.2f}s" for k, v in r.items() if v and isinstance(v[-1], tuple)), flush=True)
        changed.append(changed_this)
    latencies = latency(a)
    report(a, results, statistics.median(changed), tools, latencies)


def garage(a):
    """The same full backup with the repository in Garage (S3), appended to the report."""
    v = Vaultline(a)
    walls = []
    for rep in range(a.reps):
        shutil.rmtree(a.data, ignore_errors=True)
        subprocess.run(["cp", "-a", a.base, a.data], check=True)
        subprocess.run(f"cat $(find {a.data} -type f) > /dev/null", shell=True, check=True)
        v.setup(rep)
        walls.append(v.backup("full"))
        print(f"rep {rep + 1} vaultline → Garage: full {walls[-1][0]:.2f}s", flush=True)
    with open(a.out) as f:
        text = f.read()
    line = (f"The same full backup with the repository in Garage (S3 on loopback, a fresh tenant each "
            f"time): {med(walls, 0):.2f} s wall ({med(walls, 1):.1f} s CPU, serve peak "
            f"{max(w[2] for w in walls):.0f} MiB), median of {a.reps}; per stage: "
            f"{stage_line(v.stages)}.")
    text = text.replace(GARAGE_PENDING, line)
    with open(a.out, "w") as f:
        f.write(text)
    print(line)


GARAGE_PENDING = "The same full backup against Garage (S3): not measured in this run."


def stage_line(stages):
    if not stages:
        return "—"
    names = ["extractor", "packager", "uploader", "verifier", "auditor"]
    return ", ".join(f"{n} {statistics.median(s.get(n, 0.0) for s in stages):.2f} s" for n in names)


def latency(a, runs=20):
    """Trigger → verified for a 1 MiB directory, as `vaultline backup --wait` sees it."""
    small = os.path.join(a.work, "small")
    shutil.rmtree(small, ignore_errors=True)
    os.makedirs(small)
    for i in range(16):
        with open(os.path.join(small, f"f{i}.txt"), "w") as f:
            f.write((f"line {i} of the small source\n" * 3000)[:65536])
    vl = [a.vl, "--config", a.config]
    tenant = f"latency-{int(time.time())}"
    run(vl + ["tenant", "create", tenant])
    run(vl + ["source", "add", f"{tenant}/small", "--path", small])
    walls = []
    for i in range(runs):
        with open(os.path.join(small, "changing.txt"), "w") as f:
            f.write(f"run {i}\n")
        walls.append(run(vl + ["backup", f"{tenant}/small", "--wait", "--timeout", "60"])[0])
    print(f"trigger -> verified, 1 MiB: median {statistics.median(walls):.3f}s", flush=True)
    return walls


def med(samples, i):
    return statistics.median(s[i] for s in samples) if samples else None


def report(a, results, changed, tools, latencies):
    def cell(samples):
        if not samples:
            return "—"
        return f"{med(samples, 0):.2f} s ({med(samples, 1):.1f} s CPU, {max(s[2] for s in samples):.0f} MiB)"

    size = lambda v: f"{statistics.median(v) / (1 << 20):.0f} MiB" if v else "—"
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `scripts/bench.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores, dataset {du(a.base) / (1 << 20):.0f} MiB, mutation {changed / (1 << 20):.1f} MiB, "
        f"median of {a.reps} (peak RSS: the largest).",
        "",
        "Each cell: wall time (CPU time, peak RSS). vaultline's figures are the `vaultline serve` process "
        "(every stage) plus the CLI; nats-server and PostgreSQL are not counted. Every tool restores "
        f"{a.restore_where()}.",
        "",
        "| tool | full backup | incremental | restore | size after full | after incremental | growth / changed |",
        "|---|---|---|---|---|---|---|",
    ]
    vaultline = next((t for t in tools if t.name == "vaultline"), None)
    for t in tools:
        r = results[t.name]
        growth = "—"
        if r["size_incr"]:
            g = statistics.median(i - f for i, f in zip(r["size_incr"], r["size_full"]))
            growth = f"{g / changed:.2f}×"
        lines.append(f"| {t.name} | {cell(r['full'])} | {cell(r['incremental'])} | {cell(r['restore'])} | "
                     f"{size(r['size_full'])} | {size(r['size_incr'])} | {growth} |")
    v, rs, raw = results["vaultline"], results["restic"], results["raw pipe"]
    ratio = lambda x, y, i=0: f"{med(x, i) / med(y, i):.2f}×" if x and y else "—"
    lines += [
        "",
        "| ratio (wall) | vaultline / raw pipe | vaultline / restic | target |",
        "|---|---|---|---|",
        f"| full backup | {ratio(v['full'], raw['full'])} | {ratio(v['full'], rs['full'])} | ≤ 1.2× raw |",
        f"| incremental | — | {ratio(v['incremental'], rs['incremental'])} | ≤ 0.5× restic |",
        f"| restore | {ratio(v['restore'], raw['restore'])} | {ratio(v['restore'], rs['restore'])} | ≤ 1.1× raw |",
        "",
        f"Trigger → verified for a 1 MiB directory (`vaultline backup --wait`, CLI start-up and its 50 ms "
        f"polling included): median {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s over "
        f"{len(latencies)} runs (target ≤ 1 s).",
        "",
        "Where a full backup's time goes (sum of handler time per stage, median; stages overlap, and "
        "the packager handles several batches at once, so the sums exceed the wall time): "
        f"{stage_line(vaultline.stages if vaultline else [])}.",
        "",
        "Peak RSS of each vaultline process, largest over the run: "
        + (", ".join(f"{k} {max(v):.0f} MiB" for k, v in vaultline.peaks.items() if v) if vaultline else "—")
        + ".",
        "",
        GARAGE_PENDING,
        "",
    ]
    text = "\n".join(lines)
    with open(a.out, "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
