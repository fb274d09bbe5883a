#!/usr/bin/env bash
# s3-smoke.sh - checks a running local S3 fixture (scripts/s3-server.sh start DIR) with two independent
# clients from Debian 12 packages: boto3 under /usr/bin/python3 (python3-boto3) and /usr/bin/aws
# (awscli 2.9). Both are called by absolute path: a pyenv python3 or a pip-installed aws 1.x earlier on
# PATH is not what the fixture is meant to be cross-checked with. Neither honours AWS_ENDPOINT_URL
# (boto3 1.26, awscli 2.9), so the endpoint is passed explicitly.
#
# usage: scripts/s3-smoke.sh DIR      exits non-zero on the first failed check
#
# Checks, under a fresh prefix in $CKPT_S3_BUCKET (removed again at the end):
#   aws:   ls lists the bucket; cp up of a 9 MiB file (multipart in awscli), ls of the prefix
#   boto3: a wrong secret is refused (403); put/get/head of 3 MiB (ETag = MD5); list_objects_v2 with
#          prefix and delimiter; 2-part multipart upload (5 MiB + 2 MiB), list_parts, complete, read
#          back, HEAD ETag "-2"; reads the object aws uploaded; delete / delete_objects, NoSuchKey
#   aws:   cp down of an object boto3 wrote, byte-compared; rm; the prefix lists empty at the end
set -euo pipefail

ME=s3-smoke.sh
DIR=${1:?usage: $ME DIR   (DIR as given to scripts/s3-server.sh start)}
[ -f "$DIR/env" ] || { echo "$ME: $DIR/env not found: start the fixture: scripts/s3-server.sh start $DIR" >&2; exit 2; }
# shellcheck disable=SC1091
. "$DIR/env"
PY=/usr/bin/python3 AWS=/usr/bin/aws
for b in "$PY" "$AWS"; do [ -x "$b" ] || { echo "$ME: $b not found: run scripts/install-deps.sh" >&2; exit 2; }; done
"$PY" -c 'import boto3' 2>/dev/null || { echo "$ME: boto3 missing for $PY: run scripts/install-deps.sh" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/s3-smoke.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
PREFIX="smoke-$$-$(date +%s)"
export PREFIX TMP
fail() { echo "$ME: FAILED: $* (endpoint $AWS_ENDPOINT_URL, bucket $CKPT_S3_BUCKET)" >&2; exit 1; }
ok() { echo "$ME: ok  $*"; }
aws_() { "$AWS" --endpoint-url "$AWS_ENDPOINT_URL" --cli-connect-timeout 10 --cli-read-timeout 60 "$@"; }

# ---- awscli, first pass
out=$(aws_ s3 ls) || fail "aws s3 ls"
grep -qw "$CKPT_S3_BUCKET" <<<"$out" || fail "aws s3 ls does not list bucket $CKPT_S3_BUCKET"
ok "aws s3 ls lists bucket $CKPT_S3_BUCKET"
head -c $((9 << 20)) /dev/urandom > "$TMP/from-aws.bin"
aws_ s3 cp --only-show-errors "$TMP/from-aws.bin" "s3://$CKPT_S3_BUCKET/$PREFIX/from-aws.bin" || fail "aws s3 cp upload"
out=$(aws_ s3 ls "s3://$CKPT_S3_BUCKET/$PREFIX/") || fail "aws s3 ls of $PREFIX/"
grep -q " $((9 << 20)) from-aws.bin$" <<<"$out" || fail "aws s3 ls of $PREFIX/ does not show from-aws.bin, 9 MiB"
ok "aws s3 cp up 9 MiB, aws s3 ls shows it with its size"

# ---- boto3
"$PY" - <<'EOF' || fail "boto3 checks"
import hashlib, os, sys
import boto3, botocore
from botocore.config import Config

env = os.environ
bucket, prefix, tmp = env["CKPT_S3_BUCKET"], env["PREFIX"], env["TMP"]
cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=10, read_timeout=60)
def client(secret=env["AWS_SECRET_ACCESS_KEY"]):
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=secret, config=cfg)
s3 = client()
def ok(msg): print("s3-smoke.sh: ok  boto3 " + msg, flush=True)
def code(e): return e.response["Error"]["Code"]

try:
    client("wrong" + env["AWS_SECRET_ACCESS_KEY"]).list_objects_v2(Bucket=bucket)
    sys.exit("a wrong secret was accepted")
except botocore.exceptions.ClientError as e:
    assert code(e) == "SignatureDoesNotMatch", code(e)
ok("wrong secret refused: SignatureDoesNotMatch")

small = os.urandom(3 << 20)
r = s3.put_object(Bucket=bucket, Key=f"{prefix}/a/small.bin", Body=small)
assert r["ETag"].strip('"') == hashlib.md5(small).hexdigest(), r["ETag"]
assert s3.get_object(Bucket=bucket, Key=f"{prefix}/a/small.bin")["Body"].read() == small
assert s3.head_object(Bucket=bucket, Key=f"{prefix}/a/small.bin")["ContentLength"] == len(small)
ok("put/get/head 3 MiB, ETag = MD5")

s3.put_object(Bucket=bucket, Key=f"{prefix}/b.txt", Body=b"b")
r = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/", Delimiter="/")
keys = sorted(o["Key"] for o in r.get("Contents", []))
dirs = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
assert keys == [f"{prefix}/b.txt", f"{prefix}/from-aws.bin"], keys
assert dirs == [f"{prefix}/a/"], dirs
ok("list_objects_v2 with prefix and delimiter")

parts = [os.urandom(5 << 20), os.urandom(2 << 20)]
key = f"{prefix}/multipart.bin"
up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=p)["ETag"]}
        for n, p in enumerate(parts, 1)]
assert [p["Size"] for p in s3.list_parts(Bucket=bucket, Key=key, UploadId=up)["Parts"]] == [len(p) for p in parts]
s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done})
assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"".join(parts)
etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
want = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2"
assert etag == want, (etag, want)
ok("multipart 5 MiB + 2 MiB: list_parts, complete, read back, HEAD ETag md5-of-md5s-2")

with open(os.path.join(tmp, "from-aws.bin"), "rb") as f:
    assert s3.get_object(Bucket=bucket, Key=f"{prefix}/from-aws.bin")["Body"].read() == f.read()
ok("reads the object aws uploaded, byte for byte")

with open(os.path.join(tmp, "from-boto3.bin"), "wb") as f:
    f.write(small)
s3.upload_file(os.path.join(tmp, "from-boto3.bin"), bucket, f"{prefix}/from-boto3.bin")
s3.delete_object(Bucket=bucket, Key=key)
r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"{prefix}/a/small.bin"}, {"Key": f"{prefix}/b.txt"}]})
assert len(r.get("Deleted", [])) == 2 and not r.get("Errors"), r
try:
    s3.get_object(Bucket=bucket, Key=key)
    sys.exit("deleted object still readable")
except botocore.exceptions.ClientError as e:
    assert code(e) == "NoSuchKey", code(e)
ok("delete_object, delete_objects, then NoSuchKey")
EOF

# ---- awscli, second pass
aws_ s3 cp --only-show-errors "s3://$CKPT_S3_BUCKET/$PREFIX/from-boto3.bin" "$TMP/back.bin" || fail "aws s3 cp download"
cmp -s "$TMP/from-boto3.bin" "$TMP/back.bin" || fail "aws s3 cp downloaded different bytes than boto3 uploaded"
ok "aws s3 cp down of the object boto3 uploaded, byte for byte"
aws_ s3 rm --only-show-errors --recursive "s3://$CKPT_S3_BUCKET/$PREFIX/" || fail "aws s3 rm --recursive"
[ -z "$(aws_ s3 ls --recursive "s3://$CKPT_S3_BUCKET/$PREFIX/" || true)" ] || fail "objects left under $PREFIX/ after rm"
ok "aws s3 rm --recursive, the prefix lists empty"
echo "$ME: all checks passed against $AWS_ENDPOINT_URL (bucket $CKPT_S3_BUCKET)"
