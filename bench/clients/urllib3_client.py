"""bench client: urllib3 (the transport of the official ThousandEyes Python
SDK) with one PoolManager, json to decode.  Usage: python3 urllib3_client.py URL N [CA_FILE]"""
import json
import sys
import time

import urllib3

url, n = sys.argv[1], int(sys.argv[2])
ca = sys.argv[3] if len(sys.argv) > 3 else None
pool = urllib3.PoolManager(ca_certs=ca) if ca else urllib3.PoolManager()
form = "grant_type=client_credentials&client_id=bench-id&client_secret=bench-secret"
headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
started = time.perf_counter()
for _ in range(n):
    response = pool.request("POST", url, body=form, headers=headers)
    assert response.status == 200
    assert json.loads(response.data)["access_token"]
print("%.6f %d" % (time.perf_counter() - started, n))
