#!/usr/bin/env bash
# s3-server.sh - a throwaway local S3 endpoint for tests: a single-node Ceph RADOS Gateway from Debian 12
# packages (one ceph-mon, one ceph-osd on memstore, i.e. objects in RAM, and radosgw with the beast frontend
# on 127.0.0.1), with no systemd, no /etc/ceph or /var/lib/ceph, no network other than 127.0.0.1.
# Everything lives in DIR, a directory the caller chooses (empty or absent).
#
# usage: scripts/s3-server.sh start DIR  start the daemons, make the S3 user and bucket, write DIR/env
#        scripts/s3-server.sh env DIR    print DIR/env (fails if the fixture is not running)
#        scripts/s3-server.sh stop DIR   stop the daemons started in DIR by the PIDs recorded there (never by
#                                        name), remove their state, keep DIR/log; safe twice or after a failed start
#        scripts/s3-server.sh second-gateway start|kill DIR
#                                        a second radosgw on the same cluster (for tests that kill a gateway
#                                        without disturbing others): start prints its URL (the same port on a
#                                        restart); kill SIGKILLs it by its recorded PID
#        scripts/s3-server.sh tls-gateway start|stop DIR
#                                        an HTTPS radosgw on the same cluster: start makes a throwaway CA and a
#                                        server certificate for 127.0.0.1 and localhost with openssl in DIR/tls,
#                                        starts radosgw with the beast frontend's ssl_endpoint, writes DIR/tls/env
#                                        (AWS_ENDPOINT_URL, AWS_CA_BUNDLE) and prints two lines: the https URL and
#                                        the CA's PEM file; stop stops it by its recorded PID (stop DIR does too)
# then:  . DIR/env   exports AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION,
#                    AWS_DEFAULT_REGION, CKPT_S3_BUCKET (and CEPH_CONF, for radosgw-admin)
# env:   S3_PORT, S3_MON_PORT  HTTP and monitor ports (default: free ports from the kernel)
#        CKPT_S3_BUCKET        bucket made at start (default ckpt-test)
#        S3_START_TIMEOUT      seconds start may take in all (60); S3_STOP_TIMEOUT: SIGTERM->SIGKILL wait (10)
#        S3_MEMSTORE_BYTES     capacity of the in-RAM object store (default 8 GiB; RAM used as data is stored)
# needs: scripts/install-deps.sh. Check a running fixture with scripts/s3-smoke.sh DIR.
set -euo pipefail

ME=s3-server.sh
usage() { echo "usage: $ME start|stop|env DIR, or $ME second-gateway start|kill DIR, or $ME tls-gateway start|stop DIR" >&2; exit 2; }
case "${1:-}" in
  second-gateway|tls-gateway) [ $# -eq 3 ] && [ -n "$3" ] || usage; SUB=$2; set -- "$1" "$3" ;;
esac
if [ $# -ne 2 ] || [ -z "$2" ]; then usage; fi
CMD=$1 DIR=$2
case "$DIR" in *[[:space:]]*) echo "$ME: DIR '$DIR' must not contain blanks (goes into ceph.conf)" >&2; exit 2 ;; esac
ACCESS_KEY=0555b35654ad1656d804
SECRET_KEY=h7GhxuBLTrlhVUyxSPUKUV8r/2EI4ngqJxD7iBdBYLhwluN30JaT3Q==
BUCKET=${CKPT_S3_BUCKET:-ckpt-test}
# stop order: radosgw's shutdown still talks to the OSD, the OSD's to the mon (in parallel they hang)
DAEMONS=(client.rgw.tls client.rgw.second client.rgw.s3 osd.0 mon.a)
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
T0=$(now_ms)
log() { local ms=$(( $(now_ms) - T0 )); printf '[%s %d.%03ds] %s\n' "$ME" $((ms / 1000)) $((ms % 1000)) "$*" >&2; }
# a daemon that exited stays a zombie until PID 1 reaps it, and kill -0 counts zombies: treat Z as gone
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$st" ] && [ "${st#Z}" = "$st" ]; }
# is PID one of OUR daemons? (its environment names this DIR's ceph.conf; guards against pid reuse)
ours() {
  tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF "CEPH_CONF=$DIR/ceph.conf" \
    && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -Eq '^(/usr/bin/)?(ceph-mon|ceph-osd|radosgw) '
}
# the PID recorded for daemon NAME: DIR/pids (written by start) or the daemon's own pid file
pid_of() {
  local p; p=$(awk -v n="$1" '$1 == n { p = $2 } END { print p }' "$DIR/pids" 2>/dev/null || true)
  if [ -z "$p" ]; then p=$(cat "$DIR/run/$1.pid" 2>/dev/null || true); fi; echo "$p"
}
stop_all() {  # stop the daemons "$@" (default: every one) recorded under DIR, one at a time, in that order
  local rc=0 n p i names=("$@")
  [ ${#names[@]} -gt 0 ] || names=("${DAEMONS[@]}")
  for n in "${names[@]}"; do
    p=$(pid_of "$n"); if [ -z "$p" ] || ! alive "$p"; then continue; fi
    if ! ours "$p"; then log "pid $p ($n) is not a ceph daemon of $DIR: left alone"; continue; fi
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do alive "$p" || break; sleep 0.2; done
    if alive "$p"; then
      log "$n (pid $p) still running ${STOP_TIMEOUT}s after SIGTERM: sending SIGKILL"
      kill -KILL "$p" 2>/dev/null || true
      for ((i = 0; i < 25; i++)); do alive "$p" || break; sleep 0.2; done
      if alive "$p"; then log "ERROR: $n (pid $p) survived SIGKILL"; rc=1; fi
    fi
    log "stopped $n (pid $p)"
  done
  [ $rc = 0 ] && [ $# = 0 ] && rm -rf "$DIR"/{mon,osd,rgw,rgw-second,rgw-tls,tls,run,ceph.conf,env,pids,user.json,second.port}
  return $rc
}
STOP_TIMEOUT=${S3_STOP_TIMEOUT:-10}
case "$CMD" in
  stop) [ -d "$DIR" ] || { log "$DIR does not exist: nothing to stop"; exit 0; }
        DIR=$(cd "$DIR" && pwd); stop_all; log "done (logs kept in $DIR/log)"; exit 0 ;;
  env) [ -f "$DIR/env" ] || { echo "$ME: $DIR/env not found: the fixture is not running in $DIR" >&2; exit 1; }
       cat "$DIR/env"; exit 0 ;;
  second-gateway)
    [ -f "$DIR/env" ] || { echo "$ME: $DIR/env not found: the fixture is not running in $DIR" >&2; exit 1; }
    DIR=$(cd "$DIR" && pwd); export CEPH_CONF="$DIR/ceph.conf"; NAME=client.rgw.second
    case "${SUB:-}" in
      kill) p=$(pid_of $NAME)
            if [ -n "$p" ] && alive "$p" && ours "$p"; then
              kill -KILL "$p"; for ((i = 0; i < 50; i++)); do alive "$p" || break; sleep 0.1; done
              log "killed $NAME (pid $p)"
            fi
            exit 0 ;;
      start) p=$(pid_of $NAME)
             if [ -n "$p" ] && alive "$p" && ours "$p"; then  # already up: say where
               log "$NAME already running (pid $p)"; echo "http://127.0.0.1:$(cat "$DIR/second.port")"; exit 0
             fi
             port=$(cat "$DIR/second.port" 2>/dev/null || /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
             echo "$port" > "$DIR/second.port"; mkdir -p "$DIR/rgw-second"; rm -f "$DIR/run/$NAME.pid"
             env MALLOC_ARENA_MAX=2 radosgw -n $NAME --rgw-frontends "beast endpoint=127.0.0.1:$port" \
               --rgw-data "$DIR/rgw-second" --rgw-dns-name localhost --rgw-enable-lc-threads false \
               2>"$DIR/log/$NAME.err" || { log "radosgw ($NAME) failed to start"; exit 1; }
             for ((i = 0; i < 150; i++)); do [ -s "$DIR/run/$NAME.pid" ] && break; sleep 0.1; done
             echo "$NAME $(cat "$DIR/run/$NAME.pid")" >> "$DIR/pids"
             for ((i = 0; i < 300; i++)); do curl -fs -m 2 -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
             curl -fs -m 2 -o /dev/null "http://127.0.0.1:$port/" || { log "$NAME not answering on port $port"; exit 1; }
             log "$NAME up (pid $(pid_of $NAME), http://127.0.0.1:$port)"
             echo "http://127.0.0.1:$port"; exit 0 ;;
      *) usage ;;
    esac ;;
  tls-gateway)
    [ -f "$DIR/env" ] || { echo "$ME: $DIR/env not found: the fixture is not running in $DIR" >&2; exit 1; }
    DIR=$(cd "$DIR" && pwd); export CEPH_CONF="$DIR/ceph.conf"; NAME=client.rgw.tls; TLS=$DIR/tls
    case "${SUB:-}" in
      stop) stop_all $NAME; rm -rf "$DIR/rgw-tls" "$TLS"; exit 0 ;;
      start) p=$(pid_of $NAME)
             if [ -n "$p" ] && alive "$p" && ours "$p"; then  # already up: say where
               log "$NAME already running (pid $p)"; echo "https://127.0.0.1:$(cat "$TLS/port")"; echo "$TLS/ca.pem"; exit 0
             fi
             command -v openssl >/dev/null 2>&1 || { echo "$ME: 'openssl' not found: run scripts/install-deps.sh" >&2; exit 2; }
             rm -rf "$TLS"; mkdir -p "$TLS" "$DIR/rgw-tls"; rm -f "$DIR/run/$NAME.pid"
             # a CA that exists only here, and a certificate it signs for the names the tests connect to
             ossl() { openssl "$@" >>"$DIR/log/tls-openssl.err" 2>&1 || { log "openssl $1 failed (see $DIR/log/tls-openssl.err)"; exit 1; }; }
             ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
               -subj "/CN=ckpt throwaway test CA" -keyout "$TLS/ca.key" -out "$TLS/ca.pem" \
               -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
             ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
               -keyout "$TLS/server.key" -out "$TLS/server.csr"
             printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
               "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$TLS/server.ext"
             ossl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
               -days 2 -extfile "$TLS/server.ext" -out "$TLS/server.pem"
             port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
             echo "$port" > "$TLS/port"
             env MALLOC_ARENA_MAX=2 radosgw -n $NAME \
               --rgw-frontends "beast ssl_endpoint=127.0.0.1:$port ssl_certificate=$TLS/server.pem ssl_private_key=$TLS/server.key" \
               --rgw-data "$DIR/rgw-tls" --rgw-dns-name localhost --rgw-enable-lc-threads false \
               2>"$DIR/log/$NAME.err" || { log "radosgw ($NAME) failed to start"; exit 1; }
             for ((i = 0; i < 150; i++)); do [ -s "$DIR/run/$NAME.pid" ] && break; sleep 0.1; done
             [ -s "$DIR/run/$NAME.pid" ] || { log "radosgw ($NAME) wrote no pid file"; exit 1; }
             echo "$NAME $(cat "$DIR/run/$NAME.pid")" >> "$DIR/pids"
             # ready = the certificate verifies against our CA for 127.0.0.1 and the gateway answers
             url=https://127.0.0.1:$port
             for ((i = 0; i < 300; i++)); do curl -fs -m 2 --cacert "$TLS/ca.pem" -o /dev/null "$url/" && break; sleep 0.1; done
             curl -fsS -m 2 --cacert "$TLS/ca.pem" -o /dev/null "$url/" 2>"$DIR/log/tls-probe.err" \
               || { log "$NAME not answering on $url: $(cat "$DIR/log/tls-probe.err")"; stop_all $NAME; exit 1; }
             printf "export AWS_ENDPOINT_URL='%s'\nexport AWS_CA_BUNDLE='%s'\n" "$url" "$TLS/ca.pem" > "$TLS/env"
             log "$NAME up (pid $(pid_of $NAME), $url, CA $TLS/ca.pem)"
             echo "$url"; echo "$TLS/ca.pem"; exit 0 ;;
      *) usage ;;
    esac ;;
  start) ;;
  *) usage ;;
esac
# ---------------------------------------------------------------- start
for b in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool uuidgen curl ss /usr/bin/python3; do
  command -v "$b" >/dev/null 2>&1 || { echo "$ME: '$b' not found: run scripts/install-deps.sh" >&2; exit 2; }
done
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
[ -z "$(find "$DIR" -mindepth 1 -maxdepth 1 ! -name log)" ] \
  || { echo "$ME: $DIR is not empty (a fixture running there? run: $ME stop $DIR)" >&2; exit 2; }
rm -rf "$DIR/log"
mkdir -p "$DIR"/{log,run,mon,osd,rgw}
START_TIMEOUT=${S3_START_TIMEOUT:-60}
DEADLINE=$(( $(date +%s) + START_TIMEOUT ))
left() { local l=$(( DEADLINE - $(date +%s) )); [ $l -gt 0 ] || l=1; echo $l; }
READY=0 LAUNCHED=""
on_exit() {  # a failed or interrupted start: show the daemons' last log lines, stop what started
  [ $READY = 1 ] && return 0; local f n i
  for n in $LAUNCHED; do  # a daemon launched just now may not have written its pid file yet
    for ((i = 0; i < 25; i++)); do [ -n "$(pid_of "$n")" ] && break; sleep 0.2; done
  done
  for f in "$DIR"/log/{mon.a,osd.0,client.rgw.s3}.{log,err} "$DIR"/log/*{mkfs,admin,bucket}*; do
    if [ -s "$f" ]; then echo "----- last lines of $f" >&2; tail -n 12 "$f" >&2; fi
  done
  log "start failed: stopping what was started in $DIR"
  stop_all || true
}
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT TERM
die() { log "ERROR: $*"; exit 1; }
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RGW_PORT=${S3_PORT:-$(port)} MON_PORT=${S3_MON_PORT:-$(port)}
while [ "$MON_PORT" = "$RGW_PORT" ]; do MON_PORT=$(port); done
URL=http://127.0.0.1:$RGW_PORT
listener_pid() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2; }
# a daemon that cannot bind exits, and the probes would then be answered by whoever owns the port
for p in "$MON_PORT" "$RGW_PORT"; do
  [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] || die "port 127.0.0.1:$p is already in use"
done
# unix socket paths are limited to 107 bytes: without admin sockets when DIR is too long (not needed)
ASOK="admin socket = $DIR/run/\$cluster-\$name.asok"
[ $(( ${#DIR} + 32 )) -lt 107 ] || ASOK="admin socket = \"\""
FSID=$(uuidgen)
export CEPH_CONF="$DIR/ceph.conf"
cat > "$CEPH_CONF" <<EOF
[global]
# written by scripts/s3-server.sh: loopback-only throwaway cluster, no cephx (RGW still checks S3 signatures)
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
# radosgw's default "secure" mode needs cephx: with auth none it would hang for 300 s
ms mon client mode = crc
client mount timeout = 30
run dir = $DIR/run
$ASOK
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
keyring = /dev/null
chdir = ""
# one OSD: size 1 and few PGs, or RGW's 6 pools do not fit
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
# the mon would shut down when the disk holding DIR is 95% full
mon data avail crit = 0
[mon.a]
mon data = $DIR/mon
mon cluster log file = $DIR/log/mon-cluster.log
# commit map changes fast (default: batches of 1 s): RGW makes 6 pools at first start (14 s -> 2 s)
paxos propose interval = 0.05
paxos min wait = 0.01
[osd.0]
osd data = $DIR/osd
osd objectstore = memstore
memstore device bytes = ${S3_MEMSTORE_BYTES:-8589934592}
osd class load list = *
osd class default list = *
osd mon shutdown timeout = 1
osd op num shards = 2
[client.rgw.s3]
rgw data = $DIR/rgw
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw dns name = localhost
rgw thread pool size = 64
# reclaim deleted/overwritten data within a minute, not 2 h (memstore holds it in RAM)
rgw gc obj min wait = 30
rgw gc processor period = 30
# no lifecycle worker: in its work window (00:00-06:00) it delays radosgw's exit by ~4 s
rgw enable lc threads = false
EOF
# glibc malloc: without these the OSD keeps its RSS high-water mark (GBs) after deletes
DAEMON_ENV=(env MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072)
CEPH() { timeout "$(left)" ceph --connect-timeout "$(left)" "$@"; }
wait_for() {  # wait_for WHAT CMD...: run CMD every 0.25 s until it succeeds or the start deadline passes
  local what=$1; shift
  until "$@"; do [ "$(date +%s)" -lt "$DEADLINE" ] || die "$what after ${START_TIMEOUT}s"; sleep 0.25; done
}
record() {  # record the PID of daemon NAME from the pid file it writes (radosgw: after its parent exits)
  wait_for "$1 wrote no pid file $DIR/run/$1.pid" test -s "$DIR/run/$1.pid"
  echo "$1 $(cat "$DIR/run/$1.pid")" >> "$DIR/pids"
}
# ---- monitor (a monmap that names mon.a: without it, mon.a comes up as rank -1 on the default ports)
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/run/monmap" >/dev/null || die monmaptool
ceph-mon --id a --mkfs --monmap "$DIR/run/monmap" --keyring /dev/null &>"$DIR/log/mon-mkfs.err" || die "ceph-mon --mkfs"
LAUNCHED+=" mon.a"
"${DAEMON_ENV[@]}" ceph-mon --id a 2>"$DIR/log/mon.a.err" || die "ceph-mon failed to start (port $MON_PORT)"
record mon.a
CEPH mon stat >/dev/null 2>&1 || die "ceph-mon on 127.0.0.1:$MON_PORT does not answer"
[ "$(listener_pid "$MON_PORT")" = "$(pid_of mon.a)" ] || die "port $MON_PORT is not held by our ceph-mon"
log "ceph-mon up (pid $(pid_of mon.a), v2:127.0.0.1:$MON_PORT)"
# ---- OSD
OSD_UUID=$(uuidgen)
OSD_ID=$(CEPH osd new "$OSD_UUID" 2>"$DIR/log/osd-new.err") || die "ceph osd new failed"
[ "$OSD_ID" = 0 ] || die "ceph osd new gave id '$OSD_ID', expected 0"
CEPH osd crush add osd.0 1 root=default >/dev/null 2>&1 || die "ceph osd crush add osd.0 failed"
ceph-osd --id 0 --mkfs --osd-uuid "$OSD_UUID" &>"$DIR/log/osd-mkfs.err" || die "ceph-osd --mkfs failed"
LAUNCHED+=" osd.0"
"${DAEMON_ENV[@]}" ceph-osd --id 0 2>"$DIR/log/osd.0.err" || die "ceph-osd failed to start"
record osd.0
osd_up() { CEPH osd dump 2>/dev/null | grep -q '^osd.0 up'; }
wait_for "ceph-osd (pid $(pid_of osd.0)) not up" osd_up
log "ceph-osd up (pid $(pid_of osd.0), memstore)"
# ---- radosgw (creates its pools on first start); ready = OUR pid listens and anonymous GET / answers
LAUNCHED+=" client.rgw.s3"
"${DAEMON_ENV[@]}" radosgw -n client.rgw.s3 2>"$DIR/log/client.rgw.s3.err" || die "radosgw failed to start"
record client.rgw.s3
RGW_PID=$(pid_of client.rgw.s3)
rgw_up() {
  alive "$RGW_PID" || die "radosgw (pid $RGW_PID) exited (see $DIR/log/client.rgw.s3.log)"
  [ "$(listener_pid "$RGW_PORT")" = "$RGW_PID" ] && curl -fs -m 5 -o /dev/null "$URL/"
}
wait_for "radosgw (pid $RGW_PID) not answering on $URL" rgw_up
log "radosgw up (pid $RGW_PID, $URL)"

timeout "$(left)" radosgw-admin -n client.admin user create --uid=tester --display-name="ckpt tests" \
  --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$DIR/user.json" 2>"$DIR/log/radosgw-admin.err" \
  || die "radosgw-admin user create failed"
# the bucket, and a signed ListBuckets that must show it (SigV4 through libcurl, as the C++ client will)
s3curl() {
  curl -sS -m 30 --aws-sigv4 aws:amz:us-east-1:s3 --user "$ACCESS_KEY:$SECRET_KEY" \
    -H "x-amz-content-sha256: $EMPTY_SHA256" "$@"
}
code=$(s3curl -o "$DIR/log/create-bucket.out" -w '%{http_code}' -X PUT "$URL/$BUCKET") || code="none (curl failed)"
[ "$code" = 200 ] || die "PUT $URL/$BUCKET (create bucket): HTTP $code, $(cat "$DIR/log/create-bucket.out" 2>/dev/null)"
out=$(s3curl -f "$URL/") || die "signed ListBuckets on $URL failed"
[[ $out == *"<Name>$BUCKET</Name>"* ]] || die "signed ListBuckets on $URL does not list bucket '$BUCKET'"

cat > "$DIR/env.tmp" <<EOF
# written by scripts/s3-server.sh start $DIR ; source it: . $DIR/env
# boto3 1.26 / awscli 2.9 (Debian 12) ignore AWS_ENDPOINT_URL: pass it as endpoint_url / --endpoint-url
export AWS_ACCESS_KEY_ID='$ACCESS_KEY'
export AWS_SECRET_ACCESS_KEY='$SECRET_KEY'
export AWS_ENDPOINT_URL='$URL'
export AWS_REGION='us-east-1'
export AWS_DEFAULT_REGION='us-east-1'
export CKPT_S3_BUCKET='$BUCKET'
export CKPT_S3_DIR='$DIR'
export CEPH_CONF='$DIR/ceph.conf'
EOF
mv "$DIR/env.tmp" "$DIR/env"
READY=1 ms=$(( $(now_ms) - T0 ))
log "pids: $(awk '{ printf "%s%s=%s", sep, $1, $2; sep = " " }' "$DIR/pids"); env file: $DIR/env"
log "ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s: $URL, bucket $BUCKET"
