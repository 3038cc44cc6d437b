#!/bin/sh
# Print a fresh .env for docker-compose.yml: the database password, the API token and Ray's token.
#   deploy/make-env.sh > .env && chmod 600 .env
set -eu
secret() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
echo "POSTGRES_PASSWORD=$(secret)"
echo "RNNHPO_API_TOKEN=$(secret)"
echo "RAY_AUTH_TOKEN=$(secret)"
echo "# RNNHPO_PUBLISH_HOST=0.0.0.0          # publish the API and the dashboard beyond this host"
echo "# RNNHPO_RAY_DASHBOARD_URL=https://ray.example.org   # public dashboard URL for job links"
echo "# RNNHPO_DB_HOST=pgbouncer             # with: docker compose --profile pgbouncer up -d"
