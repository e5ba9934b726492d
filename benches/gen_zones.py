#!/usr/bin/env python3
"""Writes the benchmark's zones and query files into OUT_DIR (see benches/README.md).

Zones (served by knotd):
  cluster.local  NAMESPACES x SERVICES services `svc-NN.ns-NNN.svc.cluster.local` (A only, TTL 30
                 like kube-dns), SOA MINIMUM 5 so NXDOMAIN and NODATA are cached for 5 s.
  test           an internet stand-in: `host-NNNN.test` with A and (for even N) AAAA of different
                 TTLs, `cdn-NNNN.test` CNAMEs to `edge-NNNN.test` which has an A and no AAAA, and
                 wildcards `*.mem.test` (memory fill) and `*.miss.test` (distinct cache misses).

Query files (dnsperf format, `name TYPE` per line, shuffled with a fixed seed):
  hot.txt        every service, host and cdn name, A and AAAA: the cache-hot set.
  positive.txt   the hot set's hosts that have both an A and an AAAA.
  search.txt     the ndots:5 search-path walk of a pod: for each name, the three search-list
                 expansions (NXDOMAIN) and then the name itself, for A and then AAAA.
"""

import argparse
import os
import random


def write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines))
        f.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--namespaces", type=int, default=100)
    p.add_argument("--services", type=int, default=20, help="services per namespace")
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--cdns", type=int, default=200)
    p.add_argument("--search-names", type=int, default=500, help="names walked in search.txt")
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    rng = random.Random(8)

    cluster = [
        "$ORIGIN cluster.local.",
        "$TTL 30",
        "@ 30 IN SOA ns.cluster.local. hostmaster.cluster.local. 1 3600 600 86400 5",
        "@ 30 IN NS ns",
        "ns 30 IN A 127.0.1.1",
    ]
    services = []
    for ns in range(args.namespaces):
        for svc in range(args.services):
            name = f"svc-{svc:02d}.ns-{ns:03d}.svc"
            cluster.append(f"{name} 30 IN A 10.96.{ns % 256}.{svc % 256}")
            services.append(f"{name}.cluster.local")
    write(os.path.join(args.out_dir, "cluster.local.zone"), cluster)

    test = [
        "$ORIGIN test.",
        "$TTL 300",
        "@ 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60",
        "@ 300 IN NS ns",
        "ns 300 IN A 127.0.1.1",
        # Every name under these exists: each distinct query is a cache miss that succeeds.
        "*.mem.test. 3600 IN A 192.0.2.7",
        "*.miss.test. 60 IN A 192.0.2.8",
    ]
    a_ttls = [60, 300, 3600]
    aaaa_ttls = [30, 120, 1800]
    hosts = []
    for i in range(args.hosts):
        name = f"host-{i:04d}"
        test.append(f"{name} {a_ttls[i % 3]} IN A 198.18.{i // 256 % 256}.{i % 256}")
        if i % 2 == 0:
            test.append(f"{name} {aaaa_ttls[i % 3]} IN AAAA 2001:db8::{i:x}")
        hosts.append(f"{name}.test")
    cdns = []
    for i in range(args.cdns):
        test.append(f"cdn-{i:04d} 300 IN CNAME edge-{i:04d}")
        test.append(f"edge-{i:04d} 60 IN A 198.19.{i // 256 % 256}.{i % 256}")
        cdns.append(f"cdn-{i:04d}.test")
    write(os.path.join(args.out_dir, "test.zone"), test)

    hot = [f"{n} {t}" for n in services + hosts + cdns for t in ("A", "AAAA")]
    rng.shuffle(hot)
    write(os.path.join(args.out_dir, "hot.txt"), hot)
    # The hot set's names whose A and AAAA both exist: no NODATA half caps their pair at 5 s.
    both = {f"host-{i:04d}.test" for i in range(0, args.hosts, 2)}
    write(os.path.join(args.out_dir, "positive.txt"), [q for q in hot if q.split()[0] in both])

    # A pod in namespace ns-P with ndots:5 tries every name with fewer than 5 dots against its
    # search list first; all three expansions are NXDOMAIN, then the name itself answers.
    names = services + hosts + cdns
    rng.shuffle(names)
    search = []
    for i, name in enumerate(names[: args.search_names]):
        ns = f"ns-{i % args.namespaces:03d}"
        suffixes = [f"{ns}.svc.cluster.local", "svc.cluster.local", "cluster.local"]
        for qtype in ("A", "AAAA"):
            search.extend(f"{name}.{s} {qtype}" for s in suffixes)
            search.append(f"{name} {qtype}")
    write(os.path.join(args.out_dir, "search.txt"), search)


if __name__ == "__main__":
    main()
