#!/usr/bin/python3
"""Kill an uploading process once the S3 server holds a share of the object.

    s3_kill_at.py BUCKET KEY SIZE FRACTION PID [TIMEOUT_S]

Polls the gateway (AWS_ENDPOINT_URL and the AWS_* keys from the environment)
every 50 ms with ListMultipartUploads (for KEY) and ListParts (paginated),
and sends SIGKILL to PID as soon as the parts the server holds add up to
FRACTION * SIZE bytes. The same criterion for every tool (sesscp, aws-cli,
s3cmd: all multipart with 8 MiB parts), so "killed at 50 %" means the same
amount of confirmed data for each. Prints the bytes held when the kill was
sent. Exits 1 if PID ended first or TIMEOUT_S (default 300) passed.

Uses the botocore that Debian's awscli 2 carries (awscli.botocore), with
/usr/bin/python3: an independent client, no code shared with sesscp.
"""
import os
import signal
import sys
import time

import awscli.botocore.session


def held_bytes(client, bucket, key):
    ups = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    total = 0
    for up in ups:
        if up["Key"] != key:
            continue
        marker = 0
        while True:
            page = client.list_parts(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumberMarker=marker)
            total += sum(p["Size"] for p in page.get("Parts", []))
            if not page.get("IsTruncated"):
                break
            marker = page["NextPartNumberMarker"]
    return total


def main():
    bucket, key, size, fraction, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 300
    client = awscli.botocore.session.get_session().create_client(
        "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ.get("AWS_REGION", "us-east-1"))
    goal, end = fraction * size, time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit("s3_kill_at: process %d ended before the server held %.0f bytes" % (pid, goal))
        try:
            held = held_bytes(client, bucket, key)
        except Exception:  # the upload may not exist yet
            held = 0
        if held >= goal:
            os.kill(pid, signal.SIGKILL)
            print(held)
            return
        time.sleep(0.05)
    sys.exit("s3_kill_at: timed out after %.0f s" % timeout)


if __name__ == "__main__":
    main()
