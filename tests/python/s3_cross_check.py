"""Independent S3 client for ckpt's S3 tests: boto3 (Debian's python3-boto3) against the fixture's
gateway, plus torch for reading and writing files. The endpoint and keys come from the
environment the fixture writes (AWS_ENDPOINT_URL is passed explicitly: boto3 1.26 ignores it).

usage: s3_cross_check.py download BUCKET KEY FILE      download an object with download_file
       s3_cross_check.py upload FILE BUCKET KEY        upload a file with upload_file
       s3_cross_check.py torch-keys FILE               torch.load FILE, print its sorted keys
       s3_cross_check.py torch-save FILE               torch.save a small dict to FILE
       s3_cross_check.py start-upload BUCKET KEY       start a multipart upload, send one part, leave it
       s3_cross_check.py uploads BUCKET PREFIX         print the keys with uploads in progress
       s3_cross_check.py keys BUCKET PREFIX            print every key under PREFIX (paginated)
       s3_cross_check.py head BUCKET KEY               print the object's size and ETag
An https:// AWS_ENDPOINT_URL is verified against AWS_CA_BUNDLE (botocore reads it itself).
"""
import os
import sys

import boto3

command = sys.argv[1]


def client():
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                        region_name=os.environ.get("AWS_REGION", "us-east-1"))


if command == "download":
    client().download_file(sys.argv[2], sys.argv[3], sys.argv[4])
elif command == "upload":
    client().upload_file(sys.argv[2], sys.argv[3], sys.argv[4])
elif command == "torch-keys":
    import torch
    state = torch.load(sys.argv[2], map_location="cpu")
    print(" ".join(sorted(state.keys())))
elif command == "torch-save":
    import torch
    torch.manual_seed(0)
    torch.save({"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 4}, sys.argv[2])
elif command == "start-upload":
    s3 = client()
    upload = s3.create_multipart_upload(Bucket=sys.argv[2], Key=sys.argv[3])
    s3.upload_part(Bucket=sys.argv[2], Key=sys.argv[3], UploadId=upload["UploadId"], PartNumber=1,
                   Body=b"x" * (5 << 20))
    print(upload["UploadId"])
elif command == "uploads":
    answer = client().list_multipart_uploads(Bucket=sys.argv[2], Prefix=sys.argv[3])
    print(" ".join(sorted(u["Key"] for u in answer.get("Uploads", []))))
elif command == "keys":
    pages = client().get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2],
                                                               Prefix=sys.argv[3])
    print("\n".join(o["Key"] for page in pages for o in page.get("Contents", [])))
elif command == "head":
    answer = client().head_object(Bucket=sys.argv[2], Key=sys.argv[3])
    print(answer["ContentLength"], answer["ETag"])
else:
    sys.exit("unknown command " + command)
