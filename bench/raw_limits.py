"""Raw limits of this machine, measured before the brokers run.

  python raw_limits.py --out FILE --scratch DIR --profile quick|full [--s3-endpoint URL --s3-bucket B]

disk: `dd` sequential 4 MiB writes with oflag=direct and with conv=fdatasync; fdatasync rate of
4 KiB appends (what a Raft log or a Kafka flush pays). tcp: loopback socket pump between two
processes. s3: boto3 PUT/GET of 1 MiB and 4 MiB objects against MinIO, sequential (latency) and with
4 concurrent requests (Skiff's default max_inflight_flushes).
"""
import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import parse


def disk(scratch, mib):
    path = os.path.join(scratch, "dd.test")
    out = {}
    for name, flag in (("seq_write_direct", "oflag=direct"), ("seq_write_fdatasync", "conv=fdatasync")):
        r = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={mib // 4}", flag],
                           capture_output=True, text=True, timeout=300)
        out[name] = parse.dd_output(r.stderr)
        os.unlink(path)
    # fdatasync rate of small appends.
    fd = os.open(os.path.join(scratch, "fsync.test"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    buf = b"x" * 4096
    n, lat = 0, []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 3.0:
        a = time.perf_counter()
        os.write(fd, buf)
        os.fdatasync(fd)
        lat.append((time.perf_counter() - a) * 1000)
        n += 1
    secs = time.perf_counter() - t0
    os.close(fd)
    os.unlink(os.path.join(scratch, "fsync.test"))
    lat.sort()
    out["fdatasync_4k"] = {"per_s": n / secs, "p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99)]}
    return out


def _sink(port_q, seconds):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port_q.put(s.getsockname()[1])
    c, _ = s.accept()
    buf = bytearray(1 << 20)
    total = 0
    while True:
        n = c.recv_into(buf)
        if not n:
            break
        total += n
    port_q.put(total)


def tcp(seconds):
    q = mp.Queue()
    p = mp.Process(target=_sink, args=(q, seconds))
    p.start()
    port = q.get(timeout=10)
    s = socket.create_connection(("127.0.0.1", port))
    chunk = b"\0" * (1 << 20)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s.sendall(chunk)
    s.close()
    total = q.get(timeout=30)
    secs = time.perf_counter() - t0
    p.join(10)
    return {"loopback_mb_per_s": total / 1048576 / secs, "seconds": secs}


def s3(endpoint, bucket, count):
    import boto3
    from botocore.config import Config
    cli = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                       config=Config(max_pool_connections=8, retries={"max_attempts": 1}))
    out = {}
    for size_mib in (1, 4):
        body = os.urandom(size_mib << 20)
        keys = [f"raw/{size_mib}m/{i}" for i in range(count)]
        res = {}
        for op in ("put", "get"):
            lat = []
            t0 = time.perf_counter()
            for k in keys:
                a = time.perf_counter()
                if op == "put":
                    cli.put_object(Bucket=bucket, Key=k, Body=body)
                else:
                    cli.get_object(Bucket=bucket, Key=k)["Body"].read()
                lat.append((time.perf_counter() - a) * 1000)
            secs = time.perf_counter() - t0
            lat.sort()
            res[op] = {"mb_per_s": count * size_mib / secs, "p50_ms": statistics.median(lat),
                       "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}

            def one(k, op=op):
                if op == "put":
                    cli.put_object(Bucket=bucket, Key=k + "c", Body=body)
                else:
                    cli.get_object(Bucket=bucket, Key=k)["Body"].read()
            t0 = time.perf_counter()
            with ThreadPoolExecutor(4) as ex:
                list(ex.map(one, keys))
            res[op]["mb_per_s_x4"] = count * size_mib / (time.perf_counter() - t0)
        out[f"{size_mib}MiB"] = res
        for k in keys:
            cli.delete_object(Bucket=bucket, Key=k)
            cli.delete_object(Bucket=bucket, Key=k + "c")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--scratch", required=True)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--s3-endpoint")
    ap.add_argument("--s3-bucket")
    a = ap.parse_args()
    full = a.profile == "full"
    res = {"cpus": os.cpu_count()}
    res["disk"] = disk(a.scratch, 1024 if full else 512)
    res["tcp"] = tcp(5 if full else 3)
    if a.s3_endpoint:
        res["s3"] = s3(a.s3_endpoint, a.s3_bucket, 40 if full else 16)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
