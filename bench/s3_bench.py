"""The boto3 side of ckpt_bench's S3 rows: one upload_file or download_file with s3transfer's
default TransferConfig (8 MiB parts, 10 threads), timed around that call alone, printed as
`RESULT <name> <seconds>`. The endpoint comes from AWS_ENDPOINT_URL (boto3 1.26 ignores it, so
it is passed explicitly).

usage: s3_bench.py upload FILE s3://BUCKET/KEY | download s3://BUCKET/KEY FILE
"""
import os
import sys
import time

import boto3


def split(url):
    bucket, _, key = url[len("s3://"):].partition("/")
    return bucket, key


s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
                  region_name=os.environ.get("AWS_REGION", "us-east-1"))
command = sys.argv[1]
start = time.perf_counter()
if command == "upload":
    s3.upload_file(sys.argv[2], *split(sys.argv[3]))
elif command == "download":
    s3.download_file(*split(sys.argv[2]), sys.argv[3])
else:
    sys.exit("unknown command " + command)
print(f"RESULT boto3_{command} {time.perf_counter() - start:.6f}")
