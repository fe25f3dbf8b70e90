#!/bin/sh
# bench client: the curl command line, one process (and connection) per request.
# Usage: sh curl_cli.sh URL N [CA_FILE]
url=$1; n=$2; ca=${3:-}
form="grant_type=client_credentials&client_id=bench-id&client_secret=bench-secret"
started=$(date +%s.%N)
i=0
while [ "$i" -lt "$n" ]; do
    if [ -n "$ca" ]; then
        curl -sf --cacert "$ca" -o /dev/null -H 'Accept: application/json' -d "$form" "$url" || exit 1
    else
        curl -sf -o /dev/null -H 'Accept: application/json' -d "$form" "$url" || exit 1
    fi
    i=$((i + 1))
done
finished=$(date +%s.%N)
echo "$started $finished $n" | awk '{ printf "%.6f %d\n", $2 - $1, $3 }'
