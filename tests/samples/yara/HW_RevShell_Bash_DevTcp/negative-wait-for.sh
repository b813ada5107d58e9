#!/bin/bash
# wait until the database port answers (like wait-for-it)
for i in $(seq 30); do
    if (exec 3<>/dev/tcp/"$DB_HOST"/"$DB_PORT") 2>/dev/null; then exit 0; fi
    sleep 1
done
echo "timeout" >&2; exit 1
