#!/usr/bin/env bash
# A PostgreSQL server on loopback for run tracking and its tests: installs Debian's
# postgresql if missing, starts its cluster, and makes the role `forgec` (password `forgec`)
# and the database `forgec_test`. Prints the URL the tests use by default
# (FORGEC_TEST_POSTGRES overrides it). Safe to run again.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "forgec postgres: installing postgresql" >&2
  $SUDO apt-get update -q >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main"' | grep -q .; then
  $SUDO pg_createcluster "$ver" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  # Containers have no init system: pg_ctlcluster starts the server itself.
  $SUDO pg_ctlcluster "$ver" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" { print $3 }')
for _ in $(seq 1 30); do
  as_postgres pg_isready -q -p "$port" && break
  sleep 1
done
as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'forgec') THEN
    CREATE ROLE forgec LOGIN PASSWORD 'forgec';
  END IF;
END \$\$;
SQL
if ! as_postgres psql -p "$port" -tAc "SELECT 1 FROM pg_database WHERE datname = 'forgec_test'" | grep -q 1; then
  as_postgres createdb -p "$port" -O forgec forgec_test >&2
fi
echo "postgres://forgec:forgec@127.0.0.1:$port/forgec_test"
