#!/usr/bin/env bash
# Forced certificate rotation on a converged molecule scenario, measured:
#   molecule converge -- -e etcd_pki_renew_days=400   (window > the 365 days' validity:
#   every certificate reissued)
# while node 1 writes to etcd every 0.5 s through all three endpoints (quorum) and reserves a
# lease every 5 s (each agent's watch must report the new peer). Prints the longest write gap,
# the failed writes, the per-agent delay from reservation to "peer ... added", the restarts and
# the certificate serials before/after; then runs `molecule idempotence`.
# Usage: scripts/tls-rotation-check.sh [scenario]   (PYFLANNEL_MOLECULE_* as for molecule)
set -euo pipefail
scenario=${1:-default}
prefix=${PYFLANNEL_MOLECULE_PREFIX:-pyflannel}
nodes=("$prefix-$scenario-1" "$prefix-$scenario-2" "$prefix-$scenario-3")
out=build/rotation-$scenario
mkdir -p "$out"
pki=/etc/pyflannel/pki

serials() {
    for n in "${nodes[@]}"; do
        for c in member flanneld admin; do
            printf '%s %s %s\n' "$n" "$c" \
                "$(docker exec "$n" openssl x509 -in "$pki/$c.crt" -noout -serial -enddate | tr '\n' ' ')"
        done
    done
}

endpoints=$(docker exec "${nodes[0]}" sh -c '. /etc/pyflannel/flannelctl.env; echo "$FLANNELD_ETCD_ENDPOINTS"')
serials > "$out/serials-before.txt"
start=$(date +%s.%N)

# Writer (inside node 1): one put per 0.5 s through every endpoint; stops when the flag goes.
docker exec "${nodes[0]}" sh -c 'touch /tmp/rotation.run'
docker exec "${nodes[0]}" sh -c "
    set -a; . /etc/etcd/etcdctl.env; ETCDCTL_ENDPOINTS=$endpoints; set +a
    while [ -e /tmp/rotation.run ]; do
        if etcdctl --command-timeout=2s put /pyflannel-test/rotation \"\$(date +%s.%N)\" >/dev/null 2>&1
        then echo \"\$(date +%s.%N) ok\"; else echo \"\$(date +%s.%N) fail\"; fi
        sleep 0.5
    done" > "$out/writes.log" &
writer=$!

# Reservations (from the controller through node 1's flannelctl): 10.5.(200+i).0/24.
(
    i=0
    while docker exec "${nodes[0]}" test -e /tmp/rotation.run; do
        subnet="10.5.$((200 + i)).0/24"
        if docker exec "${nodes[0]}" flannelctl leases reserve "$subnet" "203.0.113.$((100 + i))" >/dev/null 2>&1
        then echo "$(date +%s.%N) $subnet"; fi
        i=$((i + 1))
        [ $i -ge 40 ] && break
        sleep 5
    done
) > "$out/reservations.log" &
reserver=$!

rc=0
t0=$(date +%s.%N)
molecule converge -s "$scenario" -- -e etcd_pki_renew_days=400 > "$out/converge.log" 2>&1 || rc=$?
t1=$(date +%s.%N)
sleep 8  # the last reservation reaches the agents
docker exec "${nodes[0]}" rm -f /tmp/rotation.run
wait "$writer" || true
wait "$reserver" || true

serials > "$out/serials-after.txt"
for n in "${nodes[@]}"; do
    docker exec "$n" journalctl -o short-unix --no-pager -u flanneld -u etcd --since "@${start%.*}" \
        > "$out/journal-$n.log"
done

python3 - "$out" "$t0" "$t1" "${nodes[@]}" <<'EOF'
import re, sys
from pathlib import Path
out, t0, t1, *nodes = sys.argv[1:]
out = Path(out)
writes = [line.split() for line in (out / "writes.log").read_text().splitlines() if line.strip()]
ok = [float(t) for t, r in writes if r == "ok"]
fails = [float(t) for t, r in writes if r != "ok"]
gaps = [b - a for a, b in zip(ok, ok[1:])]
print(f"rotation converge: {float(t1) - float(t0):.1f} s (rc in converge.log)")
print(f"etcd writes: {len(ok)} ok, {len(fails)} failed, longest gap between successful writes "
      f"{max(gaps) if gaps else 0:.2f} s")
reserved = {}
for line in (out / "reservations.log").read_text().splitlines():
    t, subnet = line.split()
    reserved[subnet] = float(t)
print(f"reservations: {len(reserved)}")
for node in nodes:
    journal = (out / f"journal-{node}.log").read_text().splitlines()
    seen = {}
    restarts = {"etcd": 0, "flanneld": 0}
    for line in journal:
        m = re.match(r"(\d+\.\d+) \S+ flanneld\[\d+\]: .* peer (\S+) \(\S+\) added", line)
        if m and m.group(2) in reserved and m.group(2) not in seen:
            seen[m.group(2)] = float(m.group(1))
        m = re.match(r"\d+\.\d+ \S+ systemd\[1\]: Started (etcd|flanneld)\.service", line)
        if m:
            restarts[m.group(1)] += 1
    delays = [seen[s] - t for s, t in reserved.items() if s in seen]
    missing = sorted(set(reserved) - set(seen))
    print(f"{node}: restarts etcd {restarts['etcd']}, flanneld {restarts['flanneld']}; "
          f"reservation -> peer added: max {max(delays) if delays else float('nan'):.2f} s, "
          f"mean {sum(delays) / len(delays) if delays else float('nan'):.2f} s, "
          f"not seen {missing}")
EOF
echo "certificates reissued:"
paste -d'|' "$out/serials-before.txt" "$out/serials-after.txt" | awk -F'|' '{split($1,a," "); split($2,b," "); print a[1], a[2], (a[3] != b[3] ? "new serial" : "SAME serial")}'

# Release the test reservations and the key; then the run after the rotation must change nothing.
for s in $(awk '{print $2}' "$out/reservations.log"); do
    docker exec "${nodes[0]}" flannelctl leases release "$s" >/dev/null
done
docker exec "${nodes[0]}" sh -c 'set -a; . /etc/etcd/etcdctl.env; set +a; etcdctl del /pyflannel-test/rotation >/dev/null'
echo "converge rc=$rc"
molecule idempotence -s "$scenario" > "$out/idempotence.log" 2>&1 && echo "idempotence: ok" \
    || { echo "idempotence: FAILED (see $out/idempotence.log)"; exit 1; }
exit "$rc"
