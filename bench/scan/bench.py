#!/usr/bin/env python3
"""bench/scan: cutover's secret scanner vs secretlint 13 (recommended preset) on one corpus.

The corpus is text already on the machine (/usr/include, /usr/share) with credentials of known
formats planted at recorded positions (manifest.json). Both tools scan the same directory in the
same run; we print MB/s, recall and precision for each. A finding is a true positive when it is in
a planted file on a planted line; findings elsewhere are false positives (the base corpus is
assumed clean, and whatever it really holds counts against both tools alike). Recall is computed
per format and, for the comparison, only on formats both tools claim to cover.
"""
import argparse
import json
import os
import random
import shutil
import string
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALNUM = string.ascii_letters + string.digits


def rand(rng, n, alphabet=ALNUM):
    return "".join(rng.choice(alphabet) for _ in range(n))


def pem_body(rng, lines):
    # A DER RSA key in base64 starts with MII...; secretlint checks that magic.
    body = "MIIEowIBAAKCAQEA" + rand(rng, 64 * lines - 16, ALNUM + "+/")
    return "\n".join(body[i:i + 64] for i in range(0, len(body), 64))


# name -> (generator of (line text, secret), covered by secretlint's recommended preset)
def formats(rng):
    return {
        # secretlint's recommended preset reports access key IDs only with enableIDScanRule.
        "aws-access-key-id": (lambda: f'aws_access_key_id = "AKIA{rand(rng, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")}"', False),
        "aws-secret-access-key": (lambda: f'aws_secret_access_key = "{rand(rng, 40, ALNUM + "/+")}"', True),
        "github-pat": (lambda: f'GITHUB_TOKEN = "ghp_{rand(rng, 36)}"', True),
        "github-fine-grained-pat": (lambda: f"token: github_pat_{rand(rng, 22)}_{rand(rng, 59)}", True),
        "slack-token": (lambda: f"SLACK_BOT_TOKEN=xoxb-{rand(rng, 12, string.digits)}-{rand(rng, 13, string.digits)}-{rand(rng, 24)}", True),
        "slack-webhook": (lambda: f'url = "https://hooks.slack.com/services/T{rand(rng, 10, string.ascii_uppercase + string.digits)}/B{rand(rng, 10, string.ascii_uppercase + string.digits)}/{rand(rng, 24)}"', True),
        "private-key": (lambda: "-----BEGIN RSA PRIVATE KEY-----\n" + pem_body(rng, 12) + "\n-----END RSA PRIVATE KEY-----", True),
        "sendgrid-api-key": (lambda: f"SENDGRID_API_KEY=SG.{rand(rng, 22, ALNUM + '_-')}.{rand(rng, 43, ALNUM + '_-')}", True),
        "npm-token": (lambda: f"//npm.internal.example/:_authToken=npm_{rand(rng, 36)}", True),
        "shopify-token": (lambda: f'SHOPIFY_TOKEN = "shpat_{rand(rng, 32, "0123456789abcdef")}"', True),
        "url-credentials": (lambda: f'DATABASE_URL = "postgres://app:{rand(rng, 16)}@db.internal:5432/app"', True),
        "stripe-secret-key": (lambda: f'stripe.api_key = "sk_live_{rand(rng, 24)}"', True),
        "gitlab-pat": (lambda: f"GITLAB_TOKEN=glpat-{rand(rng, 20, ALNUM + '_-')}", True),
        "google-api-key": (lambda: f'const GOOGLE_KEY = "AIza{rand(rng, 35, ALNUM + "_-")}";', False),
        "jwt": (lambda: "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ" + rand(rng, 40, ALNUM + "_-") + "." + rand(rng, 43, ALNUM + "_-"), False),
    }


def is_text(path):
    try:
        with open(path, "rb") as f:
            head = f.read(8000)
    except OSError:
        return False
    return b"\0" not in head


def build_corpus(out, target_bytes):
    """Copies text files (no NUL in the first 8000 bytes, <= 1 MiB, not compressed) from
    /usr/include, then /usr/share, in a stable order until target_bytes."""
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    files, seen, total = [], set(), 0
    for base in ("/usr/include", "/usr/share"):
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if total >= target_bytes:
                    return files
                src = os.path.join(dirpath, name)
                rel = os.path.relpath(src, "/usr").replace(os.sep, "/")
                if rel in seen or os.path.islink(src) or not os.path.isfile(src):
                    continue
                size = os.path.getsize(src)
                if size == 0 or size > 1 << 20 or name.endswith((".gz", ".xz", ".bz2")) or not is_text(src):
                    continue
                dst = os.path.join(out, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                try:
                    shutil.copyfile(src, dst)
                except OSError:
                    continue
                seen.add(rel)
                files.append((rel, size))
                total += size
    return files


def plant(out, files, plants_per_format, seed):
    """Inserts credentials; returns the manifest with final line numbers."""
    rng = random.Random(seed + 1)
    gens = formats(rng)
    picks = rng.sample(range(len(files)), min(len(files), plants_per_format * len(gens)))
    by_file = {}
    k = 0
    for fmt, (gen, common) in gens.items():
        for _ in range(plants_per_format):
            by_file.setdefault(files[picks[k]][0], []).append((fmt, common, gen()))
            k += 1
    manifest = []
    for rel, plants in by_file.items():
        path = os.path.join(out, rel)
        with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().split("\n")
        spots = sorted(rng.randrange(0, len(lines) + 1) for _ in plants)
        new_lines, prev = [], 0
        for (fmt, common, text), spot in zip(plants, spots):
            new_lines.extend(lines[prev:spot])
            prev = spot
            start = len(new_lines) + 1
            new_lines.extend(text.split("\n"))
            manifest.append({"format": fmt, "common": common, "file": rel, "line": start,
                             "end_line": len(new_lines)})
        new_lines.extend(lines[prev:])
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write("\n".join(new_lines))
    return manifest


def score(findings, manifest):
    """findings: list of (file, line). Returns (tp_plants set, tp findings, fp findings)."""
    index = {}
    for i, m in enumerate(manifest):
        index.setdefault(m["file"], []).append(i)
    found, tp, fp = set(), 0, 0
    for f, line in findings:
        hit = None
        for i in index.get(f, []):
            if manifest[i]["line"] <= line <= manifest[i]["end_line"]:
                hit = i
                break
        if hit is None:
            fp += 1
        else:
            tp += 1
            found.add(hit)
    return found, tp, fp


def run_cutover(binary, corpus, threads):
    t0 = time.monotonic()
    p = subprocess.run([binary, "scan", corpus, "--format", "json", "--mode", "report", "--threads", str(threads)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"cutover scan failed ({p.returncode}): {p.stderr.decode()[:2000]}")
    return [(f["File"], f["StartLine"]) for f in json.loads(p.stdout)], dt


def install_secretlint(peer_dir):
    bin_path = os.path.join(peer_dir, "node_modules", ".bin", "secretlint")
    if not os.path.exists(bin_path):
        os.makedirs(peer_dir, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", peer_dir,
                        "secretlint@13", "@secretlint/secretlint-rule-preset-recommend@13"], check=True)
    with open(os.path.join(peer_dir, ".secretlintrc.json"), "w") as f:
        json.dump({"rules": [{"id": "@secretlint/secretlint-rule-preset-recommend"}]}, f)
    ver = subprocess.run([bin_path, "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    return bin_path, ver


def run_secretlint(bin_path, peer_dir, corpus):
    t0 = time.monotonic()
    p = subprocess.run([bin_path, "**/*", "--format", "json", "--secretlintrc",
                        os.path.join(peer_dir, ".secretlintrc.json"), "--no-color"],
                       cwd=corpus, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                       env={**os.environ, "NODE_OPTIONS": "--max-old-space-size=4096"})
    dt = time.monotonic() - t0
    if p.returncode not in (0, 1):
        sys.exit(f"secretlint failed ({p.returncode}): {p.stderr.decode()[:2000]}")
    out = []
    for entry in json.loads(p.stdout or b"[]"):
        rel = os.path.relpath(entry["filePath"], corpus).replace(os.sep, "/")
        for m in entry.get("messages", []):
            out.append((rel, m["loc"]["start"]["line"]))
    return out, dt


def report(name, findings, dt, size, manifest):
    found, tp, fp = score(findings, manifest)
    common = [i for i, m in enumerate(manifest) if m["common"]]
    rec_all = len(found) / len(manifest)
    rec_common = len([i for i in common if i in found]) / len(common)
    prec = tp / (tp + fp) if tp + fp else 1.0
    mbs = size / dt / 1e6
    print(f"{name:<28} {dt:8.2f} s {mbs:9.1f} MB/s  recall(common) {rec_common:6.1%}  "
          f"recall(all) {rec_all:6.1%}  precision {prec:6.1%}  ({tp} tp, {fp} fp)")
    per = {}
    for i, m in enumerate(manifest):
        per.setdefault(m["format"], [0, 0])
        per[m["format"]][1] += 1
        if i in found:
            per[m["format"]][0] += 1
    return {"mbs": mbs, "recall_common": rec_common, "precision": prec, "per_format": per, "fp": fp}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cutover", default=os.path.join(ROOT, "build/release/src/cli/cutover"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build/bench-scan"))
    ap.add_argument("--megabytes", type=int, default=100)
    ap.add_argument("--plants", type=int, default=20, help="credentials planted per format")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--skip-peer", action="store_true")
    a = ap.parse_args()

    corpus = os.path.join(a.work, "corpus")
    print(f"building a {a.megabytes} MB corpus from /usr/include and /usr/share in {corpus} ...")
    files = build_corpus(corpus, a.megabytes * 1_000_000)
    manifest = plant(corpus, files, a.plants, a.seed)
    with open(os.path.join(a.work, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    size = sum(os.path.getsize(os.path.join(corpus, rel)) for rel, _ in files)
    print(f"corpus: {len(files)} files, {size / 1e6:.1f} MB, {len(manifest)} planted credentials "
          f"({len(formats(random.Random(0)))} formats, {sum(m['common'] for m in manifest)} in formats both tools cover)")
    for rel, _ in files:  # warm the page cache for both tools alike
        with open(os.path.join(corpus, rel), "rb") as f:
            f.read()

    results = {}
    run_cutover(a.cutover, corpus, 1)  # warm-up (compiles the rules once, touches the files)
    best = None
    for _ in range(3):
        fnd, dt = run_cutover(a.cutover, corpus, 1)
        best = (fnd, dt) if best is None or dt < best[1] else best
    results["cutover-1"] = report("cutover (1 thread)", best[0], best[1], size, manifest)
    fnd, dt = run_cutover(a.cutover, corpus, 0)
    results["cutover-all"] = report(f"cutover ({os.cpu_count()} threads)", fnd, dt, size, manifest)
    if not a.skip_peer:
        peer_dir = os.path.join(a.work, "peer")
        bin_path, ver = install_secretlint(peer_dir)
        fnd, dt = run_secretlint(bin_path, peer_dir, corpus)
        results["secretlint"] = report(f"secretlint {ver}", fnd, dt, size, manifest)
        c, s = results["cutover-1"], results["secretlint"]
        print(f"throughput ratio (cutover 1 thread / secretlint): {c['mbs'] / s['mbs']:.1f}x")
        print(f"recall on common formats: cutover {c['recall_common']:.1%} vs secretlint {s['recall_common']:.1%}")
        print("per format (found/planted):  cutover  secretlint")
        for fmt, (n, total) in c["per_format"].items():
            print(f"  {fmt:<26} {n:>3}/{total:<5} {s['per_format'][fmt][0]:>3}/{total}")
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
