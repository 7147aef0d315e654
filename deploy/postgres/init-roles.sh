#!/bin/sh
# Runs once, when the Postgres volume is first initialised: a role per service, and one for the web app (its
# accounts), that owns only its own database (no superuser, no CREATEDB), each database closed to every other
# role. Passwords come from the environment.
set -eu
for service in reconciliation review referral notify program web; do
    upper=$(echo "$service" | tr '[:lower:]' '[:upper:]')
    password=$(printenv "MTM_POSTGRES_PASSWORD_${upper}")
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v role="mtm_${service}" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE CONNECT, TEMPORARY ON DATABASE :"role" FROM PUBLIC;
SQL
done
